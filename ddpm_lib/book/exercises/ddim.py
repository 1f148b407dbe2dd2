"""The keys of 6. DDIM (chapter 6): each exercise's expected value, its common mistakes, its trials.

Registered in :data:`.engine.EXERCISES` when one of its labels is first looked up."""

from __future__ import annotations

import math

import numpy as np
import torch

from .engine import ChoiceExercise, FunctionExercise, ValueExercise, _register
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


_register("ex-ddim-loop", ValueExercise(
    "a 10-step DDIM loop",
    expected=lambda model, schedule, x_T: _ddim_sample_10(model, schedule, x_T),
    mistakes=lambda model, schedule, x_T: [
        ("the model takes the original timestep ten.timestep_map[t], not the index t",
         _ddim_loop(model, schedule, x_T, timestep="index")),
        ("clamp the result to [-1, 1] as ddim_sample does", _ddim_loop(model, schedule, x_T,
                                                                       clamp=False)),
        ("the loop stops early: index 0 still steps, to t_prev = -1",
         _ddim_loop(model, schedule, x_T, last=0))],
    atol=1e-4, inputs=("model", "schedule", "x_T")))


def _budget(steps: int = 20, key: str = "frechet", ddof: int = 1, per_seed: bool = True,
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


_register("ex-ddim-budget", ValueExercise(
    "DDIM against DDPM at 20 steps", expected=lambda: _budget(),
    mistakes=lambda: [
        ("the sign: DDIM's mean minus DDPM's (negative when DDIM's distance is lower)",
         _budget(sign=-1.0)),
        ("the standard deviation over 3 seeds divides by n - 1 = 2 (the sample standard "
         "deviation), not by n", _budget(ddof=0)),
        ("that is the spread of one seed's difference: the standard error of a mean of n seeds "
         "divides each variance by n", _budget(per_seed=False)),
        ("that is the confident share; the question asks for the Frechet distance",
         _budget(key="confident"))],
    rtol=1e-3))


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


_register("ex-ddim-step", FunctionExercise(
    "one DDIM step (eta = 0)", "my_ddim_step(schedule, x_t, t, t_prev, eps) -> x_prev",
    trials=_ddim_trials, reference=_ddim_reference,
    mistakes=(
        ("looks like a missing sqrt in x0_pred = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)",
         lambda *a: _ddim_variant(*a, x0_root=False)),
        ("looks like a missing sqrt: x_prev = sqrt(abar_prev) x0_pred + sqrt(1 - abar_prev) eps",
         lambda *a: _ddim_variant(*a, prev_root=False)),
        ("that gives x_t back: the new point uses abar at t_prev, not at t",
         lambda *a: _ddim_variant(*a, use="t")),
        ("the sign of the direction term: + sqrt(1 - abar_prev) eps",
         lambda *a: _ddim_variant(*a, sign=-1.0)),
    )))

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


_register("ex-ddim-invert", FunctionExercise(
    "DDIM inversion", "my_ddim_invert(eps_model, schedule, x0, steps) -> x_T shaped like x0",
    trials=_invert_trials, reference=_invert_reference,
    mistakes=(
        ("the network is told the timestep of the step's end, timestep_map[j] (the one sampling "
         "uses for the same step), not of its start",
         lambda *a: _invert_variant(*a, timestep="start")),
        ("the model takes the original timestep schedule.respace(steps).timestep_map[j], not the "
         "index j", lambda *a: _invert_variant(*a, timestep="index")),
        ("the first step starts from the clean image, abar = 1: alphas_cumprod[j - 1] at j = 0 "
         "is the last entry, abar at T", lambda *a: _invert_variant(*a, first="wrap")),
    )))

_register("ex-ddim-why-no-retraining", ChoiceExercise(
    "why DDIM needs no new training",
    right=r"the DDPM loss involves only the marginals $q(x_t \mid x_0)$, and DDIM's process keeps every one "
          r"of them",
    why="L_simple involves only the marginals q(x_t | x_0), and DDIM's family keeps every one of "
        "them: the same eps-predictor is optimal for it.",
    wrong=((r"DDIM's network predicts $x_0$ instead of the noise, and an $x_0$-predictor can be read off "
            r"any $\epsilon$-predictor",
            "the network still predicts the noise; DDIM turns it into x0_pred by a formula, as DDPM does"),
           (r"DDIM is deterministic at $\eta = 0$, and a sampler without noise has no variance that would "
            r"need to be learned",
            "eta = 1 adds noise and uses the same network: determinism is not the reason"),
           (r"DDIM takes the same steps as DDPM's ancestral sampler, only with the noise term "
            r"$\sigma_t z$ set to zero",
            "DDIM's steps are not DDPM's: they skip timesteps, and its update is not DDPM's mean"))))
