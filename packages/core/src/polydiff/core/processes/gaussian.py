"""Gaussian forward processes, one abstraction (docs/architecture.md).

Every process is written ``x_t = c + alpha(t) (x0 - c) + sigma(t) eps`` with ``eps ~ N(0, I)``
and an optional centre ``c`` (the condition ``y`` of mean-reverting processes such as SGMSE's
OUVE; ``c = 0`` otherwise). The equivalent SDE is ``dx = f(t) (x - c) dt + g(t) dw`` with
``f = alpha'/alpha`` and ``g^2 = (sigma^2)' - 2 f sigma^2`` (Song et al. 2021, "Score-Based
Generative Modeling through Stochastic Differential Equations", eq. 5-6 and App. B).

Subclasses give ``alpha``, ``sigma`` and their time derivatives in closed form; everything else
(log-SNR, its inverse, marginals, prior, SDE, reverse SDE, probability-flow ODE) follows here.
All methods accept per-sample time ``t`` of shape ``(B,)`` (or a scalar tensor) and return
values of the same shape and dtype, so float64 schedule arithmetic is the caller's choice.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from polydiff.core.shapes import append_dims

__all__ = ["GaussianProcess"]


class GaussianProcess(ABC):
    """Base class of the Gaussian forward processes.

    Attributes:
        t_min: smallest time used for training and as the default sampling end.
        t_max: the time of the prior.
        t_zero: a time at which ``sigma`` is exactly 0 (used as the final point of sampling
            grids that "denoise to zero"), or ``None`` where the process has none (VE).
        center_key: name of the conditioning entry that is the process centre ``c``
            (``"y"`` for mean-reverting processes), or ``None``.
    """

    t_min: float = 1e-3
    t_max: float = 1.0
    t_zero: float | None = 0.0
    center_key: str | None = None

    # ----------------------------------------------------------------- schedule
    @abstractmethod
    def alpha(self, t: Tensor) -> Tensor:
        """Signal scale ``alpha(t)``."""

    @abstractmethod
    def sigma(self, t: Tensor) -> Tensor:
        """Noise scale ``sigma(t)``."""

    @abstractmethod
    def d_alpha(self, t: Tensor) -> Tensor:
        """``d alpha / dt``."""

    @abstractmethod
    def d_sigma(self, t: Tensor) -> Tensor:
        """``d sigma / dt``."""

    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(alpha(t), sigma(t))`` together (subclasses share work between the two)."""
        return self.alpha(t), self.sigma(t)

    def log_snr(self, t: Tensor) -> Tensor:
        """``lambda(t) = log(alpha^2 / sigma^2)``, decreasing in ``t``."""
        return 2.0 * (torch.log(self.alpha(t)) - torch.log(self.sigma(t)))

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        """Inverse of :meth:`log_snr`. Generic bisection in float64; subclasses override
        with closed forms where they exist."""
        lam = torch.as_tensor(lam, dtype=torch.float64)
        lo = torch.full_like(lam, self._t_lo())
        hi = torch.full_like(lam, self.t_max)
        for _ in range(100):
            mid = 0.5 * (lo + hi)
            above = self.log_snr(mid) > lam  # log-SNR decreases with t: answer is later
            lo = torch.where(above, mid, lo)
            hi = torch.where(above, hi, mid)
        return 0.5 * (lo + hi)

    def _t_lo(self) -> float:
        return self.t_zero + 1e-12 if self.t_zero is not None else 0.0

    def f(self, t: Tensor) -> Tensor:
        """Drift coefficient ``f(t) = alpha'/alpha`` of ``dx = f (x - c) dt + g dw``."""
        return self.d_alpha(t) / self.alpha(t)

    def g2(self, t: Tensor) -> Tensor:
        """Squared diffusion coefficient ``g(t)^2 = (sigma^2)' - 2 f sigma^2``."""
        s = self.sigma(t)
        return 2.0 * s * self.d_sigma(t) - 2.0 * self.f(t) * s * s

    def sigma_tilde(self, t: Tensor) -> Tensor:
        """``sigma / alpha`` = ``exp(-lambda/2)``: the noise level of the scaled variable
        ``x / alpha`` (the EDM "sigma" of any Gaussian process)."""
        return self.sigma(t) / self.alpha(t)

    def t_from_sigma_tilde(self, s: Tensor) -> Tensor:
        """Inverse of :meth:`sigma_tilde`."""
        return self.t_from_log_snr(-2.0 * torch.log(torch.as_tensor(s, dtype=torch.float64)))

    # ----------------------------------------------------------------- centre
    def center(self, cond: Mapping[str, Any] | None) -> Tensor | None:
        """The centre ``c`` from the conditioning, or ``None`` for centred processes."""
        if self.center_key is None:
            return None
        if not cond or cond.get(self.center_key) is None:
            raise ValueError(
                f"{type(self).__name__} is mean-reverting: pass the condition "
                f"'{self.center_key}' (the process centre)"
            )
        return cond[self.center_key]

    # ----------------------------------------------------------------- marginals
    def marginal_mean(self, x0: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """``E[x_t | x0] = c + alpha (x0 - c)``."""
        a = append_dims(self.alpha(t), x0)
        return a * x0 if y is None else y + a * (x0 - y)

    def marginal_std(self, t: Tensor) -> Tensor:
        """Standard deviation of ``x_t | x0`` (per real component; complex data use complex
        standard normal noise, ``E|eps|^2 = 1``, as SGMSE does)."""
        return self.sigma(t)

    def marginal(
        self,
        x0: Tensor,
        t: Tensor,
        eps: Tensor | None = None,
        y: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Sample ``x_t ~ q(x_t | x0)``; returns ``(x_t, eps)``."""
        if eps is None:
            eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
        return self.marginal_mean(x0, t, y) + append_dims(self.sigma(t), x0) * eps, eps

    # ----------------------------------------------------------------- prior
    def prior_std(self) -> float:
        return float(self.sigma(torch.tensor(self.t_max, dtype=torch.float64)))

    def prior_sample(
        self,
        shape: tuple[int, ...] | torch.Size,
        y: Tensor | None = None,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Sample the prior ``N(c, sigma(t_max)^2 I)`` (``alpha(t_max) x0`` is neglected, as
        in every score-SDE implementation)."""
        if y is not None:
            device, dtype, shape = y.device, y.dtype, y.shape
        z = torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)
        z = z * self.prior_std()
        return z if y is None else y + z

    def prior_logp(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Per-sample log-density of the prior (real data; complex counts 2 dims each)."""
        z = x if y is None else x - y
        z = torch.view_as_real(z) if z.is_complex() else z
        s = self.prior_std()
        if x.is_complex():
            s = s / math.sqrt(2.0)
        d = z[0].numel()
        sq = z.reshape(z.shape[0], -1).double().pow(2).sum(1)
        return -0.5 * sq / s**2 - d * (math.log(s) + 0.5 * math.log(2 * math.pi))

    # ----------------------------------------------------------------- SDEs
    def sde(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Forward SDE: ``(drift, diffusion)`` with drift ``f (x - c)`` and diffusion ``g``."""
        z = x if y is None else x - y
        return append_dims(self.f(t), x) * z, append_dims(self.g2(t).sqrt(), x)

    def reverse_sde(
        self, x: Tensor, t: Tensor, score: Tensor, y: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Reverse-time SDE (Anderson 1982): drift ``f (x - c) - g^2 score`` (to be integrated
        backwards in ``t``) and diffusion ``g``."""
        drift, g = self.sde(x, t, y)
        return drift - g * g * score, g

    def pf_ode(self, x: Tensor, t: Tensor, score: Tensor, y: Tensor | None = None) -> Tensor:
        """Probability-flow ODE velocity ``dx/dt = f (x - c) - g^2 score / 2``."""
        drift, g = self.sde(x, t, y)
        return drift - 0.5 * g * g * score

    def pf_ode_from_x0_eps(self, x0: Tensor, eps: Tensor, t: Tensor,
                           y: Tensor | None = None) -> Tensor:
        """Probability-flow velocity from a denoiser's ``(x0, eps)``:
        ``alpha' (x0 - c) + sigma' eps`` (the same ODE, better conditioned)."""
        z0 = x0 if y is None else x0 - y
        return append_dims(self.d_alpha(t), x0) * z0 + append_dims(self.d_sigma(t), x0) * eps

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"
