"""The keys of 8. ODE samplers (chapter 8): each exercise's expected value, the variant functions that reproduce its
common mistakes, its trials; the prose (titles, the mistakes' messages, the questions) is in text/ode.yaml.

Registered in :data:`.engine.EXERCISES` when one of its labels is first looked up."""

from __future__ import annotations

import torch

from .engine import register_chapter
from .inputs import _images


def _toy_denoiser(x, sigma):
    """A fixed x_0 prediction D(x~; sigma) for the checks: no weights, nonlinear in x and in sigma."""
    return torch.tanh(x) / (1 + 0.3 * sigma ** 2) + 0.05 * sigma


def _heun_trials(generator):
    out = []
    for last in (False, False, False, True):                     # the last trial steps to sigma = 0
        sigma = float(0.5 + 4.5 * torch.rand((), generator=generator, dtype=torch.float64))
        ratio = float(0.3 + 0.6 * torch.rand((), generator=generator, dtype=torch.float64))
        out.append((_toy_denoiser, _images(generator), sigma, 0.0 if last else sigma * ratio))
    return out


def _heun_reference(denoise, x, sigma, sigma_next):
    from ...ode import heun_step
    return heun_step(denoise, x, sigma, sigma_next)


def _heun_variant(denoise, x, sigma, sigma_next, *, end_at="euler", combine="average"):
    h = sigma_next - sigma
    d = (x - denoise(x, sigma)) / sigma
    x_e = x + h * d
    if sigma_next == 0:
        return x_e
    if combine == "euler":                           # no corrector: Euler's step (DDIM) alone
        return x + h * (x - denoise(x, sigma)) / sigma
    at = x_e if end_at == "euler" else x
    d_next = (at - denoise(at, sigma_next)) / sigma_next
    slope = {"average": 0.5 * (d + d_next), "sum": d + d_next, "end": d_next}[combine]
    return x + h * slope


register_chapter("ode", {
    "ex-ode-heun-step": {"trials": _heun_trials, "reference": _heun_reference, "variant": _heun_variant},
})
