"""The keys of 1. the forward process (chapter 1): each exercise's expected value, its common mistakes, its trials.

Registered in :data:`.engine.EXERCISES` when one of its labels is first looked up."""

from __future__ import annotations


import torch

from .engine import ChoiceExercise, FunctionExercise, ValueExercise, _register
from .inputs import _cosine, _images, _linear, _q, _short_schedule, _steps


def _abar_mistakes():
    abar = _linear().alphas_cumprod
    return [("that is abar at the paper's t = 501: the paper's t = 500 is code index 499",
             abar[500]),
            ("that is abar at the paper's t = 499: multiply the first 500 factors", abar[498]),
            ("that is sqrt(abar_500), the coefficient of x_0: abar itself has no sqrt",
             abar[499].sqrt()),
            ("that is 1 - abar_500, the variance of the noise", 1 - abar[499]),
            ("that is the product of the betas: abar multiplies 1 - beta",
             torch.prod(_linear().betas[:500]))]


_register("ex-forward-abar", ValueExercise(
    "abar_500 of the linear schedule",
    expected=lambda: _linear().alphas_cumprod[499],
    mistakes=lambda: _abar_mistakes(), rtol=1e-4, atol=1e-9))


def _variance_mistakes():
    a, lin = _cosine().alphas_cumprod, _linear().alphas_cumprod
    return [("used sigma = 0.5 where the variance needs sigma^2 = 0.25", a[299] * 0.5 + 1 - a[299]),
            ("the noise term adds its variance 1 - abar, not its standard deviation",
             a[299] * 0.25 + (1 - a[299]).sqrt()),
            ("x_0 is scaled by sqrt(abar): its variance is multiplied by abar, not sqrt(abar)",
             a[299].sqrt() * 0.25 + 1 - a[299]),
            ("that is the paper's t = 301: t = 300 is code index 299", a[300] * 0.25 + 1 - a[300]),
            ("that is the linear schedule's variance: the exercise asks for the cosine one",
             lin[299] * 0.25 + 1 - lin[299]),
            ("that is the variance for sigma = 1: x_0's variance here is 0.25", torch.tensor(1.0))]


_register("ex-forward-variance", ValueExercise(
    "Var[x_300] under the cosine schedule",
    expected=lambda: _cosine().alphas_cumprod[299] * 0.5 ** 2 + (1 - _cosine().alphas_cumprod[299]),
    mistakes=lambda: _variance_mistakes()))


def _first_snr_below_one() -> int:
    s = _linear()
    return int((s.snr(torch.arange(s.T)) < 1).nonzero()[0]) + 1


_register("ex-forward-snr", ValueExercise(
    "first t with SNR < 1 (linear)",
    expected=lambda: _first_snr_below_one(),
    mistakes=lambda: [("that is the code index (or the last step with SNR >= 1): the paper's "
                       "step is one more", _first_snr_below_one() - 1)],
    rtol=0, atol=0))


def _qsample_trials(generator):
    out = []
    for _ in range(3):
        s = _short_schedule(generator)
        x0 = _images(generator)
        out.append((s, x0, _steps(s, generator), _images(generator)))
    return out


_register("ex-forward-qsample", FunctionExercise(
    "q_sample by hand", "my_q_sample(schedule, x0, t, eps) -> x_t shaped like x0",
    trials=_qsample_trials,
    reference=lambda s, x0, t, eps: s.q_sample(x0, t, eps),
    mistakes=(
        ("looks like a missing sqrt: abar x0 + (1 - abar) eps; the coefficients are the square "
         "roots", lambda s, x0, t, eps: _q(s, x0, t, eps, sqrt=False)),
        ("the sign of the noise term is flipped", lambda s, x0, t, eps: _q(s, x0, t, eps, sign=-1)),
        ("wrong index: that uses abar at t - 1; code index t is abar[t]",
         lambda s, x0, t, eps: _q(s, x0, t, eps, at=-1)),
        ("wrong index: that uses abar at t + 1; code index t is abar[t]",
         lambda s, x0, t, eps: _q(s, x0, t, eps, at=1)),
        ("the two coefficients are swapped: x_0 gets sqrt(abar), the noise sqrt(1 - abar)",
         lambda s, x0, t, eps: _q(s, x0, t, eps, swap=True)),
        ("that is one step of the chain (beta_t, q_step), not the jump from x_0 (abar_t)",
         lambda s, x0, t, eps: s.q_step(x0, t, eps)),
    )))

_register("ex-forward-why-cosine", ChoiceExercise(
    "what the cosine schedule wins back",
    right=r"the late steps, which the linear schedule spends with $x_t$ already pure noise, so that they "
          r"teach the network little",
    why="The linear schedule spends its last ~175 steps at abar < 1e-3, where x_t is noise for "
        "every digit; the cosine schedule reaches that point only near t = T.",
    wrong=((r"the early steps, which the linear schedule spends with $x_t$ almost equal to $x_0$, so that "
            r"they teach the network little",
            "both schedules start with x_t close to x_0 (beta_1 is tiny in each); the waste is at the end, "
            "where abar < 1e-3"),
           (r"the end point: the linear schedule's $\bar\alpha_T$ stays well above 0, so its $x_T$ still "
            r"holds a trace of the digit",
            "abar_T is about 4e-5 for the linear schedule: x_T is pure noise under both"),
           (r"a cheaper forward process: its $\bar\alpha_t$ has a closed form, so `q_sample` needs no "
            r"cumulative product",
            "q_sample reads abar_t from a table computed once, under either schedule: the cost is the same"))))
