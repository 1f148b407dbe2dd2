"""Sampling from a trained eps-model: DDPM's ancestral sampler and DDIM's.

DDPM (Ho et al. 2020, Algorithm 2), a Markov chain:

    x_T ~ N(0, I);  for t = T..1:  x_{t-1} = mu_theta(x_t, t) + sigma_t z,  z ~ N(0, I)  (z = 0 at t = 1)

DDIM (Song et al. 2021, eq. 12), a non-Markovian process with the same marginals q(x_t | x_0), so the
same trained model, run on a few of the timesteps (tau_S > ... > tau_1):

    x_prev = sqrt(abar_prev) x0_pred + sqrt(1 - abar_prev - sigma_t^2) eps + sigma_t z

The whole batch lives on the device; the model runs on chunks of it so that many images fit in
memory, while the noise for every step is drawn for the whole batch at once from one generator, so
the images do not depend on the chunk size. Nothing is copied to the host until the end.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .data import check_labels as data_labels
from .schedule import NoiseSchedule

Model = Callable[[Tensor, Tensor], Tensor]


@dataclass
class Trajectory:
    """Snapshots of the reverse process at chosen step indices (in the order they were taken).

    ``steps[i]`` is the timestep index t (0..T-1 of the schedule used) of ``x_t[i]``, the noisy images
    fed to the model, and of ``pred_x0[i]``, the model's guess of x_0 from them. Tensors are on the CPU,
    shaped (S, N, C, H, W).
    """

    steps: list[int]
    x_t: Tensor
    pred_x0: Tensor


def guided(model: Callable[..., Tensor], labels: Tensor | None, guidance: float = 1.0) -> Model:
    """The noise predictor ``(x, t) -> eps`` for class ``labels`` (B,) with classifier-free guidance.

        eps = eps(x, t | no label) + w * (eps(x, t | y) - eps(x, t | no label)),   w = ``guidance``

    w = 1 is the plain conditional model and w = 0 the unconditional one; w > 1 pushes the samples
    towards what makes the label likely. (Ho & Salimans 2022 write eps = (1 + w') eps_cond - w' eps_uncond:
    their w' is our w - 1.) Both predictions come from one model call on a batch of 2B. With
    ``labels=None`` the model is returned as it is.
    """
    if labels is None:
        return model
    num_classes = getattr(model, "num_classes", None)
    if num_classes is None:
        raise ValueError("labels were given but the model is unconditional (it has no num_classes)")
    guidance = float(guidance)
    if guidance != guidance or abs(guidance) == float("inf"):
        raise ValueError(f"guidance must be a finite number, got {guidance}")

    def eps(x: Tensor, t: Tensor) -> Tensor:
        y = labels.to(x.device)
        if guidance == 1.0:
            return model(x, t, y)
        null = torch.full_like(y, num_classes)                            # the "no label" token
        if guidance == 0.0:
            return model(x, t, null)
        both = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]))   # (2B, C, H, W)
        cond, uncond = both.chunk(2)
        return uncond + guidance * (cond - uncond)

    return eps


def check_labels(labels: Tensor | int | Sequence[int] | None, n: int, model: Callable) -> Tensor | None:
    """``labels`` as a LongTensor (n,) on the CPU (an int repeats), after checking the model takes them
    (the rule is :func:`ddpm_lib.data.check_labels`)."""
    if labels is None:
        return None
    num_classes = getattr(model, "num_classes", None)
    if num_classes is None:
        raise ValueError("labels were given but the model is unconditional (it has no num_classes)")
    return data_labels(labels, n, num_classes)


def class_labels(n: int, num_classes: int, *, per_class: int = 1, label: int | None = None) -> Tensor:
    """Labels (n,) for a batch of samples: all ``label``, or the classes in turn, each ``per_class`` times
    (per_class 1: 0, 1, ..., K-1, 0, 1, ...; per_class 3: 0, 0, 0, 1, 1, 1, ...)."""
    if label is not None:
        return torch.full((n,), label, dtype=torch.long)
    return torch.arange(n) // per_class % num_classes


def check_shape(shape: Sequence[int]) -> tuple[int, int, int, int]:
    """``shape`` as a tuple of four whole numbers >= 1 (N, C, H, W); ValueError otherwise (2.7 is not 2)."""
    try:
        shape = tuple(operator.index(s) for s in shape)
    except TypeError:
        raise ValueError(f"shape must be four whole numbers (N, C, H, W), got {tuple(shape)}") from None
    if len(shape) != 4 or min(shape) < 1:
        raise ValueError(f"shape must be (N, C, H, W) with every entry >= 1, got {shape}")
    return shape


def default_chunk_size(device: torch.device) -> int:
    """Images per model call: small on the CPU (cache-friendly), large on a GPU (occupancy)."""
    return 1024 if device.type == "cuda" else 64


# What a torch.Generator takes, and what `python -m ddpm_lib sample --seed` accepts.
MAX_SEED = 2**64 - 1


def make_generator(seed: int | None, device: torch.device) -> torch.Generator:
    """A torch.Generator on ``device`` seeded with ``seed`` (a random seed when None).

    ``seed`` must be a whole number from 0 to MAX_SEED (ValueError naming it otherwise).
    """
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED):
        raise ValueError(f"seed must be a whole number from 0 to {MAX_SEED} (2**64 - 1), got {seed!r}")
    gen = torch.Generator(device=device)
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(int(seed))
    return gen


@dataclass
class _Setup:
    """What every sampler needs, checked once: see :func:`_prepare`."""

    schedule: NoiseSchedule      # the (respaced) schedule, on ``device``
    device: torch.device
    generator: torch.Generator
    eps_model: Model             # (x, t_model) -> eps for the whole batch, run in chunks
    x: Tensor                    # (N, C, H, W) the starting images x_T
    keep: list[int]              # trajectory steps, largest first


def _chunked(model: Callable[..., Tensor], chunk_size: int, labels: Tensor | None = None,
             guidance: float = 1.0) -> Model:
    """The eps-model ``(x, t) -> eps`` of a whole batch, calling ``model`` on ``chunk_size`` images at a time.

    ``labels`` (N,) and ``guidance`` are those of :func:`guided`, split along with the batch.
    """
    def eps(x: Tensor, t: Tensor) -> Tensor:                              # (N, C, H, W), (N,)
        parts = []
        for start in range(0, x.shape[0], chunk_size):
            part = None if labels is None else labels[start:start + chunk_size]
            parts.append(guided(model, part, guidance)(x[start:start + chunk_size],
                                                       t[start:start + chunk_size]))
        return torch.cat(parts)                                            # (N, C, H, W)
    return eps


def _prepare(model: Model, schedule: NoiseSchedule, shape: Sequence[int], *, seed: int | None,
             generator: torch.Generator | None, steps: int | None, trajectory_steps: Sequence[int] | None,
             device: torch.device | str | None, chunk_size: int | None, x_T: Tensor | None,
             labels: Tensor | int | Sequence[int] | None, guidance: float) -> _Setup:
    """Check the arguments shared by the samplers, respace the schedule and draw x_T ~ N(0, I)."""
    shape = check_shape(shape)
    device = _model_device(model, schedule) if device is None else torch.device(device)
    if steps is not None:
        schedule = schedule.respace(steps)
    schedule = schedule.to(device)
    chunk = default_chunk_size(device) if chunk_size is None else chunk_size
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk_size must be a whole number >= 1 (or None for the default), got {chunk!r}")
    if generator is None:
        generator = make_generator(seed, device)
    elif seed is not None:
        raise ValueError("give either seed or generator, not both")

    keep = sorted({int(s) for s in trajectory_steps}, reverse=True) if trajectory_steps is not None else []
    if keep and (keep[-1] < 0 or keep[0] >= schedule.T):
        raise ValueError(f"trajectory_steps must lie in 0..{schedule.T - 1}")
    labels = check_labels(labels, shape[0], model)
    memory_format = torch.channels_last if _channels_last(model) else torch.contiguous_format
    if x_T is None:
        x = torch.randn(shape, device=device, generator=generator)
    else:
        if tuple(x_T.shape) != shape:
            raise ValueError(f"x_T has shape {tuple(x_T.shape)}, expected {shape}")
        if not bool(torch.isfinite(x_T).all()):
            raise ValueError("x_T contains NaN or infinite values")
        x = x_T.to(device=device, dtype=torch.float32).clone()
    x = x.contiguous(memory_format=memory_format)                          # (N, C, H, W)
    return _Setup(schedule, device, generator, _chunked(model, chunk, labels, guidance), x, keep)


def _run_reverse(setup: _Setup, step: Callable[[Tensor, Tensor, int], tuple[Tensor, Tensor]], *,
                 trajectory: bool, progress: bool, desc: str) -> Tensor | tuple[Tensor, Trajectory]:
    """Run ``x, pred_x0 = step(x, t, t_index)`` for t_index = T-1 .. 0 and keep the trajectory."""
    x, n = setup.x, setup.x.shape[0]
    kept_x, kept_x0 = [], []
    for t_index in tqdm(range(setup.schedule.T - 1, -1, -1), disable=not progress, desc=desc, leave=False):
        t = torch.full((n,), t_index, device=setup.device, dtype=torch.long)
        x_next, pred_x0 = step(x, t, t_index)                              # (N, C, H, W) each
        if t_index in setup.keep:
            kept_x.append(x.clone())
            kept_x0.append(pred_x0)
        x = x_next
    images = x.clamp(-1.0, 1.0).contiguous()
    if not trajectory:
        return images
    return images, Trajectory(steps=setup.keep, x_t=torch.stack(kept_x).cpu().contiguous(),
                              pred_x0=torch.stack(kept_x0).cpu().contiguous())


@torch.no_grad()
def ddpm_sample(model: Model, schedule: NoiseSchedule, shape: Sequence[int], *, seed: int | None = None,
                generator: torch.Generator | None = None, variance: str = "beta", steps: int | None = None,
                trajectory_steps: Sequence[int] | None = None, device: torch.device | str | None = None,
                chunk_size: int | None = None, clip_denoised: bool = True, x_T: Tensor | None = None,
                progress: bool = False, labels: Tensor | int | Sequence[int] | None = None,
                guidance: float = 1.0) -> Tensor | tuple[Tensor, Trajectory]:
    """Draw images with DDPM's ancestral sampler.

    Args:
        model: eps_theta(x_t, t), called as ``model(x, t)`` on chunks of at most ``chunk_size`` images.
        schedule: the noise schedule the model was trained with.
        shape: (N, C, H, W) of the batch to draw.
        seed / generator: randomness; give one for reproducible images (same seed, same images).
        variance: sigma_t^2 = beta_t (``"beta"``, Ho et al.'s choice for the sampler) or the posterior
            variance beta~_t (``"posterior"``); see :meth:`NoiseSchedule.model_variance`.
        steps: number of reverse steps; fewer than T respaces the schedule (``schedule.respace``).
        trajectory_steps: step indices t at which to keep x_t and the predicted x_0; values of t refer
            to the (respaced) schedule actually sampled, 0..steps-1. Also returns a :class:`Trajectory`.
        device: where to sample; defaults to the model's device.
        chunk_size: images per model call (default: 64 on CPU, 1024 on CUDA).
        clip_denoised: clip the predicted x_0 to [-1, 1] before forming the mean (as Ho et al. do).
        x_T: start from these images instead of fresh noise, shape ``shape``.
        progress: show a tqdm progress bar over the steps.
        labels: for a class-conditional model, the class of each image: one int for all, or (N,).
        guidance: classifier-free guidance weight w (see :func:`guided`); 1 is plain conditional sampling.

    Returns:
        The images (N, C, H, W) in [-1, 1] on ``device``; with ``trajectory_steps``, also the
        :class:`Trajectory`.
    """
    setup = _prepare(model, schedule, shape, seed=seed, generator=generator, steps=steps,
                     trajectory_steps=trajectory_steps, device=device, chunk_size=chunk_size, x_T=x_T,
                     labels=labels, guidance=guidance)
    sched = setup.schedule

    def step(x: Tensor, t: Tensor, t_index: int) -> tuple[Tensor, Tensor]:
        out = sched.p_mean_variance(setup.eps_model, x, t, variance=variance, clip_denoised=clip_denoised)
        if t_index == 0:
            return out["mean"], out["pred_x0"]                             # no noise at the last step
        noise = torch.randn(x.shape, device=setup.device, generator=setup.generator)
        return out["mean"] + torch.exp(0.5 * out["log_variance"]) * noise, out["pred_x0"]

    return _run_reverse(setup, step, trajectory=trajectory_steps is not None, progress=progress,
                        desc="sampling")


def ddim_sigma(schedule: NoiseSchedule, t: Tensor, t_prev: Tensor, eta: float) -> Tensor:
    """DDIM's sigma_t (Song et al. 2021, eq. 16), float64, shape (B,).

        sigma_t = eta * sqrt((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev))

    with abar_prev = 1 where ``t_prev < 0``. eta = 1 is the posterior standard deviation of
    q(x_prev | x_t, x_0) for the step t -> t_prev (DDPM's); eta = 0 makes the step deterministic.
    """
    abar_t, abar_prev = _abar_pair(schedule, t, t_prev)
    return eta * ((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)).clamp(min=0).sqrt()


def ddim_step(schedule: NoiseSchedule, x_t: Tensor, t: Tensor, t_prev: Tensor, eps: Tensor, *,
              eta: float = 0.0, noise: Tensor | None = None, clip_denoised: bool = True) -> Tensor:
    """One DDIM step: a draw from q_sigma(x_prev | x_t, x0_pred) (Song et al. 2021, eq. 12).

        x0_pred = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)
        x_prev  = sqrt(abar_prev) x0_pred + sqrt(1 - abar_prev - sigma_t^2) eps + sigma_t noise

    Args:
        schedule: the schedule whose alphas_cumprod ``t`` and ``t_prev`` index (respaced or not).
        x_t: (B, C, H, W) the current images.
        t, t_prev: LongTensors (B,) of timestep indices of ``schedule``, ``t_prev < t``; a negative
            ``t_prev`` means abar_prev = 1 (the last step, to x_0).
        eps: (B, C, H, W) the model's noise prediction eps_theta(x_t, t).
        eta: scales sigma_t (see :func:`ddim_sigma`): 0 is deterministic, 1 is DDPM's posterior variance.
        noise: (B, C, H, W) the N(0, I) draw used when eta > 0 (drawn with ``torch.randn_like`` if None).
        clip_denoised: clip x0_pred to [-1, 1], and then use the eps that takes that x0_pred to x_t.

    Returns:
        x_prev (B, C, H, W).
    """
    return _ddim_step(schedule, x_t, t, t_prev, eps, eta=eta, noise=noise, clip_denoised=clip_denoised)[0]


def check_eta(eta: float) -> float:
    """``eta`` as a float; ValueError unless it is a finite number >= 0."""
    eta = float(eta)
    if not eta >= 0 or eta == float("inf"):
        raise ValueError(f"eta must be a finite number >= 0, got {eta}")
    return eta


def _ddim_step(schedule: NoiseSchedule, x_t: Tensor, t: Tensor, t_prev: Tensor, eps: Tensor, *,
               eta: float, noise: Tensor | None, clip_denoised: bool) -> tuple[Tensor, Tensor]:
    """:func:`ddim_step`, also returning x0_pred."""
    eta = check_eta(eta)
    schedule._check_pair(x_t, t)
    if not isinstance(t_prev, Tensor) or t_prev.shape != t.shape or t_prev.is_floating_point():
        raise ValueError(f"t_prev must be an integer tensor shaped like t {tuple(t.shape)}")
    if t_prev.device.type == "cpu" and t.device.type == "cpu" and bool((t_prev >= t).any()):
        raise ValueError("every t_prev must be smaller than its t (DDIM steps go from noise to data)")
    if eps.shape != x_t.shape:
        raise ValueError(f"eps has shape {tuple(eps.shape)} but x_t has {tuple(x_t.shape)}")
    eps = eps.to(x_t.dtype)
    pred_x0 = schedule.predict_x0_from_eps(x_t, t, eps)                   # (B, C, H, W)
    if clip_denoised:
        pred_x0 = pred_x0.clamp(-1.0, 1.0)
        eps = schedule.predict_eps_from_x0(x_t, t, pred_x0)               # consistent with the clip
    abar_prev = _abar_pair(schedule, t, t_prev)[1]                         # (B,) float64
    sigma = ddim_sigma(schedule, t, t_prev, eta)                           # (B,)
    x_prev = _move(pred_x0, eps, abar_prev, (1 - abar_prev - sigma ** 2).clamp(min=0))
    if eta > 0:
        if noise is None:
            noise = torch.randn_like(x_t)
        elif noise.shape != x_t.shape:
            raise ValueError(f"noise has shape {tuple(noise.shape)} but x_t has {tuple(x_t.shape)}")
        x_prev = x_prev + _per_image(sigma, x_t) * noise
    return x_prev, pred_x0


def _abar_pair(schedule: NoiseSchedule, t: Tensor, t_prev: Tensor) -> tuple[Tensor, Tensor]:
    """alphas_cumprod at t and at t_prev (1 where t_prev < 0), float64 (B,) on the schedule's device."""
    abar = schedule.alphas_cumprod
    t_prev = t_prev.to(abar.device)
    abar_prev = torch.where(t_prev >= 0, abar[t_prev.clamp(min=0)], torch.ones_like(abar[:1]))
    return abar[t.to(abar.device)], abar_prev


def _per_image(coef: Tensor, like: Tensor) -> Tensor:
    """A float64 (B,) coefficient as (B, 1, 1, 1) in like's dtype."""
    return coef.to(like.dtype).reshape(-1, *([1] * (like.dim() - 1)))


def _move(x0: Tensor, eps: Tensor, abar: Tensor, noise_var: Tensor) -> Tensor:
    """sqrt(abar) x0 + sqrt(noise_var) eps: the point at noise level abar along the direction eps."""
    return _per_image(abar.sqrt(), x0) * x0 + _per_image(noise_var.sqrt(), x0) * eps


@torch.no_grad()
def ddim_sample(model: Model, schedule: NoiseSchedule, shape: Sequence[int], *, steps: int,
                eta: float = 0.0, seed: int | None = None, generator: torch.Generator | None = None,
                trajectory_steps: Sequence[int] | None = None, device: torch.device | str | None = None,
                chunk_size: int | None = None, clip_denoised: bool = True, x_T: Tensor | None = None,
                progress: bool = False, labels: Tensor | int | Sequence[int] | None = None,
                guidance: float = 1.0) -> Tensor | tuple[Tensor, Trajectory]:
    """Draw images with DDIM (Song et al. 2021) on ``steps`` evenly spaced timesteps of ``schedule``.

    The schedule is respaced to ``steps`` timesteps (``schedule.respace``, which keeps q(x_t | x_0) at
    each of them), then each step is :func:`ddim_step` from one kept timestep to the one before, the
    last to x_0. With eta = 0 the map from x_T to x_0 is deterministic; with eta = 1 it is DDPM's
    sampler with the posterior variance (``ddpm_sample(..., variance="posterior")``, same seed, same
    images up to rounding).

    Args:
        model, schedule, shape, seed / generator, device, chunk_size, clip_denoised, x_T, progress,
        labels, guidance: as for :func:`ddpm_sample`.
        steps: number of model calls, 1..T (the DDIM paper's S; T gives every timestep).
        eta: sigma_t scale (see :func:`ddim_sigma`), >= 0. One N(0, I) draw per step for the whole batch
            when eta > 0 (none at the last step, where sigma_t = 0).
        trajectory_steps: indices 0..steps-1 of the respaced schedule at which to keep x_t and x0_pred.

    Returns:
        The images (N, C, H, W) in [-1, 1] on ``device``; with ``trajectory_steps``, also the
        :class:`Trajectory`.
    """
    eta = check_eta(eta)
    setup = _prepare(model, schedule, shape, seed=seed, generator=generator, steps=steps,
                     trajectory_steps=trajectory_steps, device=device, chunk_size=chunk_size, x_T=x_T,
                     labels=labels, guidance=guidance)
    sched = setup.schedule

    def step(x: Tensor, t: Tensor, t_index: int) -> tuple[Tensor, Tensor]:
        eps = setup.eps_model(x, sched.timestep_map[t])                    # (N, C, H, W)
        noise = None
        if eta > 0 and t_index > 0:
            noise = torch.randn(x.shape, device=setup.device, generator=setup.generator)
        return _ddim_step(sched, x, t, t - 1, eps, eta=eta if noise is not None else 0.0, noise=noise,
                          clip_denoised=clip_denoised)

    return _run_reverse(setup, step, trajectory=trajectory_steps is not None, progress=progress,
                        desc="DDIM")


@torch.no_grad()
def ddim_invert(model: Model, schedule: NoiseSchedule, x0: Tensor, steps: int, *,
                device: torch.device | str | None = None, chunk_size: int | None = None,
                labels: Tensor | int | Sequence[int] | None = None, guidance: float = 1.0,
                progress: bool = False) -> Tensor:
    """Encode images x_0 into the x_T from which eta = 0 DDIM sampling gives them back.

    Runs the eta = 0 update backwards on the same ``steps`` respaced timesteps tau_1 < ... < tau_S:

        eps     = eps_theta(x_{tau_i}, tau_{i+1})
        x0_pred = (x_{tau_i} - sqrt(1 - abar_{tau_i}) eps) / sqrt(abar_{tau_i})
        x_{tau_{i+1}} = sqrt(abar_{tau_{i+1}}) x0_pred + sqrt(1 - abar_{tau_{i+1}}) eps

    starting from x_{tau_0} = x_0 (abar = 1). Sampling's step from tau_{i+1} back to tau_i uses
    eps_theta(x_{tau_{i+1}}, tau_{i+1}), at the end point that inversion is looking for; inversion uses
    the start point instead, told the end's timestep (as diffusers' DDIMInverseScheduler does). So the
    round trip is exact only as the steps shrink (both are Euler steps of one ODE, Song et al. 2021,
    sec. 4.3): its error falls roughly as 1 / steps. No clipping: this inverts
    ``ddim_sample(..., clip_denoised=False)``; sampling with clipping (the default) departs from that
    path wherever it clips, and its round trip stops improving after some tens of steps.

    Args:
        x0: (N, C, H, W) images in [-1, 1].
        steps: number of model calls, 1..T, as for :func:`ddim_sample`.
        device, chunk_size, labels, guidance, progress: as for :func:`ddpm_sample`.

    Returns:
        x_T (N, C, H, W) on ``device``, float32.
    """
    if x0.dim() != 4:
        raise ValueError(f"x0 must be images (N, C, H, W), got shape {tuple(x0.shape)}")
    setup = _prepare(model, schedule, x0.shape, seed=0, generator=None, steps=steps,
                     trajectory_steps=None, device=device, chunk_size=chunk_size, x_T=x0,
                     labels=labels, guidance=guidance)
    sched, x, n = setup.schedule, setup.x, x0.shape[0]
    abar = sched.alphas_cumprod
    for index in tqdm(range(sched.T), disable=not progress, desc="DDIM inversion", leave=False):
        t = torch.full((n,), index, device=setup.device, dtype=torch.long)  # the end's timestep
        eps = setup.eps_model(x, sched.timestep_map[t]).to(x.dtype)       # (N, C, H, W)
        abar_from = abar[index - 1] if index > 0 else torch.ones_like(abar[0])
        pred_x0 = (x - (1 - abar_from).sqrt().to(x.dtype) * eps) / abar_from.sqrt().to(x.dtype)
        to = abar[index].expand(n)                                         # (N,)
        x = _move(pred_x0, eps, to, 1 - to)
    return x.contiguous()


def slerp(z0: Tensor, z1: Tensor, weights: Tensor | Sequence[float]) -> Tensor:
    """Spherical interpolation between two noise tensors, each taken as one vector (Song et al. 2021, sec. 5.3).

        slerp(z0, z1, w) = sin((1 - w) theta) / sin(theta) z0 + sin(w theta) / sin(theta) z1,
        cos(theta) = <z0, z1> / (|z0| |z1|)

    Unlike the straight line (1 - w) z0 + w z1, whose midpoint between two independent N(0, I) draws has
    only about 0.71 of their norm, it keeps points at the norm a Gaussian draw has. ``z0``, ``z1``: any
    same shape S; ``weights``: K values in [0, 1]. Returns (K, *S), float32 (float64 inputs stay float64).
    """
    if z0.shape != z1.shape:
        raise ValueError(f"z0 {tuple(z0.shape)} and z1 {tuple(z1.shape)} must have the same shape")
    w = torch.as_tensor(weights, dtype=torch.float64).flatten()             # (K,)
    a, b = z0.double().flatten(), z1.double().flatten()
    theta = torch.arccos((a @ b / (a.norm() * b.norm())).clamp(-1.0, 1.0))
    if theta.item() < 1e-6:                                                 # parallel: the line is the arc
        c0, c1 = 1 - w, w
    else:
        c0, c1 = torch.sin((1 - w) * theta) / torch.sin(theta), torch.sin(w * theta) / torch.sin(theta)
    out = c0[:, None] * a + c1[:, None] * b                                 # (K, numel)
    dtype = z0.dtype if z0.dtype == torch.float64 else torch.float32
    return out.reshape(len(w), *z0.shape).to(dtype)


def _model_device(model: Model, schedule: NoiseSchedule) -> torch.device:
    """The device of the model's first parameter (the schedule's for a plain function)."""
    param = next(iter(getattr(model, "parameters", lambda: iter(()))()), None)
    return param.device if param is not None else schedule.device


def _channels_last(model: Model) -> bool:
    """True when the model's convolution weights are stored channels_last."""
    for p in getattr(model, "parameters", lambda: iter(()))():
        if p.dim() == 4:
            return p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
    return False
