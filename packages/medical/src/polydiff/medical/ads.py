"""Active Diffusion Subsampling for Cartesian MRI: choose the k-space lines to acquire during
reverse diffusion, where posterior samples disagree most.

Implements the acquisition loop of Nolan, Nie, van Sloun et al. (2024/2025), "Active
Diffusion Subsampling" (Algorithm 1 and Sec. 4): ``P`` particles (posterior samples) are
sampled with diffusion posterior sampling (core's
:class:`~polydiff.core.guidance.MeasurementGuidance` under core's DDPM sampler) for the lines
acquired so far. At each acquisition time the particles' denoised estimates ``x0_hat^(i)``
predict the unseen measurements of every candidate line ``l``; the line of maximum entropy of
the resulting Gaussian mixture (measurement noise ``sigma``) is acquired. The mixture entropy
uses the pairwise-distance approximation of their Sec. 4,

    ``H_l ~ -sum_i (1/P) log sum_j (1/P) exp(-||y_l^(i) - y_l^(j)||^2 / (2 sigma^2))``

(the lower bound of Kolchinsky & Tracey 2017 with the Gaussians' KL divergences), so a line
where the particles' k-space values differ is worth acquiring, a line they agree on is not.
The acquired line's true measurement joins ``y`` and sampling continues; the last segment runs
to ``t = 0`` with the full budget and the particles' mean is the reconstruction.

Diffusion is run in segments between acquisition times with core's sampler (DDPM ancestral
steps are memoryless, so a run split at grid points is the same run); the policy code here
only picks lines. Fixed masks (random, equispaced) with the same budget and the same centre
are the baselines (:func:`fixed_mask_reconstruct`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from polydiff.core.operators import MaskedFourier
from polydiff.medical.prior import DiffusionPrior

__all__ = ["ADSConfig", "ADSResult", "line_entropy", "active_subsample", "centre_mask",
           "fixed_mask_reconstruct", "POLICIES"]

POLICIES = ("ads", "random", "equispaced")


@dataclass
class ADSConfig:
    """Settings of :func:`active_subsample`.

    Attributes:
        acceleration: the budget is ``round(size / acceleration)`` lines.
        center_fraction: lines around DC acquired before sampling starts (all policies).
        particles: posterior samples per image.
        steps: DDPM steps of the whole run.
        acquire_until: fraction of the steps by which every line has been acquired (the
            acquisitions are spread evenly over ``[0, acquire_until)`` of the run).
        scale: DPS step size (residual-normalised).
        sigma: the measurement noise std of the entropy's Gaussians (k-space units).
        noise: std of the simulated acquisition noise.
    """

    acceleration: float = 8.0
    center_fraction: float = 0.08
    particles: int = 4
    steps: int = 60
    acquire_until: float = 0.6
    scale: float = 1.0
    sigma: float = 0.01
    noise: float = 0.005


@dataclass
class ADSResult:
    """Reconstruction (particle mean), the final masks ``(B, W)`` and the particles."""

    image: Tensor
    masks: Tensor
    particles: Tensor
    order: list[list[int]]


def line_entropy(kspace: Tensor, sigma: float) -> Tensor:
    """Approximate mixture entropy per phase-encoding line (module docstring).

    ``kspace``: particles' predicted k-space ``(B, P, H, W)`` (lines are columns ``W``);
    returns ``(B, W)``, up to an additive constant."""
    b, p, h, w = kspace.shape
    flat = kspace.permute(0, 3, 1, 2).reshape(b, w, p, h)           # (B, W, P, H)
    diff = flat[:, :, :, None, :] - flat[:, :, None, :, :]          # (B, W, P, P, H)
    d2 = (diff.abs() ** 2).sum(-1).real if diff.is_complex() else (diff**2).sum(-1)
    logk = -d2 / (2 * sigma**2)                                      # (B, W, P, P)
    inner = torch.logsumexp(logk, dim=-1) - math.log(p)
    return -inner.mean(-1)


def _dps_segment(prior: DiffusionPrior, op: MaskedFourier, y: Tensor, x: Tensor, ts: Tensor,
                 scale: float, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Run DPS over ``ts``; returns the state and the last denoised estimate (model space)."""
    from polydiff.core.guidance import MeasurementGuidance
    from polydiff.core.samplers import sample_ddpm

    last: dict[str, Tensor] = {}

    def keep(info: dict) -> None:  # type: ignore[type-arg]
        if info.get("x0") is not None:
            last["x0"] = info["x0"]

    guided = MeasurementGuidance(prior.denoiser, lambda u: op(prior.from_model(u)), y,
                                 scale=scale, norm=True)
    out = sample_ddpm(guided, x, ts, generator=g, callback=keep, disable=True)
    return out, last.get("x0", out)


