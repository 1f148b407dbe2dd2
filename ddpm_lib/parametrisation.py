"""One quantity in three coordinates: what a denoiser may predict (eps, x_0 or v) and the SNR.

Given x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, any one of eps, x_0 and the velocity
v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0 (Salimans & Ho 2022) determines the other two. These
conversions are methods of :class:`~ddpm_lib.schedule.NoiseSchedule` (through this mixin), named as in
improved-diffusion; they read the schedule's float64 coefficients and its ``_extract`` / ``_check_pair``.
"""

from __future__ import annotations

from torch import Tensor


class Parametrisations:
    """eps <-> x_0 <-> v conversions and the SNR, for a schedule's coefficients (see NoiseSchedule)."""

    def predict_x0_from_eps(self, x_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """Invert q_sample: x_0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)."""
        return self._combine(t, (self.sqrt_recip_alphas_cumprod, x_t), (-self.sqrt_recipm1_alphas_cumprod, eps))

    def predict_eps_from_x0(self, x_t: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        """The noise that takes x_0 to x_t: eps = (x_t / sqrt(abar_t) - x_0) / sqrt(1/abar_t - 1)."""
        self._check_pair(x_t, t)
        return ((self._extract(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - x0)
                / self._extract(self.sqrt_recipm1_alphas_cumprod, t, x_t))

    def velocity(self, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """The v-prediction target (Salimans & Ho 2022): v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0.

        With x_t = cos(phi) x_0 + sin(phi) eps, where cos(phi) = sqrt(abar_t), v = dx_t / dphi.
        """
        return self._combine(t, (-self.sqrt_one_minus_alphas_cumprod, x0), (self.sqrt_alphas_cumprod, eps))

    def predict_x0_from_v(self, x_t: Tensor, t: Tensor, v: Tensor) -> Tensor:
        """x_0 = sqrt(abar_t) x_t - sqrt(1 - abar_t) v (a rotation back by the angle phi)."""
        return self._combine(t, (self.sqrt_alphas_cumprod, x_t), (-self.sqrt_one_minus_alphas_cumprod, v))

    def predict_eps_from_v(self, x_t: Tensor, t: Tensor, v: Tensor) -> Tensor:
        """eps = sqrt(1 - abar_t) x_t + sqrt(abar_t) v."""
        return self._combine(t, (self.sqrt_one_minus_alphas_cumprod, x_t), (self.sqrt_alphas_cumprod, v))

    def _combine(self, t: Tensor, first: tuple[Tensor, Tensor], second: tuple[Tensor, Tensor]) -> Tensor:
        """c_t x + d_t y for ``first = (c, x)`` and ``second = (d, y)``: c and d are (T,) coefficients read
        at t (one per image) and broadcast over x's (B, C, H, W)."""
        (c, x), (d, y) = first, second
        self._check_pair(x, t)
        return self._extract(c, t, x) * x + self._extract(d, t, x) * y

    def snr(self, t: Tensor) -> Tensor:
        """Signal-to-noise ratio of q(x_t | x_0): abar_t / (1 - abar_t), float64, shape (B,)."""
        self.check_t(t)
        abar = self.alphas_cumprod[t.to(self.device)]
        return abar / (1.0 - abar)
