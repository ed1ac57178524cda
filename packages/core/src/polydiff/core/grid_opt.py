"""Calibrated sampling grids: choose the time steps of a few-step sampler for one model.

At 5-10 network evaluations the placement of the time steps matters as much as the solver.
Following the idea of per-model optimised schedules (Sabour, Fidler & Kreis 2024, "Align Your
Steps: Optimizing Sampling Schedules in Diffusion Models"; Xue et al. 2024, "Accelerating
Diffusion Sampling with Optimized Time Steps"), :func:`calibrate_grid` minimises the global
error of a given sampler against a high-accuracy probability-flow ODE solution over a small
calibration batch of noise, by coordinate descent with golden-section line searches on the
log noise levels ``log sigma~ = -lambda/2`` of the grid's interior points (kept ordered).

The result is a plain grid (a float64 tensor of process times) usable with the sampler it was
calibrated for; evaluate it on noise other than the calibration batch. Cost: about
``sweeps * (steps - 1) * 10`` sampler runs on the calibration batch, once per model and NFE.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from polydiff.core.denoiser import Denoiser
from polydiff.core.grids import time_grid

__all__ = ["calibrate_grid"]

_GOLD = (math.sqrt(5.0) - 1.0) / 2.0


def _reference(denoiser: Denoiser, x: Tensor, t_start: float, t_end: float | None,
               cond: dict[str, Any] | None) -> Tensor:
    """A tight adaptive PF-ODE solution from ``t_start`` to ``t_end`` (None: to sigma = 0,
    finished by the denoiser at the smallest time of the process)."""
    from polydiff.core.samplers.adaptive import solve_pf_ode

    p = denoiser.process
    end = p.t_min if t_end is None or (p.t_zero is not None and t_end == p.t_zero) else t_end
    z, _ = solve_pf_ode(denoiser, x.double(), t_start, end, cond=cond, rtol=1e-8, atol=1e-8)
    if end == t_end:
        return z
    tt = torch.full((x.shape[0],), float(end), dtype=torch.float64)
    return denoiser.x0(z, tt, **(cond or {})).double()


@torch.no_grad()
def calibrate_grid(denoiser: Denoiser, sampler: Callable[..., Tensor], x: Tensor, steps: int,
                   *, cond: dict[str, Any] | None = None, t_start: float | None = None,
                   t_end: float | None = None, final_zero: bool = True,
                   reference: Tensor | None = None, init: str = "logsnr",
                   sampler_kwargs: dict[str, Any] | None = None, sweeps: int = 3,
                   line_evals: int = 10) -> Tensor:
    """A time grid of ``steps`` steps minimising ``sampler``'s RMS error on ``x``.

    Args:
        denoiser: the model (a :class:`~polydiff.core.denoiser.Denoiser`).
        sampler: a polydiff sampler function (e.g. ``sample_unipc``).
        x: calibration batch at ``t_start`` (e.g. ``process.prior_sample``).
        steps: number of sampler steps (NFE for one-evaluation-per-step samplers).
        t_start, t_end, final_zero, init: the starting grid, as :func:`time_grid`.
        reference: the exact endpoints for ``x`` if known; otherwise computed with the adaptive
            probability-flow ODE solver at rtol 1e-8.
        sampler_kwargs: extra keyword arguments of ``sampler`` (e.g. ``order=3``).
        sweeps: coordinate-descent sweeps over the interior points.
        line_evals: golden-section evaluations per coordinate and sweep.

    Returns:
        The calibrated grid (float64, descending process times).
    """
    p = denoiser.process
    kwargs = dict(sampler_kwargs or {})
    t0 = float(p.t_max if t_start is None else t_start)
    grid = time_grid(p, steps, init, t_start=t0, t_end=t_end, final_zero=final_zero)
    zero = final_zero and p.t_zero is not None
    if reference is None:
        reference = _reference(denoiser, x, t0, None if zero else float(grid[-1]), cond)
    reference = reference.double()
    if grid.numel() <= 2 or (zero and grid.numel() <= 3 and t_end is not None):
        return grid
    # log sigma~ of every point but the fixed start and the fixed end (or the zero point)
    free = slice(1, grid.numel() - 1)
    logs = torch.log(p.sigma_tilde(grid))
    s_hi = float(logs[0])
    s_lo = float(torch.log(p.sigma_tilde(torch.tensor(p.t_min, dtype=torch.float64))))
    if not zero:
        s_lo = float(logs[-1])
    params = logs[free].clone()

    def to_grid(v: Tensor) -> Tensor:
        ts = grid.clone()
        ts[free] = p.t_from_sigma_tilde(torch.exp(v))
        return ts

    def loss(v: Tensor) -> float:
        out = sampler(denoiser, x, to_grid(v), cond=cond, disable=True, **kwargs)
        err = float((out.double() - reference).pow(2).mean().sqrt())
        return err if math.isfinite(err) else math.inf

    best = loss(params)
    n = params.numel()
    for _ in range(sweeps):
        improved = False
        for i in range(n):
            hi = s_hi if i == 0 else float(params[i - 1])
            lo = float(params[i + 1]) if i < n - 1 else s_lo
            span = hi - lo
            if span <= 1e-9:
                continue
            pad = 1e-3 * span  # keep points strictly ordered

            def at(w: float, i: int = i, lo: float = lo, span: float = span,
                   pad: float = pad) -> float:
                v = params.clone()
                v[i] = lo + pad + w * (span - 2 * pad)
                return loss(v)

            a, b = 0.0, 1.0
            c, d = b - _GOLD * (b - a), a + _GOLD * (b - a)
            fc, fd = at(c), at(d)
            for _ in range(max(0, line_evals - 2)):
                if fc < fd:
                    b, d, fd = d, c, fc
                    c = b - _GOLD * (b - a)
                    fc = at(c)
                else:
                    a, c, fc = c, d, fd
                    d = a + _GOLD * (b - a)
                    fd = at(d)
            w, fw = (c, fc) if fc < fd else (d, fd)
            if fw < best:
                params[i] = lo + pad + w * (span - 2 * pad)
                best, improved = fw, True
        if not improved:
            break
    return to_grid(params)
