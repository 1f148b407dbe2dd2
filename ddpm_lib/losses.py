"""Training loss and the terms of the variational bound (Ho et al. 2020, eq. 5 and 12-14).

    L_vlb = L_T + sum_{t>1} L_{t-1} + L_0
    L_T     = KL(q(x_T | x_0) || N(0, I))                            (the prior term; no parameters)
    L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t))    (Gaussian KLs in closed form)
    L_0     = -log p_theta(x_0 | x_1)                                (a discretized Gaussian decoder)
    L_simple = E_{t, x_0, eps} || eps - eps_theta(sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, t) ||^2

Terms are returned per example in bits per dimension: nats / (log(2) * C * H * W).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from .schedule import NoiseSchedule

Model = Callable[[Tensor, Tensor], Tensor]


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) per element, in nats (broadcasts)."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
                  + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def approx_standard_normal_cdf(x: Tensor) -> Tensor:
    """Phi(x) by the tanh approximation used by Ho et al.'s and improved-diffusion's code."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def discretized_gaussian_log_likelihood(x: Tensor, *, means: Tensor, log_scales: Tensor) -> Tensor:
    """log p(x) per element, for x in [-1, 1] on the 256 levels of 8-bit data (Ho et al. eq. 13).

    Each level is a bin of width 2/255; the edge bins extend to -inf and +inf. ``log_scales`` is the
    log of the standard deviation.
    """
    if x.shape != means.shape:
        raise ValueError(f"x {tuple(x.shape)} and means {tuple(means.shape)} must have the same shape")
    centered = x - means
    inv_std = torch.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_probs = torch.where(
        x < -0.999, log_cdf_plus,
        torch.where(x > 0.999, log_one_minus_cdf_min, torch.log((cdf_plus - cdf_min).clamp(min=1e-12))))
    return log_probs


def _mean_flat(x: Tensor) -> Tensor:
    """Mean over every dimension but the batch one: (B, ...) -> (B,)."""
    return x.flatten(1).mean(dim=1)


def check_x0(x0: Tensor) -> None:
    """ValueError naming ``x0`` unless it is a non-empty floating-point batch (B, C, H, W), not in [0, 255].

    Images still in [0, 255] (no negative value, some above 1) are refused on a CPU tensor only: on a GPU the
    check would wait for the device at every step (the Trainer checks its whole data set once instead, see
    :func:`ddpm_lib.data.check_images`). Other values outside [-1, 1] are allowed: Gaussian test inputs have them.
    """
    if not isinstance(x0, Tensor) or x0.ndim != 4 or not x0.is_floating_point():
        what = f"{x0.dtype} {tuple(x0.shape)}" if isinstance(x0, Tensor) else type(x0).__name__
        raise ValueError(f"x0 must be a float batch (B, C, H, W) in [-1, 1], got {what} (uint8 images: use "
                         "ddpm_lib.data.to_model_range)")
    if x0.shape[0] == 0:
        raise ValueError("x0 is an empty batch (B = 0); the loss of no images is undefined")
    if x0.device.type == "cpu" and bool(x0.amin() >= 0) and bool(x0.amax() > 1 + 1e-3):
        raise ValueError(f"x0 must lie in [-1, 1], got values from {float(x0.min()):g} to {float(x0.max()):g}, "
                         "like [0, 255] images: use ddpm_lib.data.to_model_range")


