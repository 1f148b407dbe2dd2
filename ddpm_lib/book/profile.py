"""One switch for the book: a fast profile for laptop CPUs, a larger one for CUDA GPUs.

Set ``DDPM_PROFILE`` to ``cpu`` or ``cuda`` (default ``auto``: cuda when a GPU is visible). Chapters
read every size that costs time (training steps, number of samples, sampling steps) from
:func:`book_profile`, so the same notebook finishes in about two minutes on a 2-core CPU, and within
about three minutes on a T4-class GPU (about one on an H100) with the larger sizes. Runs longer than
that (the full-size model of chapter 4) are command-line runs, not notebook cells.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch

from ..device import cuda_failure


@dataclass(frozen=True)
class BookProfile:
    name: str                   # "cpu" or "cuda"
    device: torch.device
    preset: str                 # UNet preset the training chapter trains
    train_steps: int            # optimizer steps in the training chapter
    train_batch: int            # batch size in the training chapter
    n_samples: int              # images the sampling chapter draws
    sample_steps: int           # reverse steps for those samples (T = 1000; fewer respaces the schedule)
    bpd_images: int             # held-out digits for bits/dim in the ELBO chapter
    bpd_timesteps: int          # strata of the bits/dim estimate (>= T: the exact sum)
    chunk_size: int             # images per model call when sampling
    ddim_steps: tuple           # numbers of steps the DDIM chapter's slider shows (it samples each)
    invert_steps: tuple         # numbers of steps of the DDIM chapter's inversion round trips
    cond_per_label: int         # images per label in the conditional chapter's grid
    cond_slider_per_label: int  # images per label in each frame of its guidance slider
    cond_steps: int             # DDIM steps of its samples


PROFILES = {
    "cpu": dict(preset="tiny", train_steps=100, train_batch=64, n_samples=36, sample_steps=250,
                bpd_images=32, bpd_timesteps=50, chunk_size=64, ddim_steps=(5, 10, 20, 50),
                invert_steps=(10, 20, 50), cond_per_label=6, cond_slider_per_label=3, cond_steps=20),
    # A chapter within ~3 minutes on a T4 (~8 TFLOP/s in float32, no bf16), ~1 minute on an H100:
    # chapter 4 trains the 'small' preset (0.45 GFLOP per image forward) for 1,000 steps of 256
    # images, about 0.35 PFLOP; the full-size 'tutorial' run is a CLI command in the text.
    # Chapter 2's bits/dim sums all 1,000 terms (exact) for 256 held-out digits.
    "cuda": dict(preset="small", train_steps=1_000, train_batch=256, n_samples=256, sample_steps=1000,
                 bpd_images=256, bpd_timesteps=1000, chunk_size=1024,
                 ddim_steps=(5, 10, 20, 50, 100, 250, 1000), invert_steps=(10, 20, 50, 100, 250, 1000),
                 cond_per_label=10, cond_slider_per_label=8, cond_steps=50),
}


def book_profile(name: str | None = None) -> BookProfile:
    """The profile named by ``name`` or $DDPM_PROFILE (``auto``, ``cpu`` or ``cuda``)."""
    name = (name or os.environ.get("DDPM_PROFILE", "").strip() or "auto").lower()      # set but empty: auto
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
        failure = cuda_failure() if name == "cpu" else None
        if failure:                                        # a GPU seems to be here: say why it is not used
            print(f"DDPM_PROFILE=auto chose the CPU profile: {failure}", file=sys.stderr)
    if name not in PROFILES:
        raise ValueError(f"DDPM_PROFILE must be auto, cpu or cuda, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("DDPM_PROFILE=cuda but no CUDA GPU is visible; use DDPM_PROFILE=cpu")
    device = torch.device("cuda" if name == "cuda" else "cpu")
    return BookProfile(name=name, device=device, **PROFILES[name])
