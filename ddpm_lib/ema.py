"""Exponential moving average of a model's weights, the copy that DDPM samples with.

    theta_ema <- d * theta_ema + (1 - d) * theta,   d = min(decay, (1 + n) / (10 + n))

``n`` counts the updates so far. The warm-up factor (1 + n) / (10 + n), the one of TensorFlow's
ExponentialMovingAverage, keeps the average from being dominated by the random initial weights: with a
plain decay of 0.9999 the initial weights would still make up 90% of the EMA copy after 1,000 steps
(0.9999^1000) and 37% after 10,000 (0.9999^10000, about 1/e), enough to spoil its samples. The update
is one fused ``torch._foreach_lerp_`` over all parameters (the same primitive as
``torch.optim.swa_utils.get_ema_multi_avg_fn``).

Buffers (non-trained state, such as a registered schedule or normalisation statistics) are copied
from the live model, never averaged, and the EMA never touches anything but its own copy.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside torch.compile and DistributedDataParallel wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


class EMA:
    """Holds ``module``, an averaged copy of a model; call :meth:`update` after each optimizer step."""

    def __init__(self, model: nn.Module, decay: float = 0.9999, warmup: bool = True):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1), got {decay}")
        self.module = copy.deepcopy(unwrap(model)).eval().requires_grad_(False)
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0

    def current_decay(self) -> float:
        """The decay the next update will use."""
        n = self.num_updates
        return min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module, weight: torch.Tensor | None = None) -> None:
        """Move the average towards ``model``'s weights by 1 - d.

        ``weight``, a 0-dim tensor on the parameters' device, scales that step without a host sync: the
        trainer passes whether the optimizer step was finite, so a skipped step leaves the EMA unchanged.
        (``num_updates`` counts calls, skipped steps included.)
        """
        model = unwrap(model)
        d = self.current_decay()
        ema_params = list(self.module.parameters())
        params = [p.detach() for p in model.parameters()]
        if len(ema_params) != len(params):
            raise ValueError("the model's parameters do not match the EMA copy's")
        if weight is None:
            torch._foreach_lerp_(ema_params, params, 1.0 - d)
        else:
            step = (1.0 - d) * weight.to(ema_params[0].dtype)
            torch._foreach_lerp_(ema_params, params, [step] * len(ema_params))
        for ema_buf, buf in zip(self.module.buffers(), model.buffers()):
            ema_buf.copy_(buf)
        self.num_updates += 1

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "decay": self.decay, "warmup": self.warmup,
                "num_updates": self.num_updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.decay, self.warmup, self.num_updates = state["decay"], state["warmup"], state["num_updates"]
