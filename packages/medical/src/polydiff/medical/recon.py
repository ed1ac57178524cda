"""Reconstruction of undersampled MRI and sparse-view CT: simulated acquisitions, the diffusion
solvers (DPS, RED-Diff, data-consistency sampling, all from polydiff-core) and the classical
baselines (zero-filled / FBP, total-variation compressed sensing).

Acquisitions are simulated from images in [0, 1] (magnitude-only, single-coil, Gaussian noise):

* MRI: ``y = M F x + n``, core's :class:`~polydiff.core.operators.MaskedFourier` with a 1-D
  line mask over the phase-encoding columns (``acceleration`` 4 or 8, 8% of the lines around
  DC always sampled), complex noise of std :data:`MRI_NOISE` per k-space sample (the DFT is
  orthonormal, so that is also the image-domain noise level);
* CT: ``y = R x + n``, core's :class:`~polydiff.core.operators.ParallelBeamRadon` with
  ``n_views`` angles evenly over 180 degrees, noise of std :data:`CT_NOISE` per detector bin.

Every solver takes ``(operator, y)`` and returns images in [0, 1]. The diffusion solvers work
in the prior's space ``u = 2 x - 1`` through the affine map; their hyper-parameters
(:data:`DEFAULTS`) were chosen on the validation slices of the template.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from polydiff.core.operators import (
    LinearOperator,
    MaskedFourier,
    ParallelBeamRadon,
    cartesian_line_mask,
)
from polydiff.medical.prior import DiffusionPrior

__all__ = ["MRI_NOISE", "CT_NOISE", "Acquisition", "mri_acquisition", "ct_acquisition",
           "simulate", "zero_filled", "tv_reconstruct", "dps", "red_diff_reconstruct",
           "dc_sample", "reconstruct", "SOLVERS", "DIFFUSION_SOLVERS", "DEFAULTS",
           "acquisition_for"]

MRI_NOISE = 0.005
CT_NOISE = 0.05
SOLVERS = ("zero_filled", "tv", "dps", "red_diff", "dc")
DIFFUSION_SOLVERS = ("dps", "red_diff", "dc")


@dataclass
class Acquisition:
    """A simulated acquisition: the operator, the noise level and a description."""

    modality: str
    op: LinearOperator
    noise: float
    label: str
    info: dict[str, Any] = field(default_factory=dict)


_RADON: dict[tuple[int, int], ParallelBeamRadon] = {}


def mri_acquisition(size: int, acceleration: float, *, kind: str = "random", seed: int = 0,
                    center_fraction: float = 0.08, mask: Tensor | None = None,
                    noise: float = MRI_NOISE) -> Acquisition:
    """Single-coil Cartesian MRI at ``acceleration`` (module docstring); ``mask``: a given
    ``(size,)`` line mask instead."""
    m = mask if mask is not None else cartesian_line_mask(
        size, acceleration, center_fraction=center_fraction, kind=kind, seed=seed)
    op = MaskedFourier(m, (1, size, size))
    return Acquisition("mri", op, noise, f"MRI {acceleration:g}x",
                       {"acceleration": acceleration, "lines": int(m.sum()), "mask": kind})


def ct_acquisition(size: int, n_views: int, *, noise: float = CT_NOISE) -> Acquisition:
    """Sparse-view parallel-beam CT with ``n_views`` angles over 180 degrees."""
    if n_views < 1:
        raise ValueError(f"the number of CT views must be >= 1, got {n_views}")
    key = (size, n_views)
    if key not in _RADON:
        _RADON[key] = ParallelBeamRadon(size, n_angles=n_views)
    return Acquisition("ct", _RADON[key], noise, f"CT {n_views} views", {"views": n_views})


def acquisition_for(modality: str, setting: float, size: int, **kw: Any) -> Acquisition:
    """``mri_acquisition(size, setting)`` or ``ct_acquisition(size, int(setting))``."""
    if modality == "mri":
        return mri_acquisition(size, setting, **kw)
    if modality == "ct":
        return ct_acquisition(size, int(setting), **kw)
    raise ValueError(f"modality must be 'mri' or 'ct', got {modality!r}")


def simulate(acq: Acquisition, x: Tensor, seed: int = 0) -> Tensor:
    """Measurements of images ``x`` ``(B, 1, S, S)`` in [0, 1] with seeded noise."""
    g = torch.Generator().manual_seed(seed)
    y = acq.op(x)
    if y.is_complex():
        n = torch.complex(torch.randn(y.shape, generator=g), torch.randn(y.shape, generator=g))
        n = n.to(y.dtype) * (acq.noise / math.sqrt(2))
        if isinstance(acq.op, MaskedFourier):
            n = n * acq.op.mask
    else:
        n = torch.randn(y.shape, generator=g).to(y.dtype) * acq.noise
    return y + n.to(y.device)


# --------------------------------------------------------------------------- baselines
def zero_filled(acq: Acquisition, y: Tensor) -> Tensor:
    """The magnitude of the zero-filled inverse DFT (MRI, fastMRI's baseline) or the filtered
    back-projection (CT), clipped to [0, 1]."""
    if isinstance(acq.op, ParallelBeamRadon):
        return acq.op.fbp(y).clamp(0, 1)
    if isinstance(acq.op, MaskedFourier):
        return acq.op.zero_filled(y, magnitude=True).clamp(0, 1)
    return acq.op.adjoint(y).clamp(0, 1)


def _grad(x: Tensor) -> Tensor:
    """Forward differences (Neumann boundary), ``(B, 2, H, W)``."""
    gx = torch.zeros_like(x)
    gy = torch.zeros_like(x)
    gx[..., :, :-1] = x[..., :, 1:] - x[..., :, :-1]
    gy[..., :-1, :] = x[..., 1:, :] - x[..., :-1, :]
    return torch.cat([gx, gy], dim=1)


def _grad_adjoint(p: Tensor) -> Tensor:
    """``-div``: the adjoint of :func:`_grad`."""
    px, py = p[:, :1], p[:, 1:]
    out = torch.zeros_like(px)
    out[..., :, :-1] -= px[..., :, :-1]
    out[..., :, 1:] += px[..., :, :-1]
    out[..., :-1, :] -= py[..., :-1, :]
    out[..., 1:, :] += py[..., :-1, :]
    return out


def tv_reconstruct(acq: Acquisition, y: Tensor, lam: float, iters: int = 300,
                   x_init: Tensor | None = None) -> Tensor:
    """Total-variation compressed sensing, ``argmin_{0 <= x <= 1} 1/2 ||A x - y||^2 +
    lam TV(x)`` (isotropic TV; Lustig, Donoho & Pauly 2007, "Sparse MRI"), solved with the
    primal-dual algorithm of Chambolle & Pock (2011), Algorithm 1, on the operator scaled to
    unit norm (``A / ||A||``, ``y / ||A||``, ``lam / ||A||^2``: the same minimiser)."""
    op = acq.op
    norm = op.norm(iters=20) if not isinstance(op, MaskedFourier) else 1.0
    ys, lam_s = y / norm, lam / norm**2
    tau = sigma = 0.99 / math.sqrt(1.0 + 8.0)
    x = (zero_filled(acq, y) if x_init is None else x_init).clone()
    xbar = x.clone()
    p = torch.zeros_like(ys)
    q = torch.zeros_like(_grad(x))
    for _ in range(iters):
        p = (p + sigma * (op(xbar) / norm - ys)) / (1 + sigma)
        q = q + sigma * _grad(xbar)
        mag = torch.sqrt((q**2).sum(dim=1, keepdim=True)).clamp_min(1e-12)
        q = q / torch.clamp(mag / lam_s, min=1.0) if lam_s > 0 else torch.zeros_like(q)
        x_new = (x - tau * (op.adjoint(p) / norm + _grad_adjoint(q))).clamp(0, 1)
        xbar = 2 * x_new - x
        x = x_new
    return x


# --------------------------------------------------------------------------- diffusion
#: Hyper-parameters of the diffusion solvers per modality (chosen on validation slices).
DEFAULTS: dict[str, dict[str, dict[str, float]]] = {
    "mri": {"dps": {"steps": 100, "scale": 1.0}, "red_diff": {"steps": 100, "lam": 0.25,
                                                              "lr": 0.1, "obs": 1.0},
            "dc": {"steps": 50, "lam": 0.0, "eta": 0.8, "particles": 1},
            "tv": {"lam": 0.002, "iters": 300}},
    "ct": {"dps": {"steps": 100, "scale": 1.0}, "red_diff": {"steps": 100, "lam": 0.25,
                                                             "lr": 0.1, "obs": 1.0},
           "dc": {"steps": 50, "lam": 0.0, "eta": 0.8, "particles": 1},
           "tv": {"lam": 0.02, "iters": 300}},
}


def _affine_op(prior: DiffusionPrior, acq: Acquisition):  # type: ignore[no-untyped-def]
    """``u -> A(x(u))`` with ``x = (u + 1) / 2``."""
    op = acq.op

    def a(u: Tensor) -> Tensor:
        return op(prior.from_model(u))

    return a


def _grid(prior: DiffusionPrior, steps: int) -> Tensor:
    from polydiff.core.grids import time_grid

    return time_grid(prior.process, steps, "uniform", t_end=0.0)


def dps(prior: DiffusionPrior, acq: Acquisition, y: Tensor, *, steps: int = 100,
        scale: float = 1.0, seed: int = 0, disable: bool | None = True) -> Tensor:
    """Diffusion posterior sampling (Chung et al. 2023, Algorithm 1): core's
    :class:`~polydiff.core.guidance.MeasurementGuidance` (residual-normalised step) around the
    prior, sampled by core's DDPM ancestral sampler."""
    from polydiff.core.guidance import MeasurementGuidance
    from polydiff.core.samplers import sample_ddpm

    guided = MeasurementGuidance(prior.denoiser, _affine_op(prior, acq), y, scale=scale,
                                 norm=True)
    g = torch.Generator(device=prior.device).manual_seed(seed)
    x = prior.process.prior_sample((y.shape[0], 1, prior.size, prior.size), generator=g,
                                   device=prior.device)
    u = sample_ddpm(guided, x, _grid(prior, steps), generator=g, disable=disable)
    return prior.from_model(u).clamp(0, 1)


def dc_sample(prior: DiffusionPrior, acq: Acquisition, y: Tensor, *, steps: int = 50,
              lam: float = 0.0, eta: float = 0.8, seed: int = 0, cg_iters: int = 10,
              particles: int = 1, disable: bool | None = True) -> Tensor:
    """Data-consistency sampling: core's :class:`~polydiff.core.inverse.DataConsistency`
    (every Tweedie estimate replaced by its proximal data-consistent version,
    ``argmin ||A x - y||^2 + lam ||x - x0_hat||^2``: closed form for MRI, conjugate gradients
    for CT) under core's DDIM sampler with ``eta`` (Chung, Lee & Ye 2024, "DDS").

    ``particles > 1`` draws that many posterior samples per image (one batch, independent
    noise) and returns their mean, a Monte-Carlo estimate of the posterior mean (the MMSE
    estimate, which is what PSNR rewards; one sample is a draw, with its hallucinated
    detail)."""
    if particles < 1:
        raise ValueError(f"particles must be >= 1, got {particles}")
    if particles > 1:
        b = y.shape[0]
        yk = y.repeat(particles, *([1] * (y.ndim - 1)))
        out = dc_sample(prior, acq, yk, steps=steps, lam=lam, eta=eta, seed=seed,
                        cg_iters=cg_iters, particles=1, disable=disable)
        return out.reshape(particles, b, *out.shape[1:]).mean(0)
    from polydiff.core.inverse import DataConsistency
    from polydiff.core.samplers import sample_ddim

    op = acq.op
    lam_eff = lam if isinstance(op, MaskedFourier) else max(lam, 1e-3)

    def project(u0: Tensor, t: Tensor) -> Tensor:
        x0 = prior.from_model(u0)
        z = op.prox(x0, y, lam_eff, iters=cg_iters) if not isinstance(op, MaskedFourier) \
            else op.prox(x0, y, lam_eff)
        return prior.to_model(z)

    dc = DataConsistency(prior.denoiser, project)
    g = torch.Generator(device=prior.device).manual_seed(seed)
    x = prior.process.prior_sample((y.shape[0], 1, prior.size, prior.size), generator=g,
                                   device=prior.device)
    u = sample_ddim(dc, x, _grid(prior, steps), eta=eta, generator=g, disable=disable)
    return prior.from_model(u).clamp(0, 1)


def red_diff_reconstruct(prior: DiffusionPrior, acq: Acquisition, y: Tensor, *,
                         steps: int = 100, lam: float = 0.25, lr: float = 0.1,
                         obs: float = 1.0, seed: int = 0) -> Tensor:
    """RED-Diff (Mardani et al. 2024, Algorithm 1) through core's
    :func:`~polydiff.core.inverse.red_diff`: data term ``obs * mean |A x(mu) - y|^2 / 2``
    (per image, normalised by the number of pixels), started from the zero-filled / FBP image,
    times descending over ``steps`` points of ``(t_max, 0)``, ``w(t) = sigma / alpha``."""
    from polydiff.core.inverse import red_diff

    a = _affine_op(prior, acq)
    npix = prior.size * prior.size

    def data_loss(mu: Tensor) -> Tensor:
        r = a(mu) - y
        r2 = (r.abs() ** 2) if r.is_complex() else r * r
        return obs * 0.5 * r2.reshape(r.shape[0], -1).sum(1) / npix

    g = torch.Generator(device=prior.device).manual_seed(seed)
    ts = _grid(prior, steps)[:-1]
    mu = red_diff(prior.denoiser, data_loss, prior.to_model(zero_filled(acq, y)), ts, lam=lam,
                  lr=lr, generator=g)
    return prior.from_model(mu).clamp(0, 1)


def reconstruct(method: str, acq: Acquisition, y: Tensor, prior: DiffusionPrior | None = None,
                *, seed: int = 0, **overrides: Any) -> Tensor:
    """Reconstruct with ``method`` (one of :data:`SOLVERS`) using :data:`DEFAULTS` for the
    modality, updated by ``overrides``."""
    if method not in SOLVERS:
        raise ValueError(f"unknown method {method!r}; expected one of {SOLVERS}")
    if method == "zero_filled":
        return zero_filled(acq, y)
    params = {**DEFAULTS[acq.modality].get(method, {}), **overrides}
    if method == "tv":
        return tv_reconstruct(acq, y, lam=float(params["lam"]),
                              iters=int(params.get("iters", 300)))
    if prior is None:
        raise ValueError(f"method {method!r} needs a diffusion prior")
    with torch.no_grad():
        if method == "dps":
            return dps(prior, acq, y, steps=int(params["steps"]), scale=float(params["scale"]),
                       seed=seed)
        if method == "dc":
            return dc_sample(prior, acq, y, steps=int(params["steps"]),
                             lam=float(params["lam"]), eta=float(params["eta"]), seed=seed,
                             particles=int(params.get("particles", 1)))
    return red_diff_reconstruct(prior, acq, y, steps=int(params["steps"]),
                                lam=float(params["lam"]), lr=float(params["lr"]),
                                obs=float(params["obs"]), seed=seed)
