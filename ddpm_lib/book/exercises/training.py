"""The keys of 4. training (chapter 4): each exercise's expected value, its common mistakes, its trials.

Registered in :data:`.engine.EXERCISES` when one of its labels is first looked up."""

from __future__ import annotations

from functools import lru_cache

import torch

from .engine import ChoiceExercise, FunctionExercise, ValueExercise, _register
from .inputs import _col, _images, _short_schedule


@lru_cache(maxsize=None)
def _n_training_digits() -> int:
    from ...data import load_dataset
    return len(load_dataset("mnist-sample"))


_register("ex-training-epochs", ValueExercise(
    "passes over the data", expected=lambda: 40_000 * 64 / _n_training_digits(),
    mistakes=lambda: [
        ("upside down: divide the images seen by the number of digits", _n_training_digits() / (40_000 * 64)),
        ("forgot the batch size: each step sees 64 digits", 40_000 / _n_training_digits()),
        ("the training set has 9,000 digits (the other 1,000 are held out)", 40_000 * 64 / 10_000)],
    rtol=1e-3))


def _ema_weight(decay: float, n: int = 1000) -> float:
    from ...ema import EMA
    probe = EMA(torch.nn.Linear(1, 1, bias=False), decay=decay)
    weight = 1.0
    for _ in range(n):
        weight *= probe.current_decay()
        probe.num_updates += 1
    return weight


_register("ex-training-ema", ValueExercise(
    "weight of the initial weights after 1000 updates", expected=lambda: _ema_weight(0.999),
    mistakes=lambda: [
        ("that is a fixed decay of 0.9999, without the warm-up", 0.9999 ** 1000),
        ("that is a fixed decay of 0.999, without the warm-up", 0.999 ** 1000),
        ("one factor short: multiply the 1000 decays d_0 .. d_999", _ema_weight(0.999, 999))],
    rtol=1e-6, atol=1e-300))


def _losses_at(model, schedule, x0, noise, idx):
    from ...losses import ddpm_loss
    with torch.no_grad():
        return [ddpm_loss(model, schedule, x0, t=torch.full((x0.shape[0],), i, device=x0.device),
                          noise=noise).item() for i in idx]


_register("ex-training-loss-by-t", ValueExercise(
    "mean loss at t = 10, 100, 900",
    expected=lambda model, schedule, x0, noise: _losses_at(model, schedule, x0, noise, (9, 99, 899)),
    mistakes=lambda model, schedule, x0, noise: [
        ("wrong indices: the paper's t = 10, 100, 900 are code indices 9, 99, 899",
         _losses_at(model, schedule, x0, noise, (10, 100, 900))),
        ("the order: t = 10 first, then 100, then 900",
         _losses_at(model, schedule, x0, noise, (899, 99, 9)))],
    inputs=("model", "schedule", "x0", "noise")))


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


_register("ex-training-loss", FunctionExercise(
    "L_simple", "my_loss(model, schedule, x0, t, noise, reduction) -> () or (B,)",
    trials=_loss_trials, reference=_loss_reference,
    mistakes=(
        ("with reduction='none' return one loss per image, shape (B,): average over C, H, W",
         lambda *a: _loss_variant(*a, reduce="no-flat")),
        ("summed over the pixels: L_simple averages the squared error over C, H, W",
         lambda *a: _loss_variant(*a, reduce="sum")),
        ("compared the prediction with x_0: the network predicts the noise",
         lambda *a: _loss_variant(*a, target="x0")),
        ("looks like a missing sqrt in x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps",
         lambda *a: _loss_variant(*a, sqrt=False)),
        ("the model was given x_0: it must see the noisy x_t",
         lambda *a: _loss_variant(*a, model_input="x0")),
    ), rtol=1e-4, atol=1e-6))


_register("ex-training-why-ema", ChoiceExercise(
    "why sample with the EMA of the weights",
    right=r"one minibatch's gradient is noisy, so the raw weights jitter around a good solution; their "
          r"average is closer to it",
    why="Each step follows one minibatch's noisy gradient, so the raw weights jitter around a good "
        "solution; their average over the last ~1/(1 - d) steps sits closer to it.",
    wrong=((r"the gradient is computed at the EMA weights, so the EMA is the set of weights that the loss "
            r"has actually trained",
            "the gradient is computed at the raw weights; the EMA never enters the loss"),
           (r"the EMA damps each optimiser step, which allows a larger learning rate and so makes training "
            r"converge in fewer steps",
            "the optimiser never sees the EMA: the raw weights come out the same with or without it, so it "
            "cannot speed training up"),
           (r"the raw weights keep changing while the model samples; the EMA is a frozen copy saved when "
            r"training stopped",
            "once training stops the raw weights do not change either; the question is which of the two "
            "sets denoises better"))))