def ddpm_loss(model: Model, schedule: NoiseSchedule, x0: Tensor, *, t: Tensor | None = None,
              noise: Tensor | None = None, generator: torch.Generator | None = None,
              reduction: str = "mean", y: Tensor | None = None) -> Tensor:
    """L_simple: the mean squared error between the true noise and the model's prediction of it.

    x0: (B, C, H, W) in [-1, 1]. ``t`` (B,) is drawn uniformly from 0..T-1 and ``noise`` from N(0, I)
    when omitted (with ``generator`` if given). The error is computed in float32 whatever precision
    the model runs in. ``reduction="none"`` gives the per-example loss (B,). ``y`` (B,): class labels for
    a conditional model (see :class:`~ddpm_lib.unet.UNet`'s ``num_classes``).
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    check_x0(x0)
    batch = x0.shape[0]
    if t is None:
        t = torch.randint(0, schedule.T, (batch,), device=x0.device, generator=generator)
    if noise is None:
        noise = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
    x_t = schedule.q_sample(x0, t, noise)                                  # (B, C, H, W)
    timesteps = schedule.timestep_map[t]                                  # (B,) the model's own timesteps
    eps = model(x_t, timesteps) if y is None else model(x_t, timesteps, y)  # (B, C, H, W)
    per_example = _mean_flat((eps.float() - noise.float()) ** 2)           # (B,)
    return per_example.mean() if reduction == "mean" else per_example


def prior_bpd(schedule: NoiseSchedule, x0: Tensor) -> Tensor:
    """L_T in bits/dim: KL(q(x_T | x_0) || N(0, I)) per example, (B,). Tiny for a good schedule."""
    t = torch.full((x0.shape[0],), schedule.T - 1, device=x0.device, dtype=torch.long)
    mean, _, log_variance = schedule.q_mean_variance(x0, t)
    kl = normal_kl(mean, log_variance.expand_as(mean), torch.zeros_like(mean), torch.zeros_like(mean))
    return _mean_flat(kl) / math.log(2.0)


def vlb_terms(model: Model, schedule: NoiseSchedule, x0: Tensor, t: Tensor, *, noise: Tensor | None = None,
              variance: str = "beta", clip_denoised: bool = False) -> dict[str, Tensor]:
    """The term of the bound at timestep index ``t``, in bits/dim, per example.

    For t = 0 (the paper's t = 1) that is L_0, the decoder's negative log-likelihood of the 8-bit
    data; for t > 0 it is L_{t}, the KL between q(x_t | x_{t+1}, x_0) and the model's reverse step
    (code index t; the paper's L_{t-1} with its t one larger). x_t is drawn from q(x_t | x_0).
    Returns ``{"term": (B,), "pred_x0": (B, C, H, W), "x_t": (B, C, H, W)}``.
    """
    x_t = schedule.q_sample(x0, t, noise)
    true_mean, _, true_log_variance = schedule.q_posterior(x0, x_t, t)
    out = schedule.p_mean_variance(model, x_t, t, variance=variance, clip_denoised=clip_denoised)
    kl = _mean_flat(normal_kl(true_mean, true_log_variance.expand_as(true_mean),
                              out["mean"], out["log_variance"].expand_as(true_mean))) / math.log(2.0)
    nll = -_mean_flat(discretized_gaussian_log_likelihood(
        x0, means=out["mean"], log_scales=0.5 * out["log_variance"].expand_as(x0))) / math.log(2.0)
    return {"term": torch.where(t == 0, nll, kl), "pred_x0": out["pred_x0"], "x_t": x_t}


def geometric_timesteps(n: int, T: int) -> Tensor:
    """``n`` sorted code indices from 0 to T-1: 0, then roughly log-spaced over 1..T-1 (every one when n >= T).

    The terms of the bound fall by orders of magnitude over the first steps and slowly after, so points
    spaced this way follow them where they change.
    """
    if n < 2 or T < 2:
        raise ValueError(f"need n >= 2 and T >= 2, got n={n}, T={T}")
    if n >= T:
        return torch.arange(T)
    ts = [0]
    for i, v in enumerate(torch.logspace(0, math.log10(T - 1), n - 1, dtype=torch.float64).tolist()):
        remaining = n - 1 - i                                              # points still to place, this one included
        ts.append(min(max(round(v), ts[-1] + 1), T - remaining))
    return torch.tensor(ts)


@torch.no_grad()
def bits_per_dim(model: Model, schedule: NoiseSchedule, x0: Tensor, *, timesteps: Tensor | int | None = None,
                 variance: str = "beta", generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """Negative log-likelihood bound in bits/dim: L_T + the decoder term + the T-1 KL terms.

    ``timesteps`` chooses which terms are computed:

    * ``None``: all T of them (T forward passes per batch), the exact bound;
    * an integer n: a **stratified estimate**, unbiased for the exact bound: the decoder term, and one
      timestep drawn uniformly at random (from ``generator``) in each of n-1 strata of 1..T-1 whose
      edges are :func:`geometric_timesteps`, weighted by the stratum's length. n >= T gives the exact bound;
    * a sorted tensor of indices starting at 0: a deterministic rule, each KL term standing for the run
      of timesteps from it to the next index (the first from index 1). It is biased wherever the
      terms change quickly within a run; prefer the integer form.

    x0: (B, C, H, W) in [-1, 1]. Returns ``{"bpd": (B,), "terms": (B, S) the terms computed,
    "timesteps": (S,) their indices, "weights": (S,) how many timesteps each stands for, "prior": (B,)}``.
    """
    device = x0.device
    T = schedule.T
    if timesteps is None or (isinstance(timesteps, int) and timesteps >= T):
        ts, weights = torch.arange(T), torch.ones(T)
    elif isinstance(timesteps, int):
        edges = torch.cat([geometric_timesteps(timesteps, T), torch.tensor([T])])   # 0 | strata of 1..T-1 | T
        lo, hi = edges[1:-1], edges[2:]
        u = torch.rand(len(lo), generator=generator, dtype=torch.float64,
                       device=generator.device if generator is not None else "cpu").cpu()
        drawn = lo + (u * (hi - lo)).long().clamp(max=(hi - lo - 1))
        ts = torch.cat([torch.tensor([0]), drawn])
        weights = torch.cat([torch.tensor([1.0]), (hi - lo).double()]).float()
    else:
        ts = torch.as_tensor(timesteps, dtype=torch.long).cpu()
        if ts.numel() < 2 or int(ts[0]) != 0 or bool((ts[1:] <= ts[:-1]).any()) or int(ts[-1]) >= T:
            raise ValueError("timesteps must be sorted, distinct, start at 0, hold at least two and stay below T")
        # Runs [1, k2), [k2, k3), ..., [k_last, T) for the KL terms; 1 for the decoder term.
        bounds = torch.cat([torch.tensor([0, 1]), ts[2:], torch.tensor([T])])
        weights = torch.diff(bounds).float()
    weights = weights.to(device)
    batch = x0.shape[0]
    terms = []
    for t_index in ts.tolist():
        t = torch.full((batch,), t_index, device=device, dtype=torch.long)
        noise = torch.randn(x0.shape, device=device, dtype=x0.dtype, generator=generator)
        terms.append(vlb_terms(model, schedule, x0, t, noise=noise, variance=variance)["term"])
    terms_t = torch.stack(terms, dim=1)                                    # (B, S)
    prior = prior_bpd(schedule, x0)
    return {"bpd": (terms_t * weights).sum(dim=1) + prior, "terms": terms_t, "timesteps": ts,
            "weights": weights, "prior": prior}
