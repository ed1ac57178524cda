"""Sampling time grids, all returned as float64 tensors of *process time*, descending.

``time_grid(process, n, kind)`` gives ``n`` steps: ``n + 1`` times from ``t_start`` (default
``process.t_max``) down to ``t_end`` (default ``process.t_min``); with ``final_zero=True`` (and a
process that has a zero-noise time) the last of the ``n`` steps instead lands on
``process.t_zero`` where ``sigma = 0``, as in Karras et al. 2022 (Algorithm 1's
``sigma_N = 0``) and diffusers' ``final_sigmas_type="zero"``. Spacings:

* ``"uniform"``: uniform in ``t`` (DDPM/DDIM "linspace"; with ``t_end=process.t_zero`` it
  is diffusers' ``timestep_spacing="linspace"`` grid, whose last step lands on sigma = 0);
* ``"logsnr"``: uniform in log-SNR ``lambda`` (Lu et al. 2022, DPM-Solver, Sec. 3.3);
* ``"edm"``: uniform in ``sigma~^(1/rho)``, ``sigma~ = sigma/alpha``, ``rho = 7``
  (Karras et al. 2022, eq. 5);
* ``"quadratic"``: quadratic in ``t`` (Song et al. 2021, DDIM, App. D.3);
* ``"list"``: the explicit times given as ``times``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from polydiff.core.processes.gaussian import GaussianProcess

__all__ = ["GRID_KINDS", "time_grid", "nfe_of_grid"]

GRID_KINDS = ("uniform", "logsnr", "edm", "quadratic", "list")


def time_grid(process: GaussianProcess, n: int, kind: str = "logsnr", *,
              t_start: float | None = None, t_end: float | None = None, rho: float = 7.0,
              final_zero: bool = False, times: Sequence[float] | Tensor | None = None,
              device: torch.device | str | None = None) -> Tensor:
    """A descending grid of ``n + 1`` process times (see the module docstring)."""
    if kind == "list":
        if times is None:
            raise ValueError("kind='list' needs times=[...]")
        ts = torch.as_tensor(times, dtype=torch.float64, device=device).flatten()
        if ts.numel() < 2 or not bool((ts[1:] < ts[:-1]).all()):
            raise ValueError("an explicit time grid needs at least 2 strictly decreasing times")
        return ts
    if kind not in GRID_KINDS:
        raise ValueError(f"unknown grid kind {kind!r}; expected one of {GRID_KINDS}")
    if n < 1:
        raise ValueError(f"a grid needs at least one step, got n={n}")
    t0 = float(process.t_max if t_start is None else t_start)
    t1 = float(process.t_min if t_end is None else t_end)
    if not t0 > t1:
        raise ValueError(f"t_start ({t0}) must exceed t_end ({t1})")
    if kind in ("logsnr", "edm") and t1 == process.t_zero:
        raise ValueError(f"a {kind!r} grid cannot be spaced down to sigma = 0: end at a "
                         "positive noise level and pass final_zero=True")
    zero = final_zero and process.t_zero is not None
    m = n - 1 if zero else n  # intervals spanned by the spacing rule
    if m == 0:
        ts = torch.tensor([t0], dtype=torch.float64)
    else:
        u = torch.linspace(0.0, 1.0, m + 1, dtype=torch.float64)
        ends = torch.tensor([t0, t1], dtype=torch.float64)
        if kind == "uniform":
            ts = t0 + u * (t1 - t0)
        elif kind == "quadratic":
            ts = t1 + (t0 - t1) * (1.0 - u) ** 2
        elif kind == "logsnr":
            lam = process.log_snr(ends)
            ts = process.t_from_log_snr(lam[0] + u * (lam[1] - lam[0]))
        else:  # edm
            s = process.sigma_tilde(ends) ** (1.0 / rho)
            ts = process.t_from_sigma_tilde((s[0] + u * (s[1] - s[0])) ** rho)
        ts[0], ts[-1] = t0, t1  # exact ends despite round trips through the inverse
    if zero:
        ts = torch.cat([ts, torch.tensor([float(process.t_zero)], dtype=torch.float64)])
    return ts.to(device)


def nfe_of_grid(ts: Tensor, evals_per_step: int = 1, last_step_evals: int | None = None) -> int:
    """Network evaluations used by a sampler over ``ts`` (``len(ts) - 1`` steps)."""
    steps = ts.numel() - 1
    last = evals_per_step if last_step_evals is None else last_step_evals
    return (steps - 1) * evals_per_step + last