def _schedule(cfg: ADSConfig, n_acq: int) -> dict[int, int]:
    """``{grid index: lines acquired there}``, spread evenly over the first
    ``acquire_until`` of the run."""
    end = max(1, int(round(cfg.steps * cfg.acquire_until)))
    out: dict[int, int] = {}
    for k in range(n_acq):  # after at least one step: the particles have an estimate
        i = min(cfg.steps - 1, 1 + int(k * end // n_acq))
        out[i] = out.get(i, 0) + 1
    return out


def centre_mask(size: int, center_fraction: float) -> Tensor:
    """The fully sampled centre lines (as :func:`~polydiff.core.operators.cartesian_line_mask`
    places them)."""
    n_center = max(1, round(size * center_fraction))
    m = torch.zeros(size)
    c0 = size // 2 - n_center // 2
    m[c0:c0 + n_center] = 1.0
    return m


@torch.no_grad()
def active_subsample(prior: DiffusionPrior, truth_kspace: Tensor, cfg: ADSConfig, *,
                     seed: int = 0) -> ADSResult:
    """Acquire lines actively for each image (module docstring).

    ``truth_kspace``: the fully sampled (noisy) centred k-space ``(B, 1, S, S)`` that a
    scanner would return line by line; only acquired lines are ever read from it."""
    from polydiff.core.grids import time_grid

    b, _, s, _ = truth_kspace.shape
    p = cfg.particles
    budget = max(1, round(s / cfg.acceleration))
    start = centre_mask(s, cfg.center_fraction)
    masks = start.expand(b, s).clone()
    n_acq = budget - int(start.sum())
    if n_acq < 0:
        raise ValueError(f"the budget of {budget} lines is smaller than the "
                         f"{int(start.sum())} centre lines")
    per_step = _schedule(cfg, n_acq)
    g = torch.Generator(device=prior.device).manual_seed(seed)
    ts = time_grid(prior.process, cfg.steps, "uniform", t_end=0.0)
    full = truth_kspace.repeat_interleave(p, dim=0)                        # (B P, 1, S, S)
    x = prior.process.prior_sample((b * p, 1, s, s), generator=g, device=prior.device)
    op = MaskedFourier(masks.repeat_interleave(p, 0).reshape(b * p, 1, 1, s), (1, s, s))
    op = op.to(prior.device)
    order: list[list[int]] = [[] for _ in range(b)]
    i0 = 0
    for i in sorted(per_step) + [cfg.steps]:
        if i > i0:
            op.set_mask(masks.repeat_interleave(p, 0).reshape(b * p, 1, 1, s))
            x, x0 = _dps_segment(prior, op, full * op.mask, x, ts[i0:i + 1], cfg.scale, g)
            i0 = i
        if i == cfg.steps:
            break
        est = MaskedFourier(torch.ones(s), (1, s, s)).to(prior.device)(prior.from_model(x0))
        ent = line_entropy(est.reshape(b, p, s, s), cfg.sigma)
        ent = ent.masked_fill(masks.to(ent.device) > 0, -math.inf)
        for _ in range(per_step[i]):
            pick = ent.argmax(dim=1)
            for j in range(b):
                masks[j, int(pick[j])] = 1.0
                order[j].append(int(pick[j]))
            ent = ent.scatter(1, pick[:, None], -math.inf)
    imgs = prior.from_model(x).clamp(0, 1).reshape(b, p, 1, s, s)
    return ADSResult(image=imgs.mean(1), masks=masks, particles=imgs, order=order)


@torch.no_grad()
def fixed_mask_reconstruct(prior: DiffusionPrior, truth_kspace: Tensor, mask: Tensor,
                           cfg: ADSConfig, *, seed: int = 0) -> Tensor:
    """The same sampler (DPS, ``cfg.particles`` particles, their mean) with a fixed line mask
    ``(S,)`` or ``(B, S)`` acquired up front."""
    from polydiff.core.grids import time_grid

    b, _, s, _ = truth_kspace.shape
    p = cfg.particles
    m = mask.expand(b, s) if mask.ndim == 1 else mask
    op = MaskedFourier(m.repeat_interleave(p, 0).reshape(b * p, 1, 1, s), (1, s, s))
    op = op.to(prior.device)
    g = torch.Generator(device=prior.device).manual_seed(seed)
    ts = time_grid(prior.process, cfg.steps, "uniform", t_end=0.0)
    full = truth_kspace.repeat_interleave(p, dim=0)
    x = prior.process.prior_sample((b * p, 1, s, s), generator=g, device=prior.device)
    x, _ = _dps_segment(prior, op, full * op.mask, x, ts, cfg.scale, g)
    return prior.from_model(x).clamp(0, 1).reshape(b, p, 1, s, s).mean(1)
