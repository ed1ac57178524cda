"""Variance-preserving processes: ``alpha^2 + sigma^2 = 1`` (and sub-VP).

References: Ho et al. 2020 (DDPM, linear betas); Song et al. 2021 (score SDEs: VP with
``beta(t) = beta_min + t (beta_max - beta_min)`` and sub-VP, eq. 11 and 34); Nichol & Dhariwal
2021 (improved DDPM, cosine schedule); Lu et al. 2022 (DPM-Solver, App. D: the discrete-time
schedule as a piecewise-linear ``log alpha`` over ``t_n = (n + 1) / N``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from polydiff.core.processes.gaussian import GaussianProcess
from polydiff.core.shapes import time_tensor

__all__ = ["VPLinear", "VPCosine", "VPDiscrete", "SubVP", "betas_for_alpha_bar"]



class _VP(GaussianProcess):
    """Shared VP algebra: subclasses give ``log_alpha`` and its derivative."""

    t_zero: float = 0.0  # every VP process has sigma = 0 at t = 0

    def log_alpha(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def d_log_alpha(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def alpha(self, t: Tensor) -> Tensor:
        return torch.exp(self.log_alpha(time_tensor(t)))

    def sigma(self, t: Tensor) -> Tensor:
        # clamp: log alpha(0) can round to a tiny positive number (cosine schedule)
        return torch.sqrt(-torch.expm1((2.0 * self.log_alpha(time_tensor(t))).clamp(max=0.0)))

    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        la = self.log_alpha(time_tensor(t))
        return torch.exp(la), torch.sqrt(-torch.expm1((2.0 * la).clamp(max=0.0)))

    def d_alpha(self, t: Tensor) -> Tensor:
        return self.alpha(t) * self.d_log_alpha(time_tensor(t))

    def d_sigma(self, t: Tensor) -> Tensor:
        a = self.alpha(t)
        return -a * self.d_alpha(t) / self.sigma(t)

    def f(self, t: Tensor) -> Tensor:
        return self.d_log_alpha(time_tensor(t))

    def g2(self, t: Tensor) -> Tensor:
        return -2.0 * self.d_log_alpha(time_tensor(t))

    def log_snr(self, t: Tensor) -> Tensor:
        la = self.log_alpha(time_tensor(t))
        return 2.0 * la - torch.log(-torch.expm1(2.0 * la))

    @staticmethod
    def _log_alpha_from_log_snr(lam: Tensor) -> Tensor:
        # alpha^2 = sigmoid(lam)  =>  log alpha = -softplus(-lam) / 2
        return -0.5 * torch.nn.functional.softplus(-lam)


class VPLinear(_VP):
    """VP SDE with linear ``beta(t)`` (Song et al. 2021, eq. 11; DDPM's continuous limit)."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, t_min: float = 1e-3):
        self.beta_min, self.beta_max, self.t_min = float(beta_min), float(beta_max), t_min

    def beta(self, t: Tensor) -> Tensor:
        return self.beta_min + time_tensor(t) * (self.beta_max - self.beta_min)

    def log_alpha(self, t: Tensor) -> Tensor:
        return -0.25 * t * t * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def d_log_alpha(self, t: Tensor) -> Tensor:
        return -0.5 * self.beta(t)

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        lam = time_tensor(lam)
        b0, db = self.beta_min, self.beta_max - self.beta_min
        c = torch.nn.functional.softplus(-lam)  # = -2 log alpha = b0 t + db t^2 / 2
        return 2.0 * c / (b0 + torch.sqrt(b0 * b0 + 2.0 * db * c))


class SubVP(VPLinear):
    """Sub-VP SDE (Song et al. 2021, eq. 34): VP's ``alpha`` with ``sigma = 1 - alpha^2``."""

    def sigma(self, t: Tensor) -> Tensor:
        return -torch.expm1(2.0 * self.log_alpha(time_tensor(t)))

    def d_sigma(self, t: Tensor) -> Tensor:
        return -2.0 * self.alpha(t) * self.d_alpha(t)

    def g2(self, t: Tensor) -> Tensor:
        return GaussianProcess.g2(self, t)

    def log_snr(self, t: Tensor) -> Tensor:
        return GaussianProcess.log_snr(self, time_tensor(t))

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        # alpha^2 / (1 - alpha^2)^2 = e^lam: solve the quadratic for u = alpha^2 in (0, 1)
        lam = time_tensor(lam)
        r = torch.exp(-lam / 2)  # = (1 - u) / sqrt(u)  =>  u + r sqrt(u) - 1 = 0
        s = (-r + torch.sqrt(r * r + 4.0)) / 2.0
        return VPLinear.t_from_log_snr(self, 2.0 * torch.log(s) - torch.log1p(-s * s))


class VPCosine(_VP):
    """VP with the cosine schedule ``alpha_bar = cos^2(pi/2 (t+s)/(1+s)) / cos^2(pi/2 s/(1+s))``
    (Nichol & Dhariwal 2021, eq. 17). ``t_max`` stays below 1 where ``alpha`` vanishes."""

    def __init__(self, s: float = 0.008, t_min: float = 1e-3, t_max: float = 0.9946):
        self.s, self.t_min, self.t_max = float(s), t_min, t_max
        self._log_cos0 = math.log(math.cos(math.pi / 2 * self.s / (1 + self.s)))

    def _phi(self, t: Tensor) -> Tensor:
        return (t + self.s) / (1 + self.s) * (math.pi / 2)

    def log_alpha(self, t: Tensor) -> Tensor:
        return torch.log(torch.cos(self._phi(t))) - self._log_cos0

    def d_log_alpha(self, t: Tensor) -> Tensor:
        return -torch.tan(self._phi(t)) * (math.pi / 2) / (1 + self.s)

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        la = self._log_alpha_from_log_snr(time_tensor(lam))
        phi = torch.arccos(torch.exp(la + self._log_cos0))
        return phi * (2 / math.pi) * (1 + self.s) - self.s


def betas_for_alpha_bar(n: int, alpha_bar, max_beta: float = 0.999) -> Tensor:
    """Discretise a continuous ``alpha_bar(t)`` on ``[0, 1]`` into ``n`` betas (Nichol &
    Dhariwal 2021, eq. 17's discretisation)."""
    t = torch.arange(n + 1, dtype=torch.float64) / n
    ab = alpha_bar(t)
    return torch.clamp(1 - ab[1:] / ab[:-1], max=max_beta)


class VPDiscrete(_VP):
    """A discrete-time VP schedule (DDPM betas or a diffusers ``alphas_cumprod``) as a
    continuous process: ``log alpha`` is piecewise linear in ``t`` through
    ``t_n = (n + 1) / N`` (Lu et al. 2022, DPM-Solver App. D), and ``log alpha(0) = 0``.

    ``model_timestep(t) = t N - 1`` maps back to the network's (fractional) step index.
    """

    def __init__(self, alphas_cumprod: Tensor | None = None, betas: Tensor | None = None):
        if (alphas_cumprod is None) == (betas is None):
            raise ValueError("give exactly one of alphas_cumprod or betas")
        if alphas_cumprod is None:
            alphas_cumprod = torch.cumprod(1.0 - torch.as_tensor(betas, dtype=torch.float64), 0)
        ac = torch.as_tensor(alphas_cumprod, dtype=torch.float64).flatten()
        if not bool(((ac > 0) & (ac < 1)).all()) or not bool((ac[1:] <= ac[:-1]).all()):
            raise ValueError("alphas_cumprod must lie in (0, 1) and be non-increasing")
        self.num_train_timesteps = n = ac.numel()
        self._t = torch.cat([torch.zeros(1, dtype=torch.float64),
                             torch.arange(1, n + 1, dtype=torch.float64) / n])
        self._la = torch.cat([torch.zeros(1, dtype=torch.float64), 0.5 * torch.log(ac)])
        self.t_min, self.t_max = 1.0 / n, 1.0
        self._on: dict[torch.device, tuple[Tensor, Tensor]] = {}

    @classmethod
    def linear(cls, n: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
        """DDPM's linear betas (Ho et al. 2020)."""
        return cls(betas=torch.linspace(beta_start, beta_end, n, dtype=torch.float64))

    @classmethod
    def scaled_linear(cls, n: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012):
        """Latent-diffusion's "scaled_linear" betas (linear in sqrt(beta))."""
        b = torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=torch.float64) ** 2
        return cls(betas=b)

    def _tables(self, device: torch.device) -> tuple[Tensor, Tensor]:
        tabs = self._on.get(device)
        if tabs is None:
            tabs = self._on[device] = (self._t.to(device), self._la.to(device))
        return tabs

    def _segment(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        t = time_tensor(t)
        tt, la = self._tables(t.device)
        idx = torch.searchsorted(tt, t.detach().contiguous(), right=True).sub_(1)
        return t, idx.clamp_(0, self.num_train_timesteps - 1), tt, la

    def log_alpha(self, t: Tensor) -> Tensor:
        t, i, tt, la = self._segment(t)
        t0, l0 = tt[i], la[i]
        return l0 + (t - t0) * ((la[i + 1] - l0) / (tt[i + 1] - t0))

    def d_log_alpha(self, t: Tensor) -> Tensor:
        t, i, tt, la = self._segment(t)
        return (la[i + 1] - la[i]) / (tt[i + 1] - tt[i])

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        lam = time_tensor(lam)
        target = self._log_alpha_from_log_snr(lam)  # decreasing in t
        la = self._la.to(lam.device)
        # searchsorted needs increasing keys: use -log alpha
        i = torch.clamp(torch.searchsorted(-la, -target.detach().contiguous()) - 1, 0,
                        self.num_train_timesteps - 1)
        tt = self._t.to(lam.device)
        w = (target - la[i]) / (la[i + 1] - la[i])
        return tt[i] + w * (tt[i + 1] - tt[i])

    def model_timestep(self, t: Tensor) -> Tensor:
        """The network's (fractional) timestep index for continuous time ``t``."""
        return time_tensor(t) * self.num_train_timesteps - 1.0
