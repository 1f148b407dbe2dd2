"""The fixed forward process of DDPM and every coefficient derived from it.

Notation follows Ho et al. (2020), "Denoising Diffusion Probabilistic Models", and the names of
openai/improved-diffusion, so the paper can be read beside the code:

    q(x_t | x_{t-1}) = N(sqrt(alpha_t) x_{t-1}, beta_t I),          alpha_t = 1 - beta_t
    q(x_t | x_0)     = N(sqrt(alphas_cumprod_t) x_0, (1 - alphas_cumprod_t) I)
    q(x_{t-1} | x_t, x_0) = N(posterior_mean, posterior_variance I)

Indexing: the code's timestep index ``t`` runs over ``0 .. T-1``; index ``t`` is the paper's step
``t + 1``. So ``betas[0]`` is the paper's beta_1 and ``q_sample(x0, t=0)`` is one step of noise.

All coefficients are computed once in float64 (as improved-diffusion does) and cast to the dtype of
the tensor they multiply when used.
"""

from __future__ import annotations

import copy
import math
from typing import Callable

import torch
from torch import Tensor

from .parametrisation import Parametrisations

VARIANCES = ("beta", "posterior")                                          # see model_variance
SCHEDULES = ("linear", "cosine")                                           # see from_name
MAX_TIMESTEPS = 100_000                                                    # T beyond this is a mistake, not a model


