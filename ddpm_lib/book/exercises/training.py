"""The keys of 4. training (chapter 4): each exercise's expected value, the variant functions that reproduce its
common mistakes, its trials; the prose (titles, the mistakes' messages, the questions) is in text/training.yaml.

Registered in :data:`.engine.EXERCISES` when one of its labels is first looked up."""

from __future__ import annotations

from functools import lru_cache

import torch

from .engine import register_chapter
from .inputs import _col, _images, _short_schedule


@lru_cache(maxsize=None)
def _n_training_digits() -> int:
    from ...data import load_dataset
    return len(load_dataset("mnist-sample"))


def _epochs(*, batch: int = 64, digits: int | None = None, upside_down: bool = False) -> float:
    """Passes over the digits in 40,000 steps of ``batch`` images (or that ratio upside down)."""
    n = _n_training_digits() if digits is None else digits
    return n / (40_000 * batch) if upside_down else 40_000 * batch / n


def _ema_weight(decay: float, n: int = 1000) -> float:
    from ...ema import EMA
    probe = EMA(torch.nn.Linear(1, 1, bias=False), decay=decay)
    weight = 1.0
    for _ in range(n):
        weight *= probe.current_decay()
        probe.num_updates += 1
    return weight


def _ema_variant(*, decay: float = 0.999, n: int = 1000, warmup: bool = True) -> float:
    """The weight of the initial weights after ``n`` updates, with the warm-up or at a fixed decay."""
    return _ema_weight(decay, n) if warmup else decay ** n


def _losses_at(model, schedule, x0, noise, *, idx=(9, 99, 899)):
    from ...losses import ddpm_loss
    with torch.no_grad():
        return [ddpm_loss(model, schedule, x0, t=torch.full((x0.shape[0],), i, device=x0.device),
                          noise=noise).item() for i in idx]


def _standin_model(x, t):
    """A fixed noise predictor for the checks: no weights, depends on x and t."""
    return 0.3 * x + 0.002 * _col(t.to(x.dtype)) - 0.1


def _loss_trials(generator):
    out = []
    for reduction in ("mean", "none", "mean"):
        s = _short_schedule(generator)
        x0 = _images(generator)
        t = torch.randint(0, s.T, (6,), generator=generator)
        out.append((_standin_model, s, x0, t, _images(generator), reduction))
    return out


def _loss_reference(model, s, x0, t, noise, reduction):
    from ...losses import ddpm_loss
    return ddpm_loss(model, s, x0, t=t, noise=noise, reduction=reduction)


def _loss_variant(model, s, x0, t, noise, reduction, *, target="noise", sqrt=True, reduce="mean",
                  model_input="x_t"):
    abar = _col(s.alphas_cumprod[t])
    a, b = (abar.sqrt(), (1 - abar).sqrt()) if sqrt else (abar, 1 - abar)
    x_t = a * x0 + b * noise
    eps = model(x_t if model_input == "x_t" else x0, t)
    err = (eps - (noise if target == "noise" else x0)) ** 2
    per = err.flatten(1).sum(1) if reduce == "sum" else err.flatten(1).mean(1)
    if reduce == "no-flat" and reduction == "none":
        return err
    return per.mean() if reduction == "mean" else per


register_chapter("training", {
    "ex-training-epochs": {"expected": _epochs, "variant": _epochs},
    "ex-training-ema": {"expected": _ema_variant, "variant": _ema_variant},
    "ex-training-loss-by-t": {"expected": _losses_at, "variant": _losses_at,
                              "inputs": ("model", "schedule", "x0", "noise")},
    "ex-training-loss": {"trials": _loss_trials, "reference": _loss_reference, "variant": _loss_variant},
})
