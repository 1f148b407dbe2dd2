"""The keys of 8. ODE samplers (chapter 8): each exercise's expected value, its common mistakes, its trials.

Registered in :data:`.engine.EXERCISES` when one of its labels is first looked up."""

from __future__ import annotations


import torch

from .engine import ChoiceExercise, FunctionExercise, _register
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
    at = x_e if end_at == "euler" else x
    d_next = (at - denoise(at, sigma_next)) / sigma_next
    slope = {"average": 0.5 * (d + d_next), "sum": d + d_next, "end": d_next}[combine]
    return x + h * slope


_register("ex-ode-heun-step", FunctionExercise(
    "one Heun step", "my_heun_step(denoise, x, sigma, sigma_next) -> x at sigma_next",
    trials=_heun_trials, reference=_heun_reference,
    mistakes=(
        ("that is Euler's step (DDIM) alone: add the corrector with the slope at the end",
         lambda den, x, s, sn: _heun_reference(den, x, s, sn) if sn == 0 else
         x + (sn - s) * (x - den(x, s)) / s),
        ("the slope at the end is taken at the Euler point x_e = x + h d, not at x",
         lambda *a: _heun_variant(*a, end_at="start")),
        ("the two slopes are averaged, (d + d') / 2, not added",
         lambda *a: _heun_variant(*a, combine="sum")),
        ("the step uses the average of the two slopes, not the slope at the end alone",
         lambda *a: _heun_variant(*a, combine="end")),
    )))

_register("ex-ode-why-2m", ChoiceExercise(
    "second order at one call a step",
    right=r"it keeps the previous step's $x_0$ prediction and extrapolates $D$ across the step from the "
          r"two of them",
    why="A multistep method: the previous step's x_0 prediction is free, and the line through it and "
        "the current one estimates how D changes over the step, which is what the second order needs.",
    wrong=((r"it calls the network twice per step, as Heun does, but at half the resolution, so that each "
            r"call costs half",
            "every call is the whole network on the whole image; the solver makes one call a step"),
           (r"its steps are uniform in log-SNR, and on that grid Euler's method is already accurate to "
            r"second order",
            "the spacing does not change the order: DDIM stays first order on any grid; the second order "
            "comes from the extrapolated x_0"),
           (r"it solves the linear part of the ODE exactly, and with that part gone the network's $x_0$ "
            r"term is constant",
            "the exact linear part is why its first-order version is DDIM; x_0 still changes along the "
            "path, and the 2M step models that change with the previous prediction"))))