def linear_betas(T: int, beta_start: float, beta_end: float) -> Tensor:
    """beta_t rising linearly from beta_start to beta_end over T steps (Ho et al. 2020)."""
    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Betas whose alphas_cumprod follow f(t)/f(0), f(t) = cos^2(((t/T + s)/(1 + s)) * pi/2).

    Nichol & Dhariwal (2021), eq. 17; beta_t = 1 - abar_t / abar_{t-1}, clipped at ``max_beta``.
    """
    steps = torch.arange(T + 1, dtype=torch.float64)
    f = torch.cos(((steps / T + s) / (1 + s)) * math.pi / 2) ** 2
    abar = f / f[0]
    return (1 - abar[1:] / abar[:-1]).clamp(max=max_beta)


class ScheduleRecord:
    """How a schedule is written down (in a checkpoint) and read back, and when two are the same; a part of
    :class:`NoiseSchedule`."""

    def to_config(self) -> dict:
        """A plain dict that :meth:`from_config` turns back into this schedule (saved in checkpoints)."""
        cfg = {"kind": self.kind, **self.params}
        if self.kind == "custom":
            cfg["betas"] = self.betas.tolist()
        timestep_map = self.timestep_map.cpu()                             # the schedule may live on a GPU
        if not torch.equal(timestep_map, torch.arange(self.T)):
            cfg["timestep_map"] = timestep_map.tolist()
        return cfg

    @classmethod
    def from_config(cls, cfg: dict) -> "NoiseSchedule":
        cfg = dict(cfg)
        kind = cfg.pop("kind", None)
        timestep_map = cfg.pop("timestep_map", None)
        if kind == "linear":
            sched = cls.linear(**cfg)
        elif kind == "cosine":
            sched = cls.cosine(**cfg)
        elif kind == "respaced":
            return cls.from_config(cfg["from"]).respace(cfg["steps"])
        elif kind == "custom":
            sched = cls(cfg.pop("betas"), kind=kind, params=cfg)
        else:
            raise ValueError(f"not a noise-schedule config (kind={kind!r})")
        if timestep_map is not None:
            sched.timestep_map = torch.as_tensor(timestep_map, dtype=torch.long)
        return sched

    def same_as(self, other: "NoiseSchedule") -> bool:
        """True when both schedules have the same betas (to 1e-12) and timestep map."""
        return (self.T == other.T and torch.allclose(self.betas, other.betas.to(self.betas.device), rtol=0, atol=1e-12)
                and torch.equal(self.timestep_map.cpu(), other.timestep_map.cpu()))


class NoiseSchedule(ScheduleRecord, Parametrisations):
    """beta_1..beta_T and the forward-process quantities of DDPM, with the maths that uses them.

    Build one with :meth:`linear` or :meth:`cosine` (or from raw ``betas``). ``t`` arguments are
    LongTensors of shape (B,) with values in ``0 .. T-1`` (see the module docstring). The conversions
    between the eps-, x_0- and v-parametrisations and the SNR come from :class:`Parametrisations`; its record
    (``to_config``, ``from_config``, ``same_as``) from :class:`ScheduleRecord`.
    """

    def __init__(self, betas: Tensor, *, kind: str = "custom", params: dict | None = None,
                 timestep_map: Tensor | None = None):
        betas = torch.as_tensor(betas, dtype=torch.float64).flatten()
        if betas.numel() < 1:
            raise ValueError("a noise schedule needs at least one beta")
        if not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError("every beta must lie in (0, 1): a beta of 1 makes alphas_cumprod 0 and the "
                             "coefficients that divide by it infinite")
        if betas.numel() > MAX_TIMESTEPS:
            raise ValueError(f"a noise schedule has at most {MAX_TIMESTEPS} steps, got {betas.numel()}")
        self.kind = kind
        self.params = dict(params or {})
        self.T = int(betas.numel())
        # The model's own timestep for each index of this schedule; the identity unless respaced.
        self.timestep_map = (torch.arange(self.T) if timestep_map is None
                             else torch.as_tensor(timestep_map, dtype=torch.long))

        self.betas = betas                                                   # (T,)
        self.alphas = 1.0 - betas                                            # (T,)
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)              # (T,) abar_t
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64),
                                              self.alphas_cumprod[:-1]])     # (T,) abar_{t-1}
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - self.alphas_cumprod).sqrt()
        self.log_one_minus_alphas_cumprod = torch.log1p(-self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = (1.0 / self.alphas_cumprod).sqrt()
        self.sqrt_recipm1_alphas_cumprod = (1.0 / self.alphas_cumprod - 1.0).sqrt()

        # q(x_{t-1} | x_t, x_0): Ho et al. eq. 6-7.
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # posterior_variance[0] is 0 (x_0 is known exactly given x_1 and x_0); clip the log there.
        pv1 = self.posterior_variance[1] if self.T > 1 else betas[0]
        self.posterior_log_variance_clipped = torch.log(
            torch.cat([pv1.reshape(1), self.posterior_variance[1:]]))
        self.posterior_mean_coef1 = betas * self.alphas_cumprod_prev.sqrt() / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * self.alphas.sqrt() / (1.0 - self.alphas_cumprod)
        self._check_finite()

    def _check_finite(self) -> None:
        """Raise ValueError when a coefficient is infinite or NaN (alphas_cumprod fell to 0: betas too large)."""
        for name, value in vars(self).items():
            if isinstance(value, Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
                raise ValueError(f"these betas make {name} infinite or NaN (alphas_cumprod falls to "
                                 f"{float(self.alphas_cumprod[-1]):.3g}); use smaller betas or fewer steps")

    # ------------------------------------------------------------------ constructors
    @classmethod
    def linear(cls, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> "NoiseSchedule":
        """Ho et al.'s schedule: betas linear from 1e-4 to 0.02 over T = 1000 steps."""
        _check_T(T)
        if not 0 < beta_start <= beta_end < 1:
            raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start} and {beta_end}")
        return cls(linear_betas(T, beta_start, beta_end), kind="linear",
                   params={"T": T, "beta_start": beta_start, "beta_end": beta_end})

    @classmethod
    def cosine(cls, T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> "NoiseSchedule":
        """Nichol & Dhariwal's cosine schedule (improved DDPM, eq. 17), betas clipped at 0.999."""
        _check_T(T)
        if not 0 < max_beta < 1 or not 0 <= s < 1:
            raise ValueError(f"need 0 < max_beta < 1 and 0 <= s < 1, got max_beta={max_beta} and s={s}")
        return cls(cosine_betas(T, s, max_beta), kind="cosine", params={"T": T, "s": s, "max_beta": max_beta})

    @classmethod
    def from_name(cls, name: str, T: int = 1000) -> "NoiseSchedule":
        """``"linear"`` or ``"cosine"`` with their default parameters and ``T`` steps."""
        if name not in SCHEDULES:
            raise ValueError(f"unknown noise schedule {name!r}; choose one of {list(SCHEDULES)}")
        return getattr(cls, name)(T=T)

    def to(self, device: torch.device | str) -> "NoiseSchedule":
        """This schedule with every coefficient tensor on ``device``, as torch's ``Tensor.to``.

        Returns ``self`` when it is already there, else a new schedule; the original is left where it was.
        """
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if self.device == device:
            return self
        moved = copy.copy(self)
        for name, value in vars(self).items():
            if isinstance(value, Tensor):
                setattr(moved, name, value.to(device))
        moved.params = copy.deepcopy(self.params)
        return moved

    @property
    def device(self) -> torch.device:
        return self.betas.device

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in self.params.items() if k != "betas")
        return f"NoiseSchedule.{self.kind}({params})"

    def respace(self, steps: int) -> "NoiseSchedule":
        """A shorter schedule that visits ``steps`` evenly spaced timesteps of this one.

        The kept timesteps keep their alphas_cumprod, so q(x_t | x_0) is unchanged at each of them, and
        new betas are derived from consecutive kept alphas_cumprod (Nichol & Dhariwal 2021, sec. 4).
        ``timestep_map`` records the original timestep that the model is conditioned on.
        """
        if not isinstance(steps, int) or not 1 <= steps <= self.T:
            raise ValueError(f"steps must be an integer in 1..{self.T}, got {steps!r}")
        if steps == self.T:
            return self
        keep = torch.round(torch.linspace(0, self.T - 1, steps, dtype=torch.float64)).long()
        abar = self.alphas_cumprod.cpu()[keep]
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        betas = (1 - abar / abar_prev).clamp(max=0.999)
        sched = NoiseSchedule(betas, kind="respaced",
                              params={"from": self.to_config(), "steps": steps},
                              timestep_map=self.timestep_map.cpu()[keep])
        return sched.to(self.device)

    # ------------------------------------------------------------------ helpers
    def check_t(self, t: Tensor, batch: int | None = None) -> None:
        """Raise ValueError unless ``t`` is an integer tensor of shape (B,) with values in 0..T-1."""
        if not isinstance(t, Tensor) or t.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise ValueError(f"t must be an integer tensor of shape (B,), got {type(t).__name__}"
                             + (f" of dtype {t.dtype}" if isinstance(t, Tensor) else ""))
        if t.dim() != 1 or (batch is not None and t.shape[0] != batch):
            raise ValueError(f"t must have shape ({batch if batch is not None else 'B'},), got {tuple(t.shape)}")
        # The range check reads values on the host; skip it for device tensors so that the training
        # and sampling loops never wait on the GPU (there an out-of-range t is a device-side assert).
        if t.numel() and t.device.type == "cpu" and (int(t.min()) < 0 or int(t.max()) >= self.T):
            raise ValueError(f"t must lie in 0..{self.T - 1}, got values from {int(t.min())} to {int(t.max())}")

    def _extract(self, coef: Tensor, t: Tensor, like: Tensor) -> Tensor:
        """coef[t] shaped (B, 1, 1, 1) (one 1 per extra dim of ``like``) in like's dtype and device."""
        if t.device != coef.device:
            raise ValueError(f"t is on {t.device} but the schedule is on {coef.device}; call schedule.to(device)")
        out = coef[t].to(like.dtype if like.is_floating_point() else torch.float32)
        return out.reshape(t.shape[0], *([1] * (like.dim() - 1)))

    def _check_pair(self, x: Tensor, t: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected a batch of images (B, C, H, W), got shape {tuple(x.shape)}")
        self.check_t(t, batch=x.shape[0])
        if x.device != self.device:
            raise ValueError(f"images are on {x.device} but the schedule is on {self.device}; call schedule.to(device)")

    # ------------------------------------------------------------------ forward process
    def q_mean_variance(self, x0: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Mean, variance and log-variance of q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)."""
        self._check_pair(x0, t)
        mean = self._extract(self.sqrt_alphas_cumprod, t, x0) * x0
        variance = self._extract(1.0 - self.alphas_cumprod, t, x0)
        log_variance = self._extract(self.log_one_minus_alphas_cumprod, t, x0)
        return mean, variance, log_variance

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor | None = None) -> Tensor:
        """Draw x_t ~ q(x_t | x_0): sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps (Ho et al. eq. 4).

        x0: (B, C, H, W); t: (B,); noise: like x0, standard normal (drawn if omitted).
        """
        self._check_pair(x0, t)
        if noise is None:
            noise = torch.randn_like(x0)
        elif noise.shape != x0.shape:
            raise ValueError(f"noise has shape {tuple(noise.shape)} but x0 has {tuple(x0.shape)}")
        return (self._extract(self.sqrt_alphas_cumprod, t, x0) * x0
                + self._extract(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise)

    def q_step(self, x_prev: Tensor, t: Tensor, noise: Tensor | None = None) -> Tensor:
        """One step of the chain: x_t ~ q(x_t | x_{t-1}) = N(sqrt(alpha_t) x_{t-1}, beta_t I)."""
        self._check_pair(x_prev, t)
        if noise is None:
            noise = torch.randn_like(x_prev)
        return (self._extract(self.alphas.sqrt(), t, x_prev) * x_prev
                + self._extract(self.betas.sqrt(), t, x_prev) * noise)

    def q_posterior(self, x0: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0) (Ho et al. eq. 6-7).

        mean = coef1_t x_0 + coef2_t x_t, variance = beta_t (1 - abar_{t-1}) / (1 - abar_t).
        Shapes: x0, x_t (B, C, H, W); t (B,); returns (B, C, H, W), (B, 1, 1, 1), (B, 1, 1, 1).
        """
        if x0.shape != x_t.shape:
            raise ValueError(f"x0 {tuple(x0.shape)} and x_t {tuple(x_t.shape)} must have the same shape")
        self._check_pair(x_t, t)
        mean = (self._extract(self.posterior_mean_coef1, t, x_t) * x0
                + self._extract(self.posterior_mean_coef2, t, x_t) * x_t)
        variance = self._extract(self.posterior_variance, t, x_t)
        log_variance = self._extract(self.posterior_log_variance_clipped, t, x_t)
        return mean, variance, log_variance

    # ------------------------------------------------------------------ reverse process
    def model_variance(self, variance: str) -> tuple[Tensor, Tensor]:
        """sigma_t^2 and its log for the reverse process, per timestep (T,), float64.

        ``"beta"``: sigma_t^2 = beta_t (Ho et al.'s "fixed large"; diffusers' ``fixed_large``), with the
        posterior variance at t = 0 as improved-diffusion does, so the decoder's variance stays small.
        ``"posterior"``: sigma_t^2 = beta~_t, the variance of q(x_{t-1} | x_t, x_0) ("fixed small").
        Both are optimal in a limit (Ho et al. sec. 3.2): beta_t for x_0 ~ N(0, I), beta~_t for a point mass.
        """
        if variance == "beta":
            var = torch.cat([self.posterior_variance[1:2] if self.T > 1 else self.betas[:1], self.betas[1:]])
            return var, torch.log(var)
        if variance == "posterior":
            return self.posterior_variance, self.posterior_log_variance_clipped
        raise ValueError(f"variance must be one of {VARIANCES}, got {variance!r}")

    def p_mean_variance(self, model: Callable[[Tensor, Tensor], Tensor], x_t: Tensor, t: Tensor, *,
                        variance: str = "beta", clip_denoised: bool = True) -> dict[str, Tensor]:
        """The reverse step p_theta(x_{t-1} | x_t) of an eps-predicting model.

        eps = model(x_t, timestep_map[t]); pred_x0 from eps (clipped to [-1, 1] if ``clip_denoised``);
        mean = the posterior mean given pred_x0 (equal to Ho et al. eq. 11 when unclipped); variance
        from :meth:`model_variance`. Returns a dict of ``mean``, ``variance``, ``log_variance``,
        ``pred_x0`` and ``eps``; tensors are (B, C, H, W) or (B, 1, 1, 1) for the variances.
        """
        self._check_pair(x_t, t)
        eps = model(x_t, self.timestep_map[t])
        if eps.shape != x_t.shape:
            raise ValueError(f"the model returned shape {tuple(eps.shape)} for input {tuple(x_t.shape)}")
        eps = eps.to(x_t.dtype)
        pred_x0 = self.predict_x0_from_eps(x_t, t, eps)
        if clip_denoised:
            pred_x0 = pred_x0.clamp(-1.0, 1.0)
        mean, _, _ = self.q_posterior(pred_x0, x_t, t)
        var, log_var = self.model_variance(variance)
        return {"mean": mean, "variance": self._extract(var, t, x_t),
                "log_variance": self._extract(log_var, t, x_t), "pred_x0": pred_x0, "eps": eps}


def _check_T(T: int) -> None:
    if isinstance(T, bool) or not isinstance(T, int) or not 1 <= T <= MAX_TIMESTEPS:
        raise ValueError(f"T must be an integer from 1 to {MAX_TIMESTEPS}, got {T!r}")
