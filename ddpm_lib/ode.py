"""Samplers that solve the probability-flow ODE: EDM's Heun (Karras et al. 2022) and DPM-Solver++(2M) (Lu et al. 2022).

In EDM's variables a DDPM marginal is simple. With abar_t the schedule's ``alphas_cumprod``,

    sigma_t = sqrt((1 - abar_t) / abar_t),   x~ = x_t / sqrt(abar_t) = x_0 + sigma_t eps,

and the probability-flow ODE, whose solution has the same marginals as the forward process, reads

    d x~ / d sigma = eps_theta(x_t, t) = (x~ - D(x~; sigma)) / sigma,      D = the predicted x_0.

Euler's method on it, from sigma_t to sigma_prev, is x~ + (sigma_prev - sigma_t) eps: exactly DDIM with
eta = 0 (Song et al. 2021, eq. 12 without noise). Heun's method adds a corrector (a second call of the
network at the end of the step, and the average of the two slopes); DPM-Solver++(2M) instead reuses the
previous step's x_0 prediction (a multistep method), so it costs one call per step, as DDIM does.

Both run on sigmas spaced as EDM recommends (``rho = 7``: dense near the data) between the schedule's
largest and smallest sigma, each put on the nearest of the model's timesteps, so the network is only ever
called at timesteps it was trained on. ``steps`` counts network calls for every sampler, so samplers
compare at equal cost: Heun takes steps // 2 + 1 intervals, the last one an Euler step to sigma = 0.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence, TypedDict

import torch
from torch import Tensor
from tqdm.auto import tqdm

try:
    from typing import Unpack
except ImportError:                             # Python 3.10: torch installs typing_extensions
    from typing_extensions import Unpack

from .sampling import Model, Trajectory, _prepare
from .schedule import NoiseSchedule

RHO = 7.0          # EDM's spacing exponent (Karras et al. 2022, eq. 5)


def karras_timesteps(schedule: NoiseSchedule, n: int, rho: float = RHO) -> Tensor:
    """``n`` timesteps of ``schedule`` (long, decreasing, distinct) nearest to EDM's rho-spaced sigmas.

    sigma_i = (sigma_max^(1/rho) + i / (n - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho, i = 0..n-1,
    between the sigmas of the last and the first timestep; each is put on the timestep whose sigma is
    nearest in log-sigma, then pushed down by one where two would coincide (only where the spacing is finer
    than the schedule's own, near t = 0), so there are always ``n`` distinct timesteps.
    """
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= schedule.T:
        raise ValueError(f"the number of timesteps must be a whole number from 1 to {schedule.T}, got {n!r}")
    log_sigma = edm_sigmas(schedule).log()                                 # (T,) increasing with t
    if n == 1:
        return torch.tensor([schedule.T - 1])
    lo, hi = log_sigma[0].exp() ** (1 / rho), log_sigma[-1].exp() ** (1 / rho)
    targets = (hi + torch.linspace(0, 1, n, dtype=torch.float64) * (lo - hi)) ** rho   # (n,) decreasing
    nearest = (targets.log()[:, None] - log_sigma[None, :]).abs().argmin(dim=1)       # (n,)
    chosen = []
    for i, t in enumerate(nearest.tolist()):
        t = min(t, chosen[-1] - 1) if chosen else t                         # distinct, decreasing
        chosen.append(max(t, n - 1 - i))                                    # room for the rest below
    return torch.tensor(chosen)


def edm_sigmas(schedule: NoiseSchedule) -> Tensor:
    """sigma_t = sqrt((1 - abar_t) / abar_t) for t = 0..T-1 (float64, on the CPU): EDM's noise level."""
    abar = schedule.alphas_cumprod.detach().cpu().double()
    return ((1.0 - abar) / abar).sqrt()


def heun_step(denoise: Callable[[Tensor, float], Tensor], x: Tensor, sigma: float, sigma_next: float, *,
              x0: Tensor | None = None, correct: bool = True) -> Tensor:
    """One step of Heun's method on dx~/dsigma = (x~ - D(x~; sigma)) / sigma, from ``sigma`` to ``sigma_next``.

    ``denoise(x, sigma)`` is D, the x_0 prediction; ``x0`` is D(x; sigma) if it is already known (it
    saves a call). The Euler step x_e = x + (sigma_next - sigma) d uses the slope d at the start; the
    corrector evaluates the slope d' at (x_e, sigma_next) and steps with the average (d + d') / 2. With
    ``sigma_next == 0`` the slope there is undefined and the step is Euler's alone (Karras et al. 2022,
    Algorithm 1), as it is with ``correct=False``. Two calls of ``denoise`` (one if ``x0`` is given),
    one without the corrector.
    """
    x0 = denoise(x, sigma) if x0 is None else x0
    d = (x - x0) / sigma                                                    # dx~/dsigma at sigma
    x_euler = x + (sigma_next - sigma) * d
    if not correct or sigma_next == 0:
        return x_euler
    d_next = (x_euler - denoise(x_euler, sigma_next)) / sigma_next          # the slope at the end
    return x + (sigma_next - sigma) * 0.5 * (d + d_next)


class SolverOptions(TypedDict, total=False):
    """The keyword arguments the ODE samplers share with :func:`ddpm_lib.sampling.ddim_sample` (defaults in
    brackets): ``seed`` / ``generator`` [None], ``trajectory_steps`` [None], ``device`` [the model's],
    ``chunk_size`` [per device], ``clip_denoised`` [True], ``x_T`` [drawn], ``progress`` [False],
    ``labels`` [None] and ``guidance`` [1.0]."""

    seed: int | None
    generator: torch.Generator | None
    trajectory_steps: Sequence[int] | None
    device: torch.device | str | None
    chunk_size: int | None
    clip_denoised: bool
    x_T: Tensor | None
    progress: bool
    labels: Tensor | int | Sequence[int] | None
    guidance: float


@torch.no_grad()
def heun_sample(model: Model, schedule: NoiseSchedule, shape: Sequence[int], *, steps: int,
                **options: Unpack[SolverOptions]) -> Tensor | tuple[Tensor, Trajectory]:
    """Draw images with EDM's deterministic Heun sampler (Karras et al. 2022, Algorithm 1, no churn).

    Args: as for :func:`ddpm_lib.sampling.ddim_sample` (:class:`SolverOptions`); ``steps`` is the number
    of network calls (at least 1): steps // 2 + 1 intervals, each a Heun step (two calls) except the last,
    an Euler step to sigma = 0, and for an even ``steps`` the one before it.
    ``trajectory_steps`` are interval indices, the noisiest (n - 1) first. The randomness is x_T alone.
    """
    return _solve(model, schedule, shape, calls=steps, order="heun", **options)


@torch.no_grad()
def dpm_solver_sample(model: Model, schedule: NoiseSchedule, shape: Sequence[int], *, steps: int,
                      **options: Unpack[SolverOptions]) -> Tensor | tuple[Tensor, Trajectory]:
    """Draw images with DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): one network call a step.

    With lambda = -log sigma (half the log-SNR), h = lambda_prev - lambda_t and r = h_before / h, each step
    is x~_prev = (sigma_prev / sigma_t) x~ + (1 - sigma_prev / sigma_t) D, where D is the x_0 prediction
    extrapolated from the last two, (1 + 1/(2r)) x0_t - 1/(2r) x0_before (the first and last steps use x0_t
    alone). Args as for :func:`heun_sample`; ``steps`` calls, ``steps`` intervals.
    """
    return _solve(model, schedule, shape, calls=steps, order="dpm++2m", **options)


def _solve(model: Model, schedule: NoiseSchedule, shape: Sequence[int], *, calls: int, order: str,
           seed: int | None = None, generator: torch.Generator | None = None,
           trajectory_steps: Sequence[int] | None = None, device: torch.device | str | None = None,
           chunk_size: int | None = None, clip_denoised: bool = True, x_T: Tensor | None = None,
           progress: bool = False, labels: Tensor | int | Sequence[int] | None = None,
           guidance: float = 1.0) -> Tensor | tuple[Tensor, Trajectory]:
    if isinstance(calls, bool) or not isinstance(calls, int) or calls < 1:
        raise ValueError(f"steps (network calls) must be a whole number >= 1, got {calls!r}")
    n = calls // 2 + 1 if order == "heun" else calls                     # intervals
    setup = _prepare(model, schedule, shape, seed=seed, generator=generator, steps=None, trajectory_steps=None,
                     device=device, chunk_size=chunk_size, x_T=x_T, labels=labels, guidance=guidance)
    sched = setup.schedule
    if n > sched.T:
        raise ValueError(f"steps must be at most {sched.T if order != 'heun' else 2 * sched.T - 1} here, got {calls}")
    keep = sorted({int(s) for s in trajectory_steps}, reverse=True) if trajectory_steps is not None else []
    if keep and (keep[-1] < 0 or keep[0] >= n):
        raise ValueError(f"trajectory_steps must lie in 0..{n - 1} (the solver's intervals)")
    ts = karras_timesteps(sched, n).tolist()                                # n timesteps, decreasing
    sigma = edm_sigmas(sched)
    sigmas = [float(sigma[t]) for t in ts] + [0.0]                           # (n + 1,), the last 0
    model_t = sched.timestep_map.to(setup.device)
    num = setup.x.shape[0]
    abar_T = float(sched.alphas_cumprod[ts[0]])
    x = setup.x / abar_T ** 0.5                                             # x~ at sigma_0 (N, C, H, W)

    def denoise(x_tilde: Tensor, i: int, t: int) -> Tensor:
        """D(x~; sigma_i): the model's x_0 from x_t = x~ / sqrt(1 + sigma^2), clipped if asked."""
        scale = (1.0 + sigmas[i] ** 2) ** -0.5                              # sqrt(abar_t)
        tt = torch.full((num,), t, device=setup.device, dtype=torch.long)
        eps = setup.eps_model(x_tilde * scale, model_t[tt])
        x0 = x_tilde - sigmas[i] * eps
        return x0.clamp(-1.0, 1.0) if clip_denoised else x0

    kept_x, kept_x0, previous = [], [], None
    for i in tqdm(range(n), disable=not progress, desc=order, leave=False):
        s, s_next = sigmas[i], sigmas[i + 1]
        x0 = denoise(x, i, ts[i])
        if n - 1 - i in keep:
            kept_x.append((x / (1.0 + s * s) ** 0.5).float())
            kept_x0.append(x0.float())
        if order == "heun":                                                  # corrector while calls remain
            x = heun_step(lambda x_e, _, i=i: denoise(x_e, i + 1, ts[i + 1]), x, s, s_next, x0=x0,
                          correct=i < calls - n)
        else:
            D = x0
            if previous is not None and s_next > 0:                          # second order, not at the end
                h, h_before = _lam(s_next) - _lam(s), _lam(s) - _lam(previous[0])
                r = h_before / h
                D = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * previous[1]
            x = (s_next / s) * x + (1 - s_next / s) * D
            previous = (s, x0)
    images = x.float().clamp(-1.0, 1.0).contiguous()
    if trajectory_steps is None:
        return images
    return images, Trajectory(steps=keep, x_t=torch.stack(kept_x).cpu().contiguous(),
                              pred_x0=torch.stack(kept_x0).cpu().contiguous())


def _lam(sigma: float) -> float:
    """lambda = log(alpha / sigma) in the VP variables, which is -log of EDM's sigma."""
    return -math.log(sigma)
