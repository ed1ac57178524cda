"""The mean-reverting Ornstein-Uhlenbeck process with variance exploding diffusion (OUVE).

Richter, Welker, Lemercier, Lay, Gerkmann 2023, "Speech Enhancement and Dereverberation with
Diffusion-based Generative Models" (SGMSE+), eq. 7-9:
``dx = theta (y - x) dt + sigma_min (sigma_max/sigma_min)^t sqrt(2 log(sigma_max/sigma_min)) dw``.
The mean moves from the clean ``x0`` toward the noisy condition ``y``; the prior is centred on
``y``. Complex-valued data (spectrograms) are allowed: noise is complex standard normal.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from polydiff.core.processes.gaussian import GaussianProcess
from polydiff.core.shapes import time_tensor

__all__ = ["OUVE"]



class OUVE(GaussianProcess):
    """OUVE SDE, written as ``x_t = y + alpha (x0 - y) + sigma eps`` with
    ``alpha = exp(-theta t)`` and
    ``sigma^2 = sigma_min^2 (e^{2 L t} - e^{-2 theta t}) L / (theta + L)``,
    ``L = log(sigma_max / sigma_min)`` (closed-form mean and std, Richter et al. 2023 eq. 9-10).
    """

    center_key = "y"

    def __init__(self, theta: float = 1.5, sigma_min: float = 0.05, sigma_max: float = 0.5,
                 t_eps: float = 0.03, t_max: float = 1.0):
        self.theta, self.sigma_min = float(theta), float(sigma_min)
        self.sigma_max = float(sigma_max)
        self.t_min, self.t_max = float(t_eps), float(t_max)
        self._L = math.log(self.sigma_max / self.sigma_min)
        self._k = self.sigma_min**2 * self._L / (self.theta + self._L)

    def alpha(self, t: Tensor) -> Tensor:
        return torch.exp(-self.theta * time_tensor(t))

    def d_alpha(self, t: Tensor) -> Tensor:
        return -self.theta * self.alpha(t)

    def f(self, t: Tensor) -> Tensor:
        return torch.full_like(time_tensor(t), -self.theta)

    def _var(self, t: Tensor) -> Tensor:
        t = time_tensor(t)
        # e^{2Lt} - e^{-2 theta t} = e^{-2 theta t} expm1(2 (L + theta) t): exact near t = 0
        growth = torch.expm1(2 * (self._L + self.theta) * t)
        return self._k * torch.exp(-2 * self.theta * t) * growth

    def sigma(self, t: Tensor) -> Tensor:
        return torch.sqrt(self._var(t))

    def d_sigma(self, t: Tensor) -> Tensor:
        t = time_tensor(t)
        dvar = self._k * (2 * self._L * torch.exp(2 * self._L * t)
                          + 2 * self.theta * torch.exp(-2 * self.theta * t))
        return dvar / (2 * self.sigma(t))

    def g2(self, t: Tensor) -> Tensor:
        return 2 * self._L * self.sigma_min**2 * torch.exp(2 * self._L * time_tensor(t))
