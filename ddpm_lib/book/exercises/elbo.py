"""The keys of 2. the bound (chapter 2): each exercise's expected value, its common mistakes, its trials.

Registered in :data:`.engine.EXERCISES` when one of its labels is first looked up."""

from __future__ import annotations

import math

import torch

from .engine import ChoiceExercise, FunctionExercise, ValueExercise, _register
from .inputs import _col, _images, _linear, _q, _short_schedule, _steps


def _posterior_variance_mistakes():
    s = _linear()
    b, ab = s.betas, s.alphas_cumprod
    return [("that is the paper's t = 9: t = 10 is code index 9", s.posterior_variance[8]),
            ("that is the paper's t = 11: t = 10 is code index 9", s.posterior_variance[10]),
            ("that is beta_10: beta-tilde multiplies it by (1 - abar_9) / (1 - abar_10)", b[9]),
            ("the ratio is upside down: (1 - abar_{t-1}) / (1 - abar_t), abar_{t-1} on top",
             (1 - ab[9]) / (1 - ab[8]) * b[9]),
            ("that is the posterior's standard deviation: beta-tilde is the variance",
             s.posterior_variance[9].sqrt())]


_register("ex-elbo-posterior-variance", ValueExercise(
    "beta-tilde at t = 10", expected=lambda: _linear().posterior_variance[9],
    mistakes=lambda: _posterior_variance_mistakes(), atol=1e-12))


def _lambda(idx, var: str = "posterior"):
    s = _linear()
    b, ab = s.betas[idx], s.alphas_cumprod[idx]
    sigma2 = s.posterior_variance[idx] if var == "posterior" else b
    return b ** 2 / (2 * sigma2 * (1 - b) * (1 - ab))


_register("ex-elbo-lambda", ValueExercise(
    "lambda_t at t = 2 and t = T (sigma^2 = beta-tilde)",
    expected=lambda: _lambda(torch.tensor([1, 999])),
    mistakes=lambda: [
        ("that is lambda_t for sigma^2 = beta_t: the exercise sets sigma^2 = beta-tilde",
         _lambda(torch.tensor([1, 999]), "beta")),
        ("wrong indices: the paper's t = 2 and t = T are code indices 1 and 999",
         _lambda(torch.tensor([2, 999]))),
        ("wrong index: the paper's t = T is code index 999 (T - 1)",
         _lambda(torch.tensor([1, 998])))]))


def _kl(m1, v1, m2, v2):
    from ...losses import normal_kl
    f = lambda v: torch.tensor(float(v), dtype=torch.float64)           # noqa: E731
    return normal_kl(f(m1), f(math.log(v1)), f(m2), f(math.log(v2)))


_register("ex-elbo-kl", ValueExercise(
    "KL(N(1, 0.25) || N(0, 1))", expected=lambda: _kl(1.0, 0.25, 0.0, 1.0),
    mistakes=lambda: [
        ("that is KL(N(0, 1) || N(1, 0.25)): the KL is not symmetric", _kl(0.0, 1.0, 1.0, 0.25)),
        ("used 0.5 as the variance: 0.5 is the standard deviation, the variance is 0.25",
         _kl(1.0, 0.5, 0.0, 1.0)),
        ("that is in bits: the exercise asks for nats (do not divide by ln 2)",
         _kl(1.0, 0.25, 0.0, 1.0) / math.log(2))]))


def _posterior_trials(generator):
    out = []
    for _ in range(3):
        s = _short_schedule(generator)
        out.append((s, _images(generator), _images(generator), _steps(s, generator)))
    return out


def _post_mean(s, x0, xt, t, *, prev=-1, sqrt=True, swap=False):
    b = _col(s.betas[t])
    ab, ab_prev = _col(s.alphas_cumprod[t]), _col(s.alphas_cumprod[t + prev])
    root = torch.sqrt if sqrt else (lambda v: v)
    c1 = root(ab_prev) * b / (1 - ab)
    c2 = root(1 - b) * (1 - ab_prev) / (1 - ab)
    if swap:
        c1, c2 = c2, c1
    return c1 * x0 + c2 * xt


_register("ex-elbo-posterior-mean", FunctionExercise(
    "the posterior mean", "my_posterior_mean(schedule, x0, x_t, t) -> mean shaped like x0",
    trials=_posterior_trials,
    reference=lambda s, x0, xt, t: s.q_posterior(x0, xt, t)[0],
    mistakes=(
        ("looks like a missing sqrt: the coefficients have sqrt(abar_{t-1}) and sqrt(alpha_t)",
         lambda s, x0, xt, t: _post_mean(s, x0, xt, t, sqrt=False)),
        ("wrong index: abar_{t-1} is alphas_cumprod[t - 1], that used alphas_cumprod[t]",
         lambda s, x0, xt, t: _post_mean(s, x0, xt, t, prev=0)),
        ("the coefficients are swapped: x_0 gets sqrt(abar_{t-1}) beta_t / (1 - abar_t)",
         lambda s, x0, xt, t: _post_mean(s, x0, xt, t, swap=True)),
    )))

