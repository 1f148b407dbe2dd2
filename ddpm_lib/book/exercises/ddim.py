"""The keys of 6. DDIM (chapter 6): each exercise's expected value, the variant functions that reproduce its
common mistakes, its trials; the prose (titles, the mistakes' messages, the questions) is in text/ddim.yaml.

Registered in :data:`.engine.EXERCISES` when one of its labels is first looked up."""

from __future__ import annotations

import math

import numpy as np
import torch

from .engine import register_chapter
from .inputs import _col, _images, _short_schedule


def _ddim_loop(model, schedule, x_T, *, timestep="map", clamp=True, last=-1):
    from ...sampling import ddim_step
    ten = schedule.respace(10)
    x = x_T
    with torch.no_grad():
        for j in range(ten.T - 1, -1, -1):
            t = torch.full((x.shape[0],), j, device=x.device)
            t_model = ten.timestep_map[t] if timestep == "map" else t
            t_prev = t - 1 if j > 0 else torch.full_like(t, last)
            if j == 0 and last == 0:
                break
            x = ddim_step(ten, x, t, t_prev, model(x, t_model))
    return x.clamp(-1, 1) if clamp else x


def _ddim_sample_10(model, schedule, x_T):
    from ...sampling import ddim_sample
    return ddim_sample(model, schedule, x_T.shape, steps=10, x_T=x_T)


def _budget(*, steps: int = 20, key: str = "frechet", ddof: int = 1, per_seed: bool = True,
            sign: float = 1.0) -> tuple[float, float]:
    """DDIM (eta 0) minus DDPM at ``steps`` steps on ``key``: the difference of the means over seeds
    and its standard error sqrt(s_a^2 / n_a + s_b^2 / n_b), from the rows of sampler_quality.json."""
    import json
    from ..results import SAMPLER_QUALITY
    rows = json.loads(SAMPLER_QUALITY.read_text())["rows"]
    values = {name: np.array([r[key] for r in rows if r["sampler"] == name and r["steps"] == steps])
              for name in ("ddim-eta0", "ddpm")}
    a, b = values["ddim-eta0"], values["ddpm"]
    n_a, n_b = (len(a), len(b)) if per_seed else (1, 1)
    se = math.sqrt(a.var(ddof=ddof) / n_a + b.var(ddof=ddof) / n_b)
    return sign * float(a.mean() - b.mean()), se


def _ddim_trials(generator):
    out = []
    for _ in range(3):
        s = _short_schedule(generator)
        t = torch.randint(5, s.T, (6,), generator=generator)
        gap = torch.randint(1, 5, (6,), generator=generator)
        out.append((s, _images(generator), t, t - gap, _images(generator)))
    return out


def _ddim_variant(s, x_t, t, t_prev, eps, *, x0_root=True, prev_root=True, use="prev", sign=1.0):
    ab, ab_prev = _col(s.alphas_cumprod[t]), _col(s.alphas_cumprod[t_prev])
    if use == "t":
        ab_prev = ab
    root = torch.sqrt if x0_root else (lambda v: v)
    x0 = (x_t - root(1 - ab) * eps) / root(ab)
    root = torch.sqrt if prev_root else (lambda v: v)
    return root(ab_prev) * x0 + sign * root(1 - ab_prev) * eps


def _ddim_reference(s, x_t, t, t_prev, eps):
    from ...sampling import ddim_step
    return ddim_step(s, x_t, t, t_prev, eps, eta=0.0, clip_denoised=False)


def _invert_standin(x, t):
    """A stand-in eps network that depends on the timestep it is told, so a wrong one shows."""
    return 0.4 * x + 0.003 * t.to(x.dtype).reshape(-1, 1, 1, 1)


def _invert_trials(generator):
    out = []
    for steps in (5, 3, 8):
        s = _short_schedule(generator)
        out.append((_invert_standin, s, _images(generator).clamp(-1, 1), steps))
    return out


def _invert_reference(eps_model, schedule, x0, steps):
    from ...sampling import ddim_invert
    return ddim_invert(eps_model, schedule, x0, steps, device="cpu")


def _invert_variant(eps_model, schedule, x0, steps, *, timestep="end", first="one"):
    s = schedule.respace(steps)
    abar = s.alphas_cumprod
    x = x0
    for j in range(s.T):
        t = torch.full((x.shape[0],), j if timestep != "start" else max(j - 1, 0))
        eps = eps_model(x, t if timestep == "index" else s.timestep_map[t])
        a_from = abar[j - 1] if (j > 0 or first == "wrap") else torch.ones_like(abar[0])
        x0_pred = (x - (1 - a_from).sqrt() * eps) / a_from.sqrt()
        x = abar[j].sqrt() * x0_pred + (1 - abar[j]).sqrt() * eps
    return x


register_chapter("ddim", {
    "ex-ddim-loop": {"expected": _ddim_sample_10, "variant": _ddim_loop, "inputs": ("model", "schedule", "x_T")},
    "ex-ddim-budget": {"expected": _budget, "variant": _budget},
    "ex-ddim-step": {"trials": _ddim_trials, "reference": _ddim_reference, "variant": _ddim_variant},
    "ex-ddim-invert": {"trials": _invert_trials, "reference": _invert_reference, "variant": _invert_variant},
})
