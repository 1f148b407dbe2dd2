"""The keys of 2. the bound (chapter 2): each exercise's expected value, the variant functions that reproduce its
common mistakes, its trials; the prose (titles, the mistakes' messages, the questions) is in text/elbo.yaml.

Registered in :data:`.engine.EXERCISES` when one of its labels is first looked up."""

from __future__ import annotations

import math

import torch

from .engine import register_chapter
from .inputs import _col, _images, _linear, _q, _short_schedule, _steps


def _posterior_variance(*, idx: int = 9, form: str = "posterior"):
    """beta-tilde at code index ``idx`` of the linear schedule, or a slip: beta, the ratio upside down, the sd."""
    s = _linear()
    b, ab = s.betas, s.alphas_cumprod
    return {"posterior": lambda: s.posterior_variance[idx], "beta": lambda: b[idx],
            "upside-down": lambda: (1 - ab[idx]) / (1 - ab[idx - 1]) * b[idx],
            "sd": lambda: s.posterior_variance[idx].sqrt()}[form]()


def _lambda(*, idx=(1, 999), var: str = "posterior"):
    """The weights lambda_t at the code indices ``idx``, for sigma^2 = beta-tilde (or beta)."""
    s = _linear()
    idx = torch.tensor(list(idx))
    b, ab = s.betas[idx], s.alphas_cumprod[idx]
    sigma2 = s.posterior_variance[idx] if var == "posterior" else b
    return b ** 2 / (2 * sigma2 * (1 - b) * (1 - ab))


def _kl(m1, v1, m2, v2):
    from ...losses import normal_kl
    f = lambda v: torch.tensor(float(v), dtype=torch.float64)           # noqa: E731
    return normal_kl(f(m1), f(math.log(v1)), f(m2), f(math.log(v2)))


def _kl_variant(*, variance: float = 0.25, reverse: bool = False, bits: bool = False):
    """KL(N(1, variance) || N(0, 1)) in nats, or the other way round, or in bits."""
    kl = _kl(0.0, 1.0, 1.0, variance) if reverse else _kl(1.0, variance, 0.0, 1.0)
    return kl / math.log(2) if bits else kl


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


def _v_trials(generator):
    out = []
    for _ in range(3):
        s = _short_schedule(generator)
        out.append((s, _images(generator), _steps(s, generator), _images(generator)))
    return out


def _x0_from_v(s, x_t, t, v, *, sign=-1.0, at=0, sqrt=True, swap=False, target="x0"):
    """x_0 = sqrt(abar) x_t - sqrt(1 - abar) v: q_sample's combination with the sign flipped (see _q); or eps."""
    if target == "eps":
        return s.predict_eps_from_v(x_t, t, v)
    return _q(s, x_t, t, v, sign=sign, at=at, sqrt=sqrt, swap=swap)


def _tweedie(s, x_t, t, score, *, var_root=False, sign=1.0, divide=True, at=0):
    abar = _col(s.alphas_cumprod[t + at])
    var = (1 - abar).sqrt() if var_root else 1 - abar
    x0 = x_t + sign * var * score
    return x0 / abar.sqrt() if divide else x0


def _tweedie_reference(s, x_t, t, score):
    eps = -(1 - _col(s.alphas_cumprod[t])).sqrt() * score      # the score view: eps = -sqrt(1 - abar) score
    return s.predict_x0_from_eps(x_t, t, eps)


register_chapter("elbo", {
    "ex-elbo-posterior-variance": {"expected": _posterior_variance, "variant": _posterior_variance},
    "ex-elbo-lambda": {"expected": _lambda, "variant": _lambda},
    "ex-elbo-kl": {"expected": _kl_variant, "variant": _kl_variant},
    "ex-elbo-posterior-mean": {"trials": _posterior_trials, "variant": _post_mean,
                               "reference": lambda s, x0, xt, t: s.q_posterior(x0, xt, t)[0]},
    "ex-elbo-x0-from-v": {"trials": _v_trials, "reference": lambda s, x_t, t, v: s.predict_x0_from_v(x_t, t, v),
                          "variant": _x0_from_v},
    "ex-elbo-tweedie": {"trials": _v_trials, "reference": _tweedie_reference, "variant": _tweedie},
})
