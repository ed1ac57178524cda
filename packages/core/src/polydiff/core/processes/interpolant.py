"""Stochastic interpolants / flow matching as Gaussian processes.

``x_t = alpha(t) x0 + sigma(t) eps`` with the rectified-flow line ``alpha = 1 - t``,
``sigma = t`` (Liu et al. 2023, "Flow Straight and Fast"; Lipman et al. 2023, "Flow Matching")
or the trigonometric interpolant ``alpha = cos(pi t / 2)``, ``sigma = sin(pi t / 2)``
(Albergo & Vanden-Eijnden 2023, "Building Normalizing Flows with Stochastic Interpolants").
Their velocity ``alpha' x0 + sigma' eps`` is the "flow" parameterization.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from polydiff.core.processes.gaussian import GaussianProcess
from polydiff.core.shapes import time_tensor

__all__ = ["LinearInterpolant", "TrigInterpolant"]



class LinearInterpolant(GaussianProcess):
    """Rectified flow: ``x_t = (1 - t) x0 + t eps``."""

    def __init__(self, t_min: float = 1e-4, t_max: float = 1.0 - 1e-4):
        self.t_min, self.t_max = t_min, t_max

    def alpha(self, t: Tensor) -> Tensor:
        return 1.0 - time_tensor(t)

    def sigma(self, t: Tensor) -> Tensor:
        return time_tensor(t) * 1.0

    def d_alpha(self, t: Tensor) -> Tensor:
        return -torch.ones_like(time_tensor(t))

    def d_sigma(self, t: Tensor) -> Tensor:
        return torch.ones_like(time_tensor(t))

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        return torch.sigmoid(-0.5 * time_tensor(lam))


class TrigInterpolant(GaussianProcess):
    """Trigonometric interpolant: ``x_t = cos(pi t/2) x0 + sin(pi t/2) eps``."""

    def __init__(self, t_min: float = 1e-4, t_max: float = 1.0 - 1e-4):
        self.t_min, self.t_max = t_min, t_max

    def alpha(self, t: Tensor) -> Tensor:
        return torch.cos(time_tensor(t) * (math.pi / 2))

    def sigma(self, t: Tensor) -> Tensor:
        return torch.sin(time_tensor(t) * (math.pi / 2))

    def d_alpha(self, t: Tensor) -> Tensor:
        return -(math.pi / 2) * torch.sin(time_tensor(t) * (math.pi / 2))

    def d_sigma(self, t: Tensor) -> Tensor:
        return (math.pi / 2) * torch.cos(time_tensor(t) * (math.pi / 2))

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        return torch.arctan(torch.exp(-0.5 * time_tensor(lam))) * (2 / math.pi)
