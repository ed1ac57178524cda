"""Variance-exploding processes: ``alpha = 1``.

References: Song et al. 2021 (VE SDE, ``sigma(t) = sigma_min (sigma_max/sigma_min)^t``, eq. 9);
Karras et al. 2022 ("Elucidating the Design Space of Diffusion-Based Generative Models",
EDM: ``sigma(t) = t``, Table 1).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from polydiff.core.processes.gaussian import GaussianProcess
from polydiff.core.shapes import time_tensor

__all__ = ["VE", "EDM"]



class _AlphaOne(GaussianProcess):
    def alpha(self, t: Tensor) -> Tensor:
        return torch.ones_like(time_tensor(t))

    def d_alpha(self, t: Tensor) -> Tensor:
        return torch.zeros_like(time_tensor(t))

    def f(self, t: Tensor) -> Tensor:
        return torch.zeros_like(time_tensor(t))

    def sigma_tilde(self, t: Tensor) -> Tensor:
        return self.sigma(t)


class VE(_AlphaOne):
    """VE SDE with geometric noise levels (Song et al. 2021, eq. 9 / NCSN)."""

    t_zero = None

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, t_min: float = 1e-5):
        self.sigma_min, self.sigma_max, self.t_min = float(sigma_min), float(sigma_max), t_min
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)

    def sigma(self, t: Tensor) -> Tensor:
        return self.sigma_min * torch.exp(time_tensor(t) * self._log_ratio)

    def d_sigma(self, t: Tensor) -> Tensor:
        return self.sigma(t) * self._log_ratio

    def g2(self, t: Tensor) -> Tensor:
        s = self.sigma(t)
        return 2.0 * s * s * self._log_ratio

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        return (-0.5 * time_tensor(lam) - math.log(self.sigma_min)) / self._log_ratio


class EDM(_AlphaOne):
    """EDM's process (Karras et al. 2022): ``alpha = 1``, ``sigma(t) = t``, on
    ``[sigma_min, sigma_max] = [0.002, 80]``."""

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0, sigma_data: float = 0.5):
        self.t_min, self.t_max, self.sigma_data = float(sigma_min), float(sigma_max), sigma_data

    def sigma(self, t: Tensor) -> Tensor:
        return time_tensor(t) * 1.0

    def d_sigma(self, t: Tensor) -> Tensor:
        return torch.ones_like(time_tensor(t))

    def g2(self, t: Tensor) -> Tensor:
        return 2.0 * time_tensor(t)

    def log_snr(self, t: Tensor) -> Tensor:
        return -2.0 * torch.log(time_tensor(t))

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        return torch.exp(-0.5 * time_tensor(lam))
