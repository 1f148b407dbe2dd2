"""Ancestral sampling from a trained eps-model (Ho et al. 2020, Algorithm 2).

    x_T ~ N(0, I);  for t = T..1:  x_{t-1} = mu_theta(x_t, t) + sigma_t z,  z ~ N(0, I)  (z = 0 at t = 1)

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
    """``labels`` as a LongTensor (n,) on the CPU (an int repeats), after checking the model takes them."""
    if labels is None:
        return None
    num_classes = getattr(model, "num_classes", None)
    if num_classes is None:
        raise ValueError("labels were given but the model is unconditional (it has no num_classes)")
    y = torch.as_tensor(labels).cpu()
    if y.is_floating_point() or y.dtype == torch.bool:
        raise ValueError(f"labels must be integers, got {y.dtype}")
    y = y.long().expand(n).clone() if y.dim() == 0 else y.long()
    if tuple(y.shape) != (n,):
        raise ValueError(f"labels must be one integer or {n} of them, got shape {tuple(y.shape)}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}, got values from {int(y.min())} to {int(y.max())}")
    return y


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


def make_generator(seed: int | None, device: torch.device) -> torch.Generator:
    """A torch.Generator on ``device`` seeded with ``seed`` (a random seed when None)."""
    gen = torch.Generator(device=device)
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(int(seed))
    return gen


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
    shape = check_shape(shape)
    if device is None:
        param = next(iter(getattr(model, "parameters", lambda: iter(()))()), None)
        device = param.device if param is not None else schedule.device
    device = torch.device(device)
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
    n = shape[0]
    labels = check_labels(labels, n, model)
    memory_format = torch.channels_last if _channels_last(model) else torch.contiguous_format
    if x_T is None:
        x = torch.randn(shape, device=device, generator=generator)
    else:
        if tuple(x_T.shape) != shape:
            raise ValueError(f"x_T has shape {tuple(x_T.shape)}, expected {shape}")
        if not bool(torch.isfinite(x_T).all()):
            raise ValueError("x_T contains NaN or infinite values")
        x = x_T.to(device=device, dtype=torch.float32).clone()
    x = x.contiguous(memory_format=memory_format)
    kept_x, kept_x0 = [], []
    for t_index in tqdm(range(schedule.T - 1, -1, -1), disable=not progress, desc="sampling", leave=False):
        t = torch.full((n,), t_index, device=device, dtype=torch.long)
        means, log_vars, x0s = [], [], []
        for start in range(0, n, chunk):
            eps_model = guided(model, None if labels is None else labels[start:start + chunk], guidance)
            out = schedule.p_mean_variance(eps_model, x[start:start + chunk], t[start:start + chunk],
                                           variance=variance, clip_denoised=clip_denoised)
            means.append(out["mean"])
            log_vars.append(out["log_variance"])
            x0s.append(out["pred_x0"])
        if t_index in keep:
            kept_x.append(x.clone())
            kept_x0.append(torch.cat(x0s))
        mean, log_var = torch.cat(means), torch.cat(log_vars)              # (N, C, H, W), (N, 1, 1, 1)
        if t_index > 0:
            noise = torch.randn(shape, device=device, generator=generator)
            x = mean + torch.exp(0.5 * log_var) * noise
        else:
            x = mean                                                       # no noise at the last step
    images = x.clamp(-1.0, 1.0).contiguous()
    if trajectory_steps is None:
        return images
    trajectory = Trajectory(steps=keep, x_t=torch.stack(kept_x).cpu().contiguous(),
                            pred_x0=torch.stack(kept_x0).cpu().contiguous())
    return images, trajectory


def _channels_last(model: Model) -> bool:
    """True when the model's convolution weights are stored channels_last."""
    for p in getattr(model, "parameters", lambda: iter(()))():
        if p.dim() == 4:
            return p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
    return False