def _v_trials(generator):
    out = []
    for _ in range(3):
        s = _short_schedule(generator)
        out.append((s, _images(generator), _steps(s, generator), _images(generator)))
    return out


def _x0_from_v(s, x_t, t, v, *, sign=-1.0, **slip):
    """x_0 = sqrt(abar) x_t - sqrt(1 - abar) v: q_sample's combination with the sign flipped (see _q)."""
    return _q(s, x_t, t, v, sign=sign, **slip)


_register("ex-elbo-x0-from-v", FunctionExercise(
    "x_0 from a v-prediction", "my_x0_from_v(schedule, x_t, t, v) -> x0 shaped like x_t",
    trials=_v_trials, reference=lambda s, x_t, t, v: s.predict_x0_from_v(x_t, t, v),
    mistakes=(
        ("the sign: the eps terms cancel in sqrt(abar) x_t - sqrt(1 - abar) v",
         lambda *a: _x0_from_v(*a, sign=1.0)),
        ("the coefficients are swapped: x_t gets sqrt(abar), v gets sqrt(1 - abar)",
         lambda *a: _x0_from_v(*a, swap=True)),
        ("looks like a missing sqrt: the coefficients are sqrt(abar) and sqrt(1 - abar)",
         lambda *a: _x0_from_v(*a, sqrt=False)),
        ("that is eps from v, sqrt(1 - abar) x_t + sqrt(abar) v: the exercise asks for x_0",
         lambda s, x_t, t, v: s.predict_eps_from_v(x_t, t, v)),
        ("wrong index: that uses abar at t - 1; code index t is abar[t]",
         lambda *a: _x0_from_v(*a, at=-1)),
    )))

def _tweedie(s, x_t, t, score, *, var_root=False, sign=1.0, divide=True, at=0):
    abar = _col(s.alphas_cumprod[t + at])
    var = (1 - abar).sqrt() if var_root else 1 - abar
    x0 = x_t + sign * var * score
    return x0 / abar.sqrt() if divide else x0


def _tweedie_reference(s, x_t, t, score):
    eps = -(1 - _col(s.alphas_cumprod[t])).sqrt() * score      # the score view: eps = -sqrt(1 - abar) score
    return s.predict_x0_from_eps(x_t, t, eps)


_register("ex-elbo-tweedie", FunctionExercise(
    "Tweedie's formula: x_0 from the score", "my_tweedie_x0(schedule, x_t, t, score) -> x0 shaped like x_t",
    trials=_v_trials, reference=_tweedie_reference,
    mistakes=(
        ("the score is scaled by the noise's variance 1 - abar, not by its standard deviation",
         lambda *a: _tweedie(*a, var_root=True)),
        ("the sign: the score points towards the data, so x_t + (1 - abar) score",
         lambda *a: _tweedie(*a, sign=-1.0)),
        ("that is sqrt(abar) x_0, the mean of x_t given x_0: divide by sqrt(abar)",
         lambda *a: _tweedie(*a, divide=False)),
        ("wrong index: that uses abar at t - 1; code index t is abar[t]",
         lambda *a: _tweedie(*a, at=-1)),
    )))

_register("ex-elbo-why-eps", ChoiceExercise(
    "why L_simple drops lambda_t",
    right=r"$\lambda_t$ is largest at small $t$; setting it to 1 moves the effort to larger $t$, where the "
          r"digit must be guessed",
    why="lambda_t is tens of times larger at small t; without it the loss spends its effort where "
        "the digit itself must be guessed, and Ho et al. found the samples better.",
    wrong=((r"$\lambda_t$ depends on the reverse variance $\sigma_t^2$, which is learned, so it is not known "
            r"until training ends",
            "with sigma_t^2 fixed to beta_t or beta-tilde, lambda_t has a closed form in the schedule: this "
            "chapter computes it in a line"),
           (r"with every $\lambda_t = 1$ the sum is the exact negative log-likelihood, which is tighter than "
            r"the weighted bound",
            "the weighted sum is the bound; dropping the weights makes it no longer a bound on the "
            "likelihood"),
           (r"with $\sigma_t^2 = \tilde\beta_t$ the $\lambda_t$ are nearly equal over $t$, so setting them "
            r"to 1 changes little",
            "lambda_t varies by orders of magnitude over t (the figure of the weights)"))))
