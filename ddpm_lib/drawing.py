"""Drawing images with a sampler chosen by name, and saving them as a samples file with its grid.

``python -m ddpm_lib sample`` is these two calls once its flags are checked::

    images = draw(model, schedule, (64, 1, 32, 32), "ddim", eta=1.0, steps=50, seed=0)    # (64, 1, 32, 32)
    save_samples(out, images, source="mnist", sampler="ddim", eta=1.0, steps=50, seed=0)

The samplers themselves are :mod:`ddpm_lib.sampling`'s (DDPM's ancestral sampler, DDIM) and
:mod:`ddpm_lib.ode`'s (Heun, DPM-Solver++ on the probability-flow ODE).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from .data import to_uint8
from .files import write_together
from .images import png_bytes
from .ode import dpm_solver_sample, heun_sample
from .sampling import ddim_sample, ddpm_sample

SAMPLERS = ("ddpm", "ddim", "heun", "dpm++")
SAMPLE_FILES = ("samples.npz", "samples.png")


def draw(model, schedule, shape: Sequence[int], sampler: str = "ddpm", **settings) -> Tensor:
    """Images (N, C, H, W) in [-1, 1] drawn by ``sampler``, one of :data:`SAMPLERS`.

    ``settings`` go to the sampler: ``variance`` for ddpm, ``eta`` for ddim, and for all of them ``steps``,
    ``seed``, ``device``, ``chunk_size``, ``progress``, ``labels`` and ``guidance``.
    """
    samplers = {"ddpm": ddpm_sample, "ddim": ddim_sample, "heun": heun_sample, "dpm++": dpm_solver_sample}
    if sampler not in samplers:
        raise ValueError(f"unknown sampler {sampler!r}; the samplers are {', '.join(SAMPLERS)}")
    return samplers[sampler](model, schedule, shape, **settings)


def save_samples(out: str | Path, images: Tensor, source: str | Path, **record) -> tuple[Path, Path]:
    """Write OUT/samples.npz and its grid OUT/samples.png together (or neither); returns their paths.

    The npz holds ``images``, uint8 (N, H, W) for one channel, else (N, C, H, W), and ``record`` (the
    sampler's settings, labels, ...). Images that hold a NaN or an infinity are refused before anything is
    written, naming ``source``, the checkpoint they came from.
    """
    bad = int((~torch.isfinite(images)).sum())
    if bad:
        raise ValueError(f"{bad:,} of {images.numel():,} sampled values are NaN or infinite, so the images would be "
                         f"wrong; nothing was written; check the weights of {source}")
    pixels = to_uint8(images).numpy()                                       # (N, C, H, W)
    if pixels.shape[1] == 1:
        pixels = pixels[:, 0]                                              # (N, H, W)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    npz, png = (out / name for name in SAMPLE_FILES)
    write_together({npz: lambda f: np.savez_compressed(f, images=pixels, **record),
                    png: lambda f: f.write(png_bytes(images))})
    return npz, png
