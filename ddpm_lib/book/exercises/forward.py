"""The keys of 1. the forward process (chapter 1): each exercise's expected value, the variant functions that
reproduce its common mistakes, its trials; the prose (titles, the mistakes' messages, the questions) is in
text/forward.yaml.

Registered in :data:`.engine.EXERCISES` when one of its labels is first looked up."""

from __future__ import annotations

import torch

from .engine import register_chapter
from .inputs import _cosine, _images, _linear, _q, _short_schedule, _steps


def _abar(*, idx: int = 499, form: str = "abar"):
    """abar at code index ``idx`` of the linear schedule, or a slip: its sqrt, 1 - abar, the product of the betas."""
    s = _linear()
    abar = s.alphas_cumprod[idx]
    return {"abar": lambda: abar, "sqrt": lambda: abar.sqrt(), "complement": lambda: 1 - abar,
            "betas": lambda: torch.prod(s.betas[:idx + 1])}[form]()


def _variance(*, idx: int = 299, schedule: str = "cosine", sigma2: float = 0.25, x0_scale: str = "abar",
              noise: str = "variance"):
    """The slips of Var[x_t] = abar sigma^2 + (1 - abar)."""
    a = (_cosine() if schedule == "cosine" else _linear()).alphas_cumprod[idx]
    scale = a if x0_scale == "abar" else a.sqrt()
    return scale * sigma2 + (1 - a).sqrt() if noise == "sd" else scale * sigma2 + 1 - a


def _first_snr_below_one(*, paper: bool = True) -> int:
    s = _linear()
    return int((s.snr(torch.arange(s.T)) < 1).nonzero()[0]) + int(paper)


def _qsample_trials(generator):
    out = []
    for _ in range(3):
        s = _short_schedule(generator)
        x0 = _images(generator)
        out.append((s, x0, _steps(s, generator), _images(generator)))
    return out


def _qsample_variant(s, x0, t, eps, *, chain: bool = False, at=0, sqrt=True, sign=1.0, swap=False):
    """q_sample's slips (see _q), or one step of the chain instead of the jump from x_0."""
    return s.q_step(x0, t, eps) if chain else _q(s, x0, t, eps, at=at, sqrt=sqrt, sign=sign, swap=swap)


register_chapter("forward", {
    "ex-forward-abar": {"expected": _abar, "variant": _abar},
    "ex-forward-variance": {
        "expected": lambda: _cosine().alphas_cumprod[299] * 0.5 ** 2 + (1 - _cosine().alphas_cumprod[299]),
        "variant": _variance},
    "ex-forward-snr": {"expected": _first_snr_below_one, "variant": _first_snr_below_one},
    "ex-forward-qsample": {"trials": _qsample_trials, "reference": lambda s, x0, t, eps: s.q_sample(x0, t, eps),
                           "variant": _qsample_variant},
})
