"""Solvers of inverse problems ``y = A(x0) + noise`` with a diffusion prior, beside
:class:`~polydiff.core.guidance.MeasurementGuidance` (DPS):

* :class:`DataConsistency`: a denoiser transform that replaces the clean-data estimate
  ``x0_hat(x_t)`` by a data-consistent one (``project(x0_hat)``, e.g. the proximal step
  ``argmin_z ||A z - y||^2 + lam ||z - x0_hat||^2`` of
  :meth:`polydiff.core.operators.LinearOperator.prox`) and recomputes the noise so the pair
  stays consistent. Any core sampler then becomes a data-consistency (projection) sampler;
  with :func:`~polydiff.core.samplers.sample_ddim` it is the Decomposed Diffusion Sampler of
  Chung, Lee & Ye (2024), "Decomposed Diffusion Sampler for Accelerating Large-Scale Inverse
  Problems", Algorithm 1 (Tweedie estimate, a few conjugate-gradient steps on the data term,
  then a DDIM step with ``eta``), and with ``lam -> 0`` the range-space replacement of DDNM
  (Wang, Yu & Zhang 2023, "Zero-Shot Image Restoration Using Denoising Diffusion Null-Space
  Model", eq. 13);
* :func:`red_diff`: RED-Diff, the variational solver of Mardani, Song, Kautz & Vahdat (2024),
  "A Variational Perspective on Solving Inverse Problems with Diffusion Models", Algorithm 1:
  the mean ``mu`` of ``q(x0 | y) = N(mu, 0)`` is optimised by Adam on
  ``||y - A(mu)||^2 / 2 + lam w(t) sg[eps_hat(x_t, t) - eps]^T mu`` with
  ``x_t = alpha_t mu + sigma_t eps`` and ``t`` running from ``t_max`` down (their
  "descending" schedule), ``w(t) = sigma_t / alpha_t`` (the inverse square root of the SNR,
  their default weighting) or another power of it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor

from polydiff.core.denoiser import Denoiser
from polydiff.core.param import to_x0_eps
from polydiff.core.shapes import append_dims

__all__ = ["DataConsistency", "red_diff", "RED_WEIGHTINGS"]

RED_WEIGHTINGS = ("sqrt_inv_snr", "inv_snr", "const")


class DataConsistency(Denoiser):
    """Data-consistent denoiser (module docstring): ``x0' = project(x0_hat, t)``,
    ``eps' = (x_t - c - alpha (x0' - c)) / sigma``.

    Args:
        denoiser: the prior.
        project: ``project(x0, t) -> x0`` (``t`` per sample, ``(B,)``), e.g.
            ``lambda x0, t: op.prox(x0, y, lam)``.
        t_stop: apply the projection only where ``t >= t_stop`` (the estimate is returned
            unchanged below; 0 projects at every time).
    """

    def __init__(self, denoiser: Denoiser, project: Callable[[Tensor, Tensor], Tensor], *,
                 t_stop: float = 0.0):
        super().__init__(denoiser.process)
        self.denoiser, self.project, self.t_stop = denoiser, project, float(t_stop)

    def center(self, cond: dict[str, Any]) -> Tensor | None:
        return self.denoiser.center(cond)

    def x0_eps(self, x: Tensor, t: Tensor, **cond: Any) -> tuple[Tensor, Tensor]:
        x0, eps = self.denoiser.x0_eps(x, t, **cond)
        if self.t_stop > 0 and bool((t < self.t_stop).all()):
            return x0, eps
        x0p = self.project(x0, t)
        if self.t_stop > 0:
            keep = append_dims(t < self.t_stop, x0)
            x0p = torch.where(keep, x0, x0p)
        if self.process.sigma(t[:1]).item() == 0.0:
            return x0p, eps
        return x0p, to_x0_eps(x0p, "sample", x, t, self.process, self.center(cond))[1]


def _weight(kind: str, alpha: float, sigma: float) -> float:
    r = sigma / alpha
    if kind == "sqrt_inv_snr":
        return r
    if kind == "inv_snr":
        return r * r
    if kind == "const":
        return 1.0
    raise ValueError(f"unknown RED-Diff weighting {kind!r}; expected one of {RED_WEIGHTINGS}")


def red_diff(denoiser: Denoiser, data_loss: Callable[[Tensor], Tensor], x_init: Tensor,
             ts: Tensor, *, lam: float = 0.25, lr: float = 0.1,
             weighting: Literal["sqrt_inv_snr", "inv_snr", "const"] = "sqrt_inv_snr",
             betas: tuple[float, float] = (0.9, 0.99), generator: torch.Generator | None = None,
             cond: dict[str, Any] | None = None,
             callback: Callable[[dict[str, Any]], None] | None = None) -> Tensor:
    """RED-Diff (module docstring), Algorithm 1 of Mardani et al. (2024).

    Args:
        denoiser: the prior (a centred process: ``c = 0``).
        data_loss: ``data_loss(mu) -> (B,)`` the per-sample data term, e.g.
            ``||y - A(mu)||^2 / (2 sigma_y^2)`` (differentiable in ``mu``).
        x_init: the starting ``mu`` (e.g. the pseudo-inverse ``A^+ y``), ``(B, ...)``.
        ts: the process times to visit, one Adam step each, in the order given (descending
            from near ``t_max`` as in the paper; :func:`~polydiff.core.grids.time_grid`
            without its last point works).
        lam: the regularisation weight ``lambda`` (0.25 in the paper).
        lr: Adam's learning rate; ``betas``: Adam's betas (the paper's ``(0.9, 0.99)``).
        weighting: ``w(t)``: ``"sqrt_inv_snr"`` (``sigma/alpha``), ``"inv_snr"`` or ``"const"``.
        generator: for the per-step noise ``eps``.
        callback: called after each step with ``{"i", "t", "mu", "loss_data", "loss_reg"}``.

    Returns the final ``mu`` (detached).
    """
    if denoiser.center(dict(cond or {})) is not None:
        raise ValueError("red_diff needs a centred process (no mean-reverting centre)")
    ts = torch.as_tensor(ts, dtype=torch.float64)
    mu = x_init.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([mu], lr=lr, betas=betas)
    proc, batch = denoiser.process, x_init.shape[0]
    alphas, sigmas = proc.alpha(ts).tolist(), proc.sigma(ts).tolist()
    dims = tuple(range(1, x_init.ndim))
    for i, t in enumerate(ts.tolist()):
        a, s = alphas[i], sigmas[i]
        eps = torch.randn(x_init.shape, generator=generator, dtype=x_init.dtype,
                          device=x_init.device)
        with torch.no_grad():
            xt = a * mu + s * eps
            tt = torch.full((batch,), t, dtype=torch.float64, device=x_init.device)
            eps_hat = denoiser.eps(xt, tt, **(cond or {}))
        with torch.enable_grad():
            loss_data = data_loss(mu)
            reg = ((eps_hat - eps).detach() * mu).mean(dim=dims)
            w = lam * _weight(weighting, a, s)
            loss = (loss_data + w * reg).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
        opt.step()
        if callback is not None:
            callback({"i": i, "t": t, "mu": mu.detach(), "loss_data": loss_data.detach(),
                      "loss_reg": reg.detach()})
    return mu.detach()
