"""The keys of 5. sampling (chapter 5): each exercise's expected value, its common mistakes, its trials.

Registered in :data:`.engine.EXERCISES` when one of its labels is first looked up."""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from .engine import ChoiceExercise, FunctionExercise, ValueExercise, _register
from .inputs import _col, _images, _linear, _short_schedule, _steps


def _sigmas(idx: int = 9, order=("beta", "posterior"), root: bool = True):
    s = _linear()
    v = torch.stack([s.model_variance(k)[0][idx] for k in order])
    return v.sqrt() if root else v


_register("ex-sampling-sigma", ValueExercise(
    "sigma_10 for beta and posterior", expected=lambda: _sigmas(),
    mistakes=lambda: [
        ("those are the variances sigma^2: take their square roots", _sigmas(root=False)),
        ("the order: [sigma for beta, sigma for beta-tilde]", _sigmas(order=("posterior", "beta"))),
        ("that is the paper's t = 11: t = 10 is code index 9", _sigmas(idx=10)),
        ("that is the paper's t = 9: t = 10 is code index 9", _sigmas(idx=8))]))


def _x0hat(schedule, x_t, eps, *, idx=499, sqrt=True, sign=-1.0):
    abar = schedule.alphas_cumprod[idx].item()
    a, b = (math.sqrt(abar), math.sqrt(1 - abar)) if sqrt else (abar, 1 - abar)
    return (x_t + sign * b * eps) / a


_register("ex-sampling-x0hat", ValueExercise(
    "x0_hat at t = 500",
    expected=lambda schedule, x_t, eps: schedule.predict_x0_from_eps(
        x_t, torch.full((x_t.shape[0],), 499, device=x_t.device), eps),
    mistakes=lambda schedule, x_t, eps: [
        ("looks like a missing sqrt: x0_hat = (x_t - sqrt(1 - abar) eps) / sqrt(abar)",
         _x0hat(schedule, x_t, eps, sqrt=False)),
        ("the sign: subtract the noise, x_t - sqrt(1 - abar) eps", _x0hat(schedule, x_t, eps, sign=1)),
        ("that is the paper's t = 501: t = 500 is code index 499", _x0hat(schedule, x_t, eps, idx=500))],
    atol=1e-5, inputs=("schedule", "x_t", "eps")))


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


_register("ex-sampling-calls", ValueExercise(
    "network calls and images for N=100, K=250, C=64",
    expected=lambda: _calls_100_250_64(),
    mistakes=lambda: [
        ("one call per step is too few: a step runs the images in chunks of 64", (250, 25_000)),
        ("chunks are whole calls: 100 images need ceil(100 / 64) = 2 of them", (390, 25_000)),
        ("the last chunk holds only the 36 images left, not 64", (500, 32_000))],
    rtol=0, atol=0))


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


_register("ex-sampling-step", FunctionExercise(
    "one ancestral step", "my_reverse_step(schedule, x_t, t, eps, z) -> x_{t-1}",
    trials=_step_trials, reference=_reverse_reference,
    mistakes=(
        ("looks like a missing sqrt: divide by sqrt(alpha_t), not alpha_t",
         lambda *a: _reverse_variant(*a, alpha_root=False)),
        ("looks like a missing sqrt: eps is scaled by beta_t / sqrt(1 - abar_t)",
         lambda *a: _reverse_variant(*a, abar_root=False)),
        ("the prefactor is 1 / sqrt(alpha_t), one step's alpha, not 1 / sqrt(abar_t)",
         lambda *a: _reverse_variant(*a, prefactor="abar")),
        ("forgot the noise: add sigma_t z", lambda *a: _reverse_variant(*a, noise="none")),
        ("the noise is scaled by beta_t: sigma_t is its square root",
         lambda *a: _reverse_variant(*a, noise="beta")),
        ("the sign of sigma_t z is flipped", lambda *a: _reverse_variant(*a, noise="minus")),
        ("that uses sigma^2 = beta-tilde: the exercise asks for sigma^2 = beta_t",
         lambda *a: _reverse_variant(*a, noise="posterior")),
        ("wrong index: that uses beta and abar at t - 1; code index t is betas[t]",
         lambda *a: _reverse_variant(*a, at=-1)),
    )))

_register("ex-sampling-why-noise", ChoiceExercise(
    "why each step adds fresh noise",
    right=r"$p_\theta(x_{t-1} \mid x_t)$ is a Gaussian, not a point: its mean averages many digits, and a "
          r"chain of means is blurry",
    why="p(x_{t-1} | x_t) is a Gaussian with variance sigma_t^2: its mean alone is an average of "
        "many digits, and a chain of means drifts to blurry, too-smooth images.",
    wrong=((r"the noise makes the samples depend on the seed, so that one model and one seed always give "
            r"the same set of images",
            "without the noise the step is deterministic, reproducible with no seed at all"),
           (r"the noise dithers the pixel values, which hides the 8-bit rounding of the digits the network "
            r"was trained on",
            "the noise is there in every step, not only the last one (which adds none): it is not dither"),
           (r"the noise cancels the error of the network's $\epsilon$ prediction, which would otherwise "
            r"build up over the steps",
            "sigma_t z does not cancel the network's error; it samples the step's spread"))))
