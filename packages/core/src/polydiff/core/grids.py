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
* ``"flow"``: uniform in the flow-matching time ``r = sigma / (alpha + sigma) =
  sigma~ / (1 + sigma~)`` (the time of rectified flow, Liu et al. 2023, and of Esser et al.
  2024), whatever the process's own time variable; with ``t_end=process.t_zero`` the last
  step lands on ``sigma = 0`` (``r = 0``). ``shift = s`` warps the uniform ``u`` in
  ``[0, 1]`` to ``s u / (1 + (s - 1) u)`` before mapping it onto ``[r_end, r_start]``
  (Esser et al. 2024, eq. 23, "timestep shifting"): ``s > 1`` puts more steps at high
  noise;
* ``"list"``: the explicit times given as ``times``.

With ``t_end=process.t_zero`` (``"uniform"``, ``"quadratic"`` and ``"flow"`` only) the spacing
itself ends at ``sigma = 0``: all ``n`` steps follow the rule and ``final_zero`` adds nothing.

:func:`default_grid` is the recommended grid for few-step ODE sampling: ``"flow"`` spacing
down to ``sigma = 0`` for every process family (what measured best across DDPM's discrete
schedule, continuous VP, VE, EDM and interpolants; see ``packages/core/README.md``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from polydiff.core.processes.gaussian import GaussianProcess

__all__ = ["GRID_KINDS", "time_grid", "default_grid", "check_grid", "nfe_of_grid"]

GRID_KINDS = ("uniform", "logsnr", "edm", "quadratic", "flow", "list")


def time_grid(process: GaussianProcess, n: int, kind: str = "logsnr", *,
              t_start: float | None = None, t_end: float | None = None, rho: float = 7.0,
              final_zero: bool = False, times: Sequence[float] | Tensor | None = None,
              shift: float = 1.0, device: torch.device | str | None = None) -> Tensor:
    """A descending grid of ``n + 1`` process times (see the module docstring)."""
    if kind == "list":
        if times is None:
            raise ValueError("kind='list' needs times=[...]")
        ts = torch.as_tensor(times, dtype=torch.float64, device=device).flatten()
        if ts.numel() < 2 or not bool((ts[1:] < ts[:-1]).all()):
            raise ValueError("an explicit time grid needs at least 2 strictly decreasing times, "
                             f"got {_show(ts)}")
        return ts
    if kind not in GRID_KINDS:
        raise ValueError(f"unknown grid kind {kind!r}; expected one of {GRID_KINDS}")
    if n < 1:
        raise ValueError(f"a grid needs at least one step, got n={n}")
    if not (shift > 0 and math.isfinite(shift)):
        raise ValueError(f"shift must be positive, got {shift}")
    t0 = float(process.t_max if t_start is None else t_start)
    t1 = float(process.t_min if t_end is None else t_end)
    if not t0 > t1:
        raise ValueError(f"t_start ({t0}) must exceed t_end ({t1})")
    if kind in ("logsnr", "edm") and t1 == process.t_zero:
        raise ValueError(f"a {kind!r} grid cannot be spaced down to sigma = 0: end at a "
                         "positive noise level and pass final_zero=True")
    # a spacing that already ends at sigma = 0 needs no extra final step
    zero = final_zero and process.t_zero is not None and t1 != process.t_zero
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
        elif kind == "flow":
            st = process.sigma_tilde(ends)
            r = st / (1.0 + st)
            w = shift * (1.0 - u) / (1.0 + (shift - 1.0) * (1.0 - u))  # 1 -> 0, warped
            r = r[1] + w * (r[0] - r[1])
            ts = process.t_from_sigma_tilde((r / (1.0 - r)).clamp_min(1e-300))
        elif kind == "logsnr":
            lam = process.log_snr(ends)
            ts = process.t_from_log_snr(lam[0] + u * (lam[1] - lam[0]))
        else:  # edm
            s = process.sigma_tilde(ends) ** (1.0 / rho)
            ts = process.t_from_sigma_tilde((s[0] + u * (s[1] - s[0])) ** rho)
        ts[0], ts[-1] = t0, t1  # exact ends despite round trips through the inverse
    if zero:
        assert process.t_zero is not None  # part of the condition for zero
        ts = torch.cat([ts, torch.tensor([float(process.t_zero)], dtype=torch.float64)])
    return ts.to(device)


def default_grid(process: GaussianProcess, n: int, *, t_start: float | None = None,
                 shift: float = 1.0, device: torch.device | str | None = None) -> Tensor:
    """The recommended grid of ``n`` steps for few-step ODE sampling of ``process``:
    ``"flow"`` spacing (uniform in ``sigma / (alpha + sigma)``) from ``t_start`` (default
    ``t_max``) down to ``sigma = 0`` (``process.t_zero``; ``t_min`` for processes without
    one, such as VE).

    Measured on exact Gaussian-mixture test beds (best of DPM-Solver++ 2M/3M and UniPC
    bh1/bh2 at 5, 10 and 20 steps; ``tools/bench/samplers.py --grids``), it has the best
    geometric-mean error of all grid kinds on every process family tried (VPDiscrete linear
    and scaled-linear, VPLinear, VPCosine, VE, EDM, linear and trigonometric interpolants) and
    is the best at every step count on VPCosine, VE, EDM and the interpolants. On DDPM's
    schedules uniform-to-zero spacing is 1.4-2.4x better at 5 steps and quadratic / EDM
    spacing 1.3-1.9x better at 20. ``"logsnr"`` with ``final_zero`` (whose last positive
    point at ``t_min`` costs a step) was 1.5-4x worse at 5 steps, and 4-24x on interpolants.
    ``shift`` (``"flow"``'s timestep shift) is a one-number knob to tune per model:
    :func:`~polydiff.core.samplers.bespoke.fit_best_solver` chooses it on
    held-out calibration noise.
    """
    end = process.t_zero if process.t_zero is not None else process.t_min
    return time_grid(process, n, "flow", t_start=t_start, t_end=end, shift=shift,
                     device=device)


def check_grid(process: GaussianProcess, ts: Tensor) -> None:
    """Raise a ``ValueError`` naming the grid unless ``ts`` is a valid sampling grid of
    ``process``: 1-d, at least 2 finite, strictly decreasing times, with ``sigma > 0`` at
    every time but the last."""
    ts = torch.as_tensor(ts)
    problem = None
    if ts.ndim != 1 or ts.numel() < 2:
        problem = "it must be 1-d with at least 2 times"
    elif not bool(torch.isfinite(ts).all()):
        problem = "it has non-finite times"
    elif not bool((ts[1:] < ts[:-1]).all()):
        i = int(torch.nonzero(ts[1:] >= ts[:-1])[0])
        problem = (f"times must be strictly decreasing, but ts[{i + 1}] = {float(ts[i + 1]):.6g}"
                   f" >= ts[{i}] = {float(ts[i]):.6g}")
    else:
        sig = process.sigma(ts[:-1].detach().to(torch.float64))
        if not bool((sig > 0).all()):
            i = int(torch.nonzero(sig <= 0)[0])
            problem = (f"sigma must be > 0 at every time but the last, but sigma(ts[{i}] = "
                       f"{float(ts[i]):.6g}) = {float(sig[i]):.3g}")
    if problem is not None:
        raise ValueError(f"invalid time grid {_show(ts)}: {problem}")


def _show(ts: Tensor) -> str:
    vals = torch.as_tensor(ts).detach().flatten().tolist()
    text = [f"{v:.4g}" for v in vals]
    if len(text) > 12:
        text = text[:6] + ["..."] + text[-5:]
    return f"[{', '.join(text)}] ({len(vals)} times)"


def nfe_of_grid(ts: Tensor, evals_per_step: int = 1, last_step_evals: int | None = None) -> int:
    """Network evaluations used by a sampler over ``ts`` (``len(ts) - 1`` steps)."""
    steps = ts.numel() - 1
    last = evals_per_step if last_step_evals is None else last_step_evals
    return (steps - 1) * evals_per_step + last
