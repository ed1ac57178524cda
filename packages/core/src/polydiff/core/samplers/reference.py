"""Paper-form samplers, for reading and as test oracles of the shared steppers.

polydiff's fast samplers share one per-step implementation with the diffusers scheduler
(:mod:`polydiff.core.samplers.stepper`), which spreads a sampler over coefficient tables and a
stepper class. The functions here are the same methods written as their papers state them, a
screen each, with no precomputation: the tests check that both give the same samples.
"""

from __future__ import annotations

import torch
from torch import Tensor

from polydiff.core.denoiser import Denoiser

__all__ = ["dpmpp_2m_reference"]


@torch.no_grad()
def dpmpp_2m_reference(denoiser: Denoiser, x: Tensor, ts: Tensor) -> Tensor:
    """DPM-Solver++(2M) exactly as Algorithm 2 of Lu et al. (2022), "DPM-Solver++: Fast
    Solver for Guided Sampling of Diffusion Probabilistic Models", states it, on a grid that
    ends at ``sigma > 0`` (centred processes). Equals
    :func:`~polydiff.core.samplers.dpmsolver.sample_dpmpp_2m` with ``lower_order_final=False``.
    """
    p, ts = denoiser.process, ts.to(torch.float64)
    alpha, sigma = p.alpha(ts), p.sigma(ts)
    lam = torch.log(alpha) - torch.log(sigma)              # lambda_t = log(alpha_t / sigma_t)
    x0_prev = None
    for i in range(len(ts) - 1):
        x0 = denoiser.x0(x, ts[i].expand(x.shape[0]))      # x_theta(x~_{t_{i-1}}, t_{i-1})
        h = lam[i + 1] - lam[i]
        if x0_prev is None:                                # first step: DPM-Solver-1
            d = x0
        else:                                              # D_i, with r_i = h_{i-1} / h_i
            r = (lam[i] - lam[i - 1]) / h
            d = (1 + 1 / (2 * r)) * x0 - 1 / (2 * r) * x0_prev
        x = sigma[i + 1] / sigma[i] * x - alpha[i + 1] * torch.expm1(-h) * d
        x0_prev = x0
    return x
