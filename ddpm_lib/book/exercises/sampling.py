"""The keys of 5. sampling (chapter 5): each exercise's expected value, the variant functions that reproduce its
common mistakes, its trials; the prose (titles, the mistakes' messages, the questions) is in text/sampling.yaml.

Registered in :data:`.engine.EXERCISES` when one of its labels is first looked up."""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from .engine import register_chapter
from .inputs import _col, _images, _linear, _short_schedule, _steps


def _sigmas(*, idx: int = 9, order=("beta", "posterior"), root: bool = True):
    s = _linear()
    v = torch.stack([s.model_variance(k)[0][idx] for k in order])
    return v.sqrt() if root else v


def _x0hat(schedule, x_t, eps, *, idx=499, sqrt=True, sign=-1.0):
    abar = schedule.alphas_cumprod[idx].item()
    a, b = (math.sqrt(abar), math.sqrt(1 - abar)) if sqrt else (abar, 1 - abar)
    return (x_t + sign * b * eps) / a


def _x0hat_reference(schedule, x_t, eps):
    return schedule.predict_x0_from_eps(x_t, torch.full((x_t.shape[0],), 499, device=x_t.device), eps)


def _count_calls(N: int, K: int, C: int) -> tuple[int, int]:
    from ...sampling import ddpm_sample
    seen = []

    def counting(x, t):
        seen.append(x.shape[0])
        return torch.zeros_like(x)

    ddpm_sample(counting, _linear(), (N, 1, 2, 2), seed=0, steps=K, chunk_size=C)
    return len(seen), sum(seen)


@lru_cache(maxsize=None)
def _calls_100_250_64() -> tuple[int, int]:
    return _count_calls(100, 250, 64)


def _step_trials(generator):
    out = []
    for _ in range(3):
        s = _short_schedule(generator)
        out.append((s, _images(generator), _steps(s, generator), _images(generator),
                    _images(generator)))
    return out


def _reverse_reference(s, x_t, t, eps, z):
    out = s.p_mean_variance(lambda x, tt: eps, x_t, t, variance="beta", clip_denoised=False)
    return out["mean"] + out["variance"].sqrt() * z


def _reverse_variant(s, x_t, t, eps, z, *, at=0, alpha_root=True, abar_root=True, noise="sqrt",
                     prefactor="alpha"):
    b, ab = _col(s.betas[t + at]), _col(s.alphas_cumprod[t + at])
    alpha = 1 - b
    pre = ab if prefactor == "abar" else alpha
    pre = pre.sqrt() if alpha_root else pre
    denom = (1 - ab).sqrt() if abar_root else 1 - ab
    mean = (x_t - b / denom * eps) / pre
    sigma = {"sqrt": b.sqrt(), "none": 0 * b, "beta": b, "minus": -b.sqrt(),
             "posterior": _col(s.posterior_variance[t]).sqrt()}[noise]
    return mean + sigma * z


register_chapter("sampling", {
    "ex-sampling-sigma": {"expected": _sigmas, "variant": _sigmas},
    "ex-sampling-x0hat": {"expected": _x0hat_reference, "variant": _x0hat, "inputs": ("schedule", "x_t", "eps")},
    "ex-sampling-calls": {"expected": _calls_100_250_64},
    "ex-sampling-step": {"trials": _step_trials, "reference": _reverse_reference, "variant": _reverse_variant},
})
