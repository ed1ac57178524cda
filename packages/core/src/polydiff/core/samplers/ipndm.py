"""iPNDM: the improved pseudo numerical method of Zhang & Chen (2023), a training-free
multistep solver that is among the strongest at 5-10 network evaluations.

Zhang & Chen (2023), "Fast Sampling of Diffusion Models with Exponential Integrator" (DEIS,
ICLR 2023), Sec. 5 and App. "iPNDM": PNDM (Liu et al. 2022) spends its first steps on
Runge-Kutta warm-up (4 evaluations each); iPNDM instead starts the linear multistep method
at lower order, so every step costs one evaluation. In the scaled variables ``x~ = (x - c) /
alpha`` and ``sigma~ = sigma / alpha`` every Gaussian process has the probability-flow ODE
``dx~/dsigma~ = eps(x~, sigma~)`` (Karras et al. 2022, eq. 4), and iPNDM takes the
Adams-Bashforth combinations of the last (up to four) noise predictions,

    x~_{i+1} = x~_i + (sigma~_{i+1} - sigma~_i) * sum_k c_k eps_{i-k},

with ``c = (1)``, ``(3, -1)/2``, ``(23, -16, 5)/12``, ``(55, -59, 37, -9)/24`` for orders 1-4
(order ``min(i + 1, order)`` at step ``i``). As in the paper, the coefficients are those of
equal steps whatever the grid's spacing. One network evaluation per step.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from polydiff.core.denoiser import Denoiser
from polydiff.core.samplers._common import Callback, Sampling
from polydiff.core.utils import progress

__all__ = ["sample_ipndm", "IPNDM_COEFFICIENTS"]

#: Adams-Bashforth weights of the newest, previous, ... noise predictions, by order.
IPNDM_COEFFICIENTS: tuple[tuple[float, ...], ...] = (
    (1.0,),
    (3.0 / 2.0, -1.0 / 2.0),
    (23.0 / 12.0, -16.0 / 12.0, 5.0 / 12.0),
    (55.0 / 24.0, -59.0 / 24.0, 37.0 / 24.0, -9.0 / 24.0),
)


@torch.no_grad()
def sample_ipndm(denoiser: Denoiser, x: Tensor, ts: Tensor, *,
                 cond: dict[str, Any] | None = None, callback: Callback | None = None,
                 disable: bool | None = None, order: int = 4) -> Tensor:
    """iPNDM (Zhang & Chen 2023, "Fast Sampling of Diffusion Models with Exponential
    Integrator", App. "iPNDM"): Adams-Bashforth of order up to ``order`` (1-4) on the noise
    predictions in ``(x~, sigma~)``, warm-started at lower order; one evaluation per step.
    See the module docstring."""
    if order not in (1, 2, 3, 4):
        raise ValueError(f"iPNDM order must be 1, 2, 3 or 4, got {order}")
    s = Sampling(denoiser, x, ts, cond, callback)
    alphas, st = s.alphas.tolist(), (s.sigmas / s.alphas).tolist()
    z = s.z
    xt = z / alphas[0]
    hist: list[Tensor] = []  # noise predictions, newest first
    for i in progress(s.steps, disable=disable):
        z0, eps = s.denoise(z, i)
        hist.insert(0, eps)
        del hist[order:]
        coefs = IPNDM_COEFFICIENTS[len(hist) - 1]
        d = hist[0] * coefs[0]
        for c, e in zip(coefs[1:], hist[1:]):
            d = d.add_(e, alpha=c)
        xt = xt.add_(d, alpha=st[i + 1] - st[i])  # xt is never the caller's tensor
        z = xt * alphas[i + 1]
        s.report(i, z, z0)
    return s.finish(z).to(x.dtype)
