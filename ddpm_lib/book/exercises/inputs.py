"""Inputs the exercises of several chapters share: the two schedules, a short random schedule, random
images and timesteps, and a column view."""

from __future__ import annotations

from functools import lru_cache

import torch


@lru_cache(maxsize=None)
def _linear():
    from ...schedule import NoiseSchedule
    return NoiseSchedule.linear()


@lru_cache(maxsize=None)
def _cosine():
    from ...schedule import NoiseSchedule
    return NoiseSchedule.cosine()


def _col(v: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, 1, 1, 1)


def _short_schedule(generator: torch.Generator):
    """A random-length linear schedule: short, so that t and t - 1 give clearly different numbers."""
    from ...schedule import NoiseSchedule
    T = int(torch.randint(20, 40, (), generator=generator))
    return NoiseSchedule.linear(T=T, beta_start=1e-3, beta_end=0.2)


def _images(generator: torch.Generator, shape=(6, 1, 4, 4)) -> torch.Tensor:
    return torch.randn(shape, generator=generator, dtype=torch.float64)


def _steps(schedule, generator: torch.Generator, batch: int = 6) -> torch.Tensor:
    """Code indices 1 .. T-2, so that t - 1 and t + 1 are valid indices too."""
    return torch.randint(1, schedule.T - 1, (batch,), generator=generator)


def _q(s, x0, t, eps, *, at=0, sqrt=True, sign=1.0, swap=False):
    """q_sample's sqrt(abar) x0 + sqrt(1 - abar) eps, and the slips of it the exercises diagnose."""
    abar = _col(s.alphas_cumprod[t + at])
    a, b = (abar.sqrt(), (1 - abar).sqrt()) if sqrt else (abar, 1 - abar)
    if swap:
        a, b = b, a
    return a * x0 + sign * b * eps
