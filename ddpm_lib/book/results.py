"""The book's measured results: the seed statistics of the sampler comparisons (chapters 5, 6 and 8,
appendix A1), the calibration rows of the model cards, and the formatters the chapters share.

The numbers themselves are files under :data:`ddpm_lib.book.ASSETS` (``sampler_quality.json``,
``ode_quality.json``, the cards), written by ``scripts/sampler_quality.py`` and
``scripts/evaluate_checkpoint.py``; the metrics that score images are :mod:`ddpm_lib.metrics`'s.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from . import ASSETS

SAMPLER_QUALITY = ASSETS / "sampler_quality.json"
ODE_QUALITY = ASSETS / "ode_quality.json"            # heun and dpm++ (chapter 8), same format
# the class-conditional model, every sampler at 5-50 calls (chapter 8); rows add the two keys below
CONDITIONAL_SAMPLER_QUALITY = ASSETS / "conditional_sampler_quality.json"
QUALITY_KEYS = ("confident", "class_entropy", "frechet", "wall_s")
CONDITIONAL_KEYS = ("accuracy", "spread")


def sampler_quality_summary(path: str | Path = SAMPLER_QUALITY) -> list[dict]:
    """Mean and spread over seeds of the runs of scripts/sampler_quality.py, per (sampler, steps).

    Reads the JSON file it writes (by default the shipped ``book/assets/sampler_quality.json``: the shipped
    model, 256 images per run). Returns one dict per (sampler, steps), samplers in the file's order,
    steps ascending, with ``seeds`` (list) and, for each of ``confident``, ``class_entropy``,
    ``frechet`` and ``wall_s``: the mean, ``_min``, ``_max`` and ``_sd`` (sample standard deviation
    over seeds; 0 for one seed). Rows of the conditional model (``CONDITIONAL_SAMPLER_QUALITY``) add
    the same for ``accuracy`` and ``spread``, where every run of the group has them.
    """
    rows = json.loads(Path(path).read_text())["rows"]
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["sampler"], int(r["steps"])), []).append(r)
    order = list(dict.fromkeys(r["sampler"] for r in rows))
    out = []
    for (sampler, steps), runs in sorted(groups.items(), key=lambda kv: (order.index(kv[0][0]), kv[0][1])):
        entry = {"sampler": sampler, "steps": steps, "seeds": [r["seed"] for r in runs]}
        extra = tuple(k for k in CONDITIONAL_KEYS if all(k in r for r in runs))
        for key in QUALITY_KEYS + extra:
            values = [float(r[key]) for r in runs]
            entry[key] = statistics.fmean(values)
            entry[key + "_min"], entry[key + "_max"] = min(values), max(values)
            entry[key + "_sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
        out.append(entry)
    return out


def seed_difference(a: dict, b: dict, key: str) -> tuple[float, float]:
    """Mean of ``a`` minus mean of ``b`` for ``key``, and the standard error of that difference.

    ``a`` and ``b`` are entries of :func:`sampler_quality_summary`; each mean is over its seeds, so
    the standard error is ``sqrt(sd_a^2 / n_a + sd_b^2 / n_b)`` with the sample standard deviations
    over seeds. A difference within about two standard errors is a tie on these seeds.
    """
    if len(a["seeds"]) < 2 or len(b["seeds"]) < 2:
        raise ValueError(f"a standard error needs two or more seeds per row, got {len(a['seeds'])} "
                         f"and {len(b['seeds'])}")
    se = math.sqrt(a[key + "_sd"] ** 2 / len(a["seeds"]) + b[key + "_sd"] ** 2 / len(b["seeds"]))
    return a[key] - b[key], se


# ---------------------------------------------------------------------------- formatters the chapters share
#: How the chapters' tables and legends name each sampler of sampler_quality.json and ode_quality.json, in
#: the order they are drawn.
SAMPLER_NAMES = {"ddpm": "DDPM", "ddim-eta0": "DDIM, eta = 0", "ddim-eta1": "DDIM, eta = 1", "heun": "Heun",
                 "dpm++": "DPM-Solver++(2M)"}


def n_seeds(row: dict) -> int:
    """How many seeds a row is over: its ``seeds`` is their list (a summary row) or their number (a card's)."""
    seeds = row["seeds"]
    return len(seeds) if isinstance(seeds, (list, tuple)) else int(seeds)


def standard_error(row: dict, key: str) -> float:
    """The standard error of a row's mean of ``key`` over its seeds: the standard deviation / sqrt(seeds)."""
    return row[key + "_sd"] / math.sqrt(n_seeds(row))


def mean_sd(row: dict, key: str, scale: float = 1.0, digits: int = 1) -> str:
    """``"mean ± sd"`` of ``key`` over a row's seeds, both times ``scale`` (the mean alone for one seed)."""
    text = f"{scale * row[key]:.{digits}f}"
    return text + (f" ± {scale * row[key + '_sd']:.{digits}f}" if n_seeds(row) > 1 else "")


# ---------------------------------------------------------------------------- calibration rows
def blur(images: Tensor, sigma: float = 1.0) -> Tensor:
    """Gaussian blur (a calibration row: plausible digits, wrong texture)."""
    radius = max(1, int(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-x ** 2 / (2 * sigma ** 2))
    k = k / k.sum()
    c = images.shape[1]
    along_w, along_h = k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1)
    out = F.conv2d(F.pad(images, (radius, radius, 0, 0), mode="replicate"), along_w, groups=c)
    out = F.conv2d(F.pad(out, (0, 0, radius, radius), mode="replicate"), along_h, groups=c)
    return out


def add_noise(images: Tensor, std: float = 0.3, seed: int = 0) -> Tensor:
    """Gaussian pixel noise, clipped to [-1, 1] (a calibration row: right shapes, noisy pixels)."""
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))
    return (images + std * noise).clamp(-1, 1)
