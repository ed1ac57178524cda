"""Bespoke (learned, per-model) non-stationary solvers of the probability-flow ODE.

Implements the Bespoke Non-Stationary (BNS) solvers of Shaul, Singer, Ben-Hamu, Gat, Pooladian
& Lipman (2024), "Bespoke Non-Stationary Solvers for Fast Sampling of Diffusion and Flow
Models" (ICML 2024), in the data-prediction form: with ``D_j`` the denoised estimate (centred
``x0``) at ``(z_j, t_j)``, every state is a learned linear combination of the starting point
and all previous estimates,

    z_{i+1} = a_i z_0 + sum_{j <= i} b_ij D_j,        i = 0 .. n - 1,

on learned time points ``t_1 > .. > t_{n-1}`` (one denoiser call per step, NFE = ``n``). As in
Shaul et al. (2024, ICLR), "Bespoke Solvers for Generative Flow Models", and Tong et al.
(2025), "Learning to Discretize Denoising Diffusion ODEs" (LD3), the parameters are fitted to
one model by minimising the global error to accurate probability-flow ODE solutions on a small
calibration batch of noise, differentiating through the denoiser.

Parameterisation. All solver arithmetic is done in the scaled variables ``x~ = z / alpha``,
``sigma~ = sigma / alpha = exp(-lambda)`` (``lambda`` the half-log-SNR), where every Gaussian
process has the same probability-flow ODE, so a solver is a function of the ``sigma~`` grid
only. The interior points are ordered by construction: ``log sigma~_k`` is ``log sigma~`` of
the start minus ``(log sigma~_start - log sigma~_low) * cumsum(softmax(theta))_k``, ``sigma~_low``
being ``sigma~(t_min)`` (``final_zero``: the last step goes to ``sigma = 0``) or
``sigma~(t_end)``. The coefficients are the *residual* over a classical solver recomputed
from the current times at every forward pass,

    x~_{i+1} = (c_i + dc_i) (z_0 / sigma_0) + sum_j (B_ij + dB_ij) D_j,

with ``(c, B)`` the unrolled recursion of DDIM (= DPM-Solver-1), DPM-Solver++(2M) (Lu et al.
2022) or UniPC (Zhao et al. 2023) on that grid and the learned ``(dc, dB)`` initialised at 0:
at initialisation the bespoke solver *is* its base solver, and times and coefficients stay
consistent while both are learned. ``z_0 / sigma_0`` is the unit-scale noise, so ``dc`` and
``dB`` are both on the data scale.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from polydiff.core.denoiser import Denoiser
from polydiff.core.grids import time_grid
from polydiff.core.samplers._common import Callback, Sampling
from polydiff.core.samplers.dpmsolver import LOWER_ORDER_FINAL_STEPS
from polydiff.core.shapes import append_dims
from polydiff.core.utils import progress

__all__ = ["BASES", "GENERIC", "SEARCH_GRIDS", "BespokeSolver", "SolverSearch", "base_coefficients",
           "fit_bespoke", "fit_best_solver", "sample_bespoke", "search_grid"]

BASES = ("ddim", "dpmpp_2m", "unipc")
_F64 = torch.float64


# --------------------------------------------------------------------------- base solvers
def _phi(k: int, z: Tensor) -> Tensor:
    """``phi_k(z) = sum_m z^m / (m + k)!`` (``phi_0 = e^z``), differentiable: Taylor series
    for ``|z| < 1``, the recursion ``phi_{k+1} = (phi_k - 1/k!) / z`` elsewhere."""
    if k == 0:
        return torch.exp(z)
    small = z.abs() < 1.0
    zs = torch.where(small, z, torch.zeros_like(z))
    term = torch.full_like(z, 1.0 / math.factorial(k))
    series = term
    for m in range(1, 25):
        term = term * zs / (m + k)
        series = series + term
    zl = torch.where(small, torch.ones_like(z), z)
    val = torch.exp(zl)
    for j in range(k):
        val = (val - 1.0 / math.factorial(j)) / zl
    return torch.where(small, series, val)


def _unit(n: int, j: int, like: Tensor) -> Tensor:
    """Coefficient vector over ``[x~_0, D_0 .. D_{n-1}]`` selecting ``D_j``."""
    e = torch.zeros(n + 1, dtype=like.dtype, device=like.device)
    e[j + 1] = 1.0
    return e


def _vandermonde_solve(r: list[Tensor], g: list[Tensor]) -> list[Tensor]:
    """Solve ``R a = g`` with ``R[j, k] = r_k^j`` (differentiable)."""
    m = len(r)
    rr = torch.stack(r)
    mat = torch.stack([rr**j for j in range(m)])
    return list(torch.linalg.solve(mat, torch.stack(g)).unbind(0))


def base_coefficients(lam: Tensor, base: str = "dpmpp_2m", zero_end: bool = False
                      ) -> tuple[Tensor, Tensor]:
    """The classical solver ``base`` on the half-log-SNR grid ``lam`` (``n + 1`` points,
    increasing; with ``zero_end`` the last point is ``sigma = 0`` and ``lam[-1]`` is ignored)
    unrolled into ``x~_{i+1} = A_i x~_0 + sum_j B_ij D_j`` in the scaled variable ``x~ = z /
    alpha``. Returns ``(A (n,), B (n, n))``, differentiable in ``lam``.

    Step rules (as the samplers of :mod:`~polydiff.core.samplers.dpmsolver` and
    :mod:`~polydiff.core.samplers.unipc` with their defaults, scaled by ``1 / alpha_{i+1}``):
    ``"ddim"``: ``x~' = e^{-h} x~ + (1 - e^{-h}) D_i``; ``"dpmpp_2m"``: DPM-Solver++(2M)
    (Lu et al. 2022, Algorithm 2, midpoint form, ``lower_order_final``); ``"unipc"``: UniPC-3
    with ``B(h) = e^{-h} - 1`` and the UniC corrector (Zhao et al. 2023, Algorithms 1-2,
    ``lower_order_final``). The step into ``sigma = 0`` is ``x~' = D_i`` for all three.
    """
    if base not in BASES:
        raise ValueError(f"base must be one of {BASES}, got {base!r}")
    n = lam.numel() - 1
    rows: list[Tensor] = []
    x = torch.zeros(n + 1, dtype=lam.dtype, device=lam.device)
    x[0] = 1.0
    x_corr = x  # UniPC: corrected state at the current point
    order = {"ddim": 1, "dpmpp_2m": 2, "unipc": 3}[base]
    lof = base != "dpmpp_2m" or n < LOWER_ORDER_FINAL_STEPS
    prev: dict[str, Any] | None = None
    for i in range(n):
        e_i = _unit(n, i, lam)
        if base == "unipc" and prev is not None and prev["corr"] is not None:
            # UniC: correct the state at t_i with the new estimate D_i
            w = prev["corr"]
            x_corr = prev["ex"] * prev["x"] + w[0] * e_i
            for k, wk in enumerate(w[1:]):
                x_corr = x_corr + wk * _unit(n, prev["i"] - k, lam)
        elif base == "unipc":
            x_corr = x
        if zero_end and i == n - 1:
            x = e_i
            rows.append(x)
            continue
        h = lam[i + 1] - lam[i]
        ex = torch.exp(-h)
        p = min(order, i + 1, n - i) if lof else min(order, i + 1)
        if base != "unipc":
            x = ex * x - torch.expm1(-h) * e_i
            if p == 2:  # DPM-Solver++(2M), midpoint: + phi_1(h)/2 (D_i - D_{i-1}) / r0
                c = -0.5 * torch.expm1(-h) * h / (lam[i] - lam[i - 1])
                x = x + c * (e_i - _unit(n, i - 1, lam))
            rows.append(x)
            continue
        hh = -h
        hp1 = torch.expm1(hh)  # e^{-h} - 1; B(h) for bh2
        r = [(lam[i - k] - lam[i]) / h for k in range(1, p)] + [torch.ones_like(h)]
        g = [math.factorial(j) * hh * _phi(j + 1, hh) / hp1 for j in range(1, p + 1)]
        rho_p = [] if p == 1 else ([0.5 * torch.ones_like(h)] if p == 2
                                    else _vandermonde_solve(r[: p - 1], g[: p - 1]))
        xn = ex * x_corr + (-hp1 + hp1 * sum((rk / r[k] for k, rk in enumerate(rho_p)),
                                             torch.zeros_like(h))) * e_i
        for k, rk in enumerate(rho_p):
            xn = xn - hp1 * rk / r[k] * _unit(n, i - k - 1, lam)
        corr = None
        if i < n - 1:
            rho_c = [0.5 * torch.ones_like(h)] if p == 1 else _vandermonde_solve(r, g)
            w_i = -hp1 + hp1 * (sum((rc / r[k] for k, rc in enumerate(rho_c[:-1])),
                                    torch.zeros_like(h)) + rho_c[-1])
            corr = [-hp1 * rho_c[-1], w_i] + [-hp1 * rc / r[k]
                                              for k, rc in enumerate(rho_c[:-1])]
        prev = {"corr": corr, "ex": ex, "x": x_corr, "i": i}
        x = xn
        rows.append(x)
    mat = torch.stack(rows)
    return mat[:, 0], mat[:, 1:]


# --------------------------------------------------------------------------- time points
def _log_st(process: Any, t: float) -> float:
    return float(torch.log(process.sigma_tilde(torch.tensor([float(t)], dtype=_F64)))[0])


def _times_from_log_st(process: Any, s: Tensor) -> Tensor:
    """Process times at ``log sigma~ = s``, differentiable in ``s`` whatever the inverse:
    the value of ``process.t_from_sigma_tilde`` with the implicit-function derivative
    ``dt/ds = 1 / (d log sigma~ / dt)``."""
    t0 = process.t_from_sigma_tilde(torch.exp(s.detach())).to(s.dtype)
    if not s.requires_grad:
        return t0
    slope = process.d_sigma(t0) / process.sigma(t0) - process.d_alpha(t0) / process.alpha(t0)
    return t0 + (s - s.detach()) / slope.detach()


class _Params(nn.Module):
    """The learnable solver: time logits ``theta`` and the residual coefficients."""

    mask: Tensor  # buffer

    def __init__(self, process: Any, t_start: float, t_low: float, zero_end: bool,
                 t_last: float, init_times: Tensor, base: str):
        super().__init__()
        self.process, self.base, self.zero_end = process, base, zero_end
        self.t_start, self.t_last = t_start, t_last
        self.s_hi, self.s_lo = _log_st(process, t_start), _log_st(process, t_low)
        n = init_times.numel() - 1
        s_init = torch.log(process.sigma_tilde(init_times[1:n].to(_F64)))
        u = torch.cat([torch.tensor([self.s_hi], dtype=_F64), s_init,
                       torch.tensor([self.s_lo], dtype=_F64)])
        inc = (u[:-1] - u[1:]) / (self.s_hi - self.s_lo)
        if not bool((inc > 0).all()):
            raise ValueError("the initial grid must be strictly inside (t_low, t_start)")
        self.theta = nn.Parameter(torch.log(inc))
        self.dc = nn.Parameter(torch.zeros(n, dtype=_F64))
        self.db = nn.Parameter(torch.zeros(n, n, dtype=_F64))
        self.register_buffer("mask", torch.tril(torch.ones(n, n, dtype=_F64)))

    def log_sigma_tilde(self) -> Tensor:
        """``log sigma~`` of the ``n - 1`` interior points (decreasing)."""
        w = torch.softmax(self.theta, 0)
        return self.s_hi - (self.s_hi - self.s_lo) * torch.cumsum(w, 0)[:-1]

    def solver(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(times (n + 1,), a (n,), b (n, n))`` of ``z_{i+1} = a_i z_0 + sum_j b_ij D_j``."""
        p = self.process
        s_in = self.log_sigma_tilde()
        one = torch.ones(1, dtype=_F64, device=s_in.device)
        t_in = _times_from_log_st(p, s_in)
        times = torch.cat([one * self.t_start, t_in, one * self.t_last])
        s_end = one * (0.0 if self.zero_end else _log_st(p, self.t_last))
        lam = -torch.cat([one * self.s_hi, s_in, s_end])
        a_t, s_t = p.alpha(times).to(_F64), p.sigma(times).to(_F64)
        st0 = math.exp(self.s_hi)
        big_a, big_b = base_coefficients(lam, self.base, self.zero_end)
        c = big_a * st0 + self.dc  # weight of the unit noise z_0 / sigma_0 in x~_{i+1}
        b = (big_b + self.db * self.mask) * a_t[1:, None]
        return times, a_t[1:] * c / s_t[0], b


# --------------------------------------------------------------------------- the solver
def _rollout(s: Sampling, times: Tensor, a: Tensor | list[float], b: Tensor | list[list[float]],
             disable: bool | None = True) -> Tensor:
    """``z_{i+1} = a_i z_0 + sum_j b_ij D_j``: one denoiser call per step."""
    z0 = z = s.z
    ds: list[Tensor] = []
    for i in progress(len(a), disable=disable):
        d, _ = s.denoise_at(z, times[i].expand(s.batch))
        ds.append(d)
        if torch.is_tensor(a):
            z = z0 * a[i]
            for j in range(i + 1):
                z = z + b[i][j] * ds[j]
        else:
            assert not torch.is_tensor(b), "a and b are both tensors or both lists"
            z = z0 * a[i] if a[i] != 0.0 else torch.zeros_like(z0)
            for j in range(i + 1):
                if b[i][j] != 0.0:
                    z.add_(ds[j], alpha=b[i][j])
        s.report(i, z, d)
    return z


class _Probe(Denoiser):
    """A linear probe: its ``k``-th call returns the unit vector ``e_{k+1}`` as the estimate
    (``BespokeSolver.from_sampler``)."""

    def __init__(self, process: Any, n: int):
        super().__init__(process)
        self.n, self.calls = n, 0
        self.inputs: list[Tensor] = []

    def x0_eps(self, x: Tensor, t: Tensor, **cond: Any) -> tuple[Tensor, Tensor]:
        self.inputs.append(x.detach().clone())
        x0 = torch.zeros_like(x)
        if self.calls < self.n:
            x0[:, self.calls + 1] = 1.0
        self.calls += 1
        a = append_dims(self.process.alpha(t).to(x.dtype), x)
        sg = append_dims(self.process.sigma(t).to(x.dtype), x)
        return x0, (x - a * x0) / sg

    def center(self, cond: dict[str, Any]) -> Tensor | None:
        return None  # solver coefficients do not depend on the centre


@dataclass
class BespokeSolver:
    """A fitted bespoke solver: ``z_{i+1} = a_i z_0 + sum_{j <= i} b_ij D_j`` on ``times``
    (Shaul et al. 2024, BNS solvers in data-prediction form; see the module docstring).

    Attributes:
        times: ``(n + 1,)`` descending process times, float64 (:attr:`grid`).
        a: ``(n,)`` weights of the (centred) starting point, float64.
        b: ``(n, n)`` lower-triangular weights of the denoised estimates, float64.
        meta: JSON-serialisable metadata (base solver, losses, process name, ...).
    """

    times: Tensor
    a: Tensor
    b: Tensor
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.times = torch.as_tensor(self.times, dtype=_F64).detach().cpu()
        self.a = torch.as_tensor(self.a, dtype=_F64).detach().cpu()
        self.b = torch.as_tensor(self.b, dtype=_F64).detach().cpu()
        n = self.a.numel()
        if self.times.shape != (n + 1,) or self.b.shape != (n, n):
            raise ValueError("need times (n + 1,), a (n,) and b (n, n)")
        if not bool((self.times[1:] < self.times[:-1]).all()):
            raise ValueError("bespoke solver times must be strictly decreasing")

    @property
    def steps(self) -> int:
        """Number of steps = denoiser calls (NFE)."""
        return self.a.numel()

    @property
    def grid(self) -> Tensor:
        """The descending process times (float64)."""
        return self.times.clone()

    @torch.no_grad()
    def sample(self, denoiser: Denoiser, x: Tensor, *, cond: dict[str, Any] | None = None,
               callback: Callback | None = None, disable: bool | None = None) -> Tensor:
        """Run the solver from ``x`` at ``times[0]`` (see :func:`sample_bespoke`)."""
        s = Sampling(denoiser, x, self.times, cond, callback)
        z = _rollout(s, s.ts, self.a.tolist(), self.b.tolist(), disable)
        return s.finish(z).to(x.dtype)

    @classmethod
    def from_sampler(cls, sampler: str | Callable[..., Tensor], process: Any, ts: Tensor,
                     meta: dict[str, Any] | None = None, **hyper: Any) -> BespokeSolver:
        """The exact :class:`BespokeSolver` form of a classical one-evaluation-per-step
        sampler on the grid ``ts`` (a registry name or a sampler function, with its
        hyperparameters): any such solver that is linear in the state and the denoised
        estimates (DDIM, DPM-Solver++ 2M/3M, UniPC, iPNDM, Euler) is ``z_{i+1} = a_i z_0 +
        sum_j b_ij D_j`` on its grid, ``z_{i+1}`` being where it evaluates the denoiser next
        (and its output for ``i = n - 1``). The coefficients are read off by running it once
        on a probe denoiser whose ``j``-th estimate is the ``j``-th unit vector."""
        if isinstance(sampler, str):
            from polydiff.core.samplers.registry import get_sampler

            spec = get_sampler(sampler)
            fn, hyper = spec.fn, {**spec.defaults, **hyper}
            name = sampler
        else:
            fn, name = sampler, getattr(sampler, "__name__", "sampler")
        ts = torch.as_tensor(ts, dtype=_F64).detach().cpu().flatten()
        n = ts.numel() - 1
        probe = _Probe(process, n)
        x = torch.zeros(1, n + 1, dtype=_F64)
        x[0, 0] = 1.0
        out = fn(probe, x, ts, disable=True, **hyper)
        # the states where the denoiser was evaluated after the start, then the output
        rows = [v[0] for v in probe.inputs[1:]] + [out[0].to(_F64)]
        if probe.calls != n:
            raise ValueError(f"{name} made {probe.calls} denoiser calls on {n} steps: only "
                             "one-evaluation-per-step samplers have a bespoke form")
        mat = torch.stack(rows)
        a, b = mat[:, 0], mat[:, 1:]
        if bool((torch.triu(b, diagonal=1).abs() > 0).any()):
            raise ValueError(f"{name} is not a one-evaluation-per-step linear multistep method")
        return cls(ts, a, b, {"base": name, "steps": n, "generic": True, **(meta or {})})

    def to_dict(self) -> dict[str, Any]:
        return {"format": "polydiff.bespoke/1", "times": self.times.tolist(),
                "a": self.a.tolist(), "b": self.b.tolist(), "meta": self.meta}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BespokeSolver:
        if d.get("format") != "polydiff.bespoke/1":
            raise ValueError(f"not a polydiff bespoke solver: format {d.get('format')!r}")
        return cls(torch.tensor(d["times"], dtype=_F64), torch.tensor(d["a"], dtype=_F64),
                   torch.tensor(d["b"], dtype=_F64), dict(d.get("meta", {})))

    def save(self, path: str) -> None:
        """Write the solver as JSON (floats round-trip exactly)."""
        with open(path, "w") as fh:
            json.dump(self.to_dict(), fh)

    @classmethod
    def load(cls, path: str) -> BespokeSolver:
        with open(path) as fh:
            return cls.from_dict(json.load(fh))


@torch.no_grad()
def sample_bespoke(denoiser: Denoiser, x: Tensor, ts: Tensor | BespokeSolver | None = None, *,
                   solver: BespokeSolver | None = None, cond: dict[str, Any] | None = None,
                   callback: Callback | None = None, disable: bool | None = None) -> Tensor:
    """Sample with a fitted :class:`BespokeSolver` (Shaul et al. 2024, "Bespoke Non-Stationary
    Solvers for Fast Sampling of Diffusion and Flow Models"): ``x`` is the batch at
    ``solver.grid[0]``; one denoiser call per step (NFE = ``solver.steps``), in ``x``'s dtype.

    The surface of the other samplers: ``sample_bespoke(denoiser, x, solver.grid,
    solver=solver)``. The grid is the solver's own (it is part of what was learned): ``ts``
    may be omitted and, if given, must equal it. ``sample_bespoke(denoiser, x, solver)``
    (the solver in place of ``ts``) also works.
    """
    if isinstance(ts, BespokeSolver):
        if solver is not None and solver is not ts:
            raise ValueError("give the bespoke solver once (as ts or as solver=)")
        ts, solver = None, ts
    if solver is None:
        raise ValueError("sample_bespoke needs solver=<a fitted BespokeSolver> "
                         "(fit_best_solver or fit_bespoke)")
    if ts is not None:
        ts = torch.as_tensor(ts, dtype=_F64).detach().cpu().flatten()
        if ts.shape != solver.times.shape or not torch.allclose(ts, solver.times, rtol=0,
                                                                atol=1e-12):
            raise ValueError(f"ts {ts.tolist()} is not this bespoke solver's grid "
                             f"{solver.times.tolist()}: pass solver.grid or omit ts")
    return solver.sample(denoiser, x, cond=cond, callback=callback, disable=disable)


# --------------------------------------------------------------------------- fitting
def _reference(denoiser: Denoiser, x: Tensor, t_start: float, t_end: float | None,
               cond: dict[str, Any] | None) -> Tensor:
    """Tight adaptive PF-ODE endpoints (rtol = atol = 1e-8); ``t_end=None``: to sigma = 0,
    finished with the denoiser at ``t_min``."""
    from polydiff.core.samplers.adaptive import solve_pf_ode

    p = denoiser.process
    end = p.t_min if t_end is None else t_end
    with torch.no_grad():
        z, _ = solve_pf_ode(denoiser, x.double(), t_start, end, cond=cond, rtol=1e-8,
                            atol=1e-8)
        if t_end is not None:
            return z
        tt = torch.full((x.shape[0],), float(end), dtype=_F64, device=x.device)
        return denoiser.x0(z, tt, **(cond or {})).double()


def _subset(cond: dict[str, Any] | None, idx: Tensor, batch: int) -> dict[str, Any] | None:
    if cond is None:
        return None
    return {k: v[idx] if torch.is_tensor(v) and v.ndim > 0 and v.shape[0] == batch else v
            for k, v in cond.items()}


def _init_grid(process: Any, steps: int, t_start: float, t_end: float | None, zero_end: bool,
               init: str | Tensor, slack: float) -> Tensor:
    """The starting grid; with ``zero_end`` the last positive point is moved up by a
    fraction ``slack`` of the log-sigma~ range so that it can move both ways."""
    if torch.is_tensor(init):
        grid = init.detach().to(_F64).cpu().flatten()
        last = float(process.t_zero) if zero_end else float(
            process.t_min if t_end is None else t_end)
        if grid.numel() != steps + 1 or float(grid[0]) != t_start or float(grid[-1]) != last:
            raise ValueError(f"an explicit initial grid needs {steps + 1} times from t_start = "
                             f"{t_start} to {last}")
        return grid
    if init == "default":
        from polydiff.core.grids import default_grid

        t_low = float(process.t_min if (zero_end or t_end is None) else t_end)
        grid = (default_grid(process, steps, t_start=t_start) if zero_end else
                time_grid(process, steps, "flow", t_start=t_start, t_end=t_end))
        if steps == 1 or bool((grid[1:-1] > t_low).all()):
            return grid
        init = "logsnr"  # so many steps that the flow grid reaches below t_min
    grid = time_grid(process, steps, init, t_start=t_start, t_end=t_end, final_zero=zero_end)
    if zero_end and steps > 1:
        s_hi, s_lo = _log_st(process, t_start), _log_st(process, process.t_min)
        s = torch.log(process.sigma_tilde(grid[1:-1]))
        s = s_hi - (s_hi - s) * (1.0 - slack) if s_hi > s_lo else s
        grid[1:-1] = process.t_from_sigma_tilde(torch.exp(s))
    return grid


def fit_bespoke(denoiser: Denoiser, x_cal: Tensor, steps: int, *,
                reference: Tensor | None = None, cond: dict[str, Any] | None = None,
                t_start: float | None = None, t_end: float | None = None,
                final_zero: bool = True, base: str = "dpmpp_2m", init: str | Tensor = "default",
                iters: int = 400, lr: float = 0.02, lr_times: float | None = None,
                loss: str = "rmse", batch_size: int | None = 512, val_fraction: float = 0.0,
                patience: int | None = None, eval_every: int | None = None,
                weight_decay: float = 0.0, importance: bool = False, learn_times: bool = True,
                learn_coefficients: bool = True, slack: float = 0.05,
                generator: torch.Generator | None = None,
                callback: Callable[[dict[str, Any]], None] | None = None,
                disable: bool | None = None) -> BespokeSolver:
    """Fit a bespoke non-stationary solver of ``steps`` steps to ``denoiser`` (Shaul et al.
    2024, "Bespoke Non-Stationary Solvers for Fast Sampling of Diffusion and Flow Models").

    Minimises the RMS (``loss="rmse"``), mean-square (``"mse"``) or mean per-sample RMS
    (``"l2"``: robust to the few samples a few-step solver sends to another mode) error of the
    solver's output
    against accurate endpoints of the probability-flow ODE on the calibration batch ``x_cal``
    (noise at ``t_start``) with Adam, differentiating through the denoiser (which must be
    differentiable in its input and time; use float64 for exact test beds), and returns the
    parameters with the best calibration (or validation) loss.

    Args:
        denoiser: the model.
        x_cal: calibration batch at ``t_start``; its dtype is the training dtype.
        steps: number of steps = NFE (``>= 1``).
        reference: the exact endpoints for ``x_cal``; default: :func:`solve_pf_ode
            <polydiff.core.samplers.adaptive.solve_pf_ode>` at rtol = atol = 1e-8.
        cond: per-sample conditioning (tensors with a leading batch dimension are batched).
        t_start, t_end, final_zero: the integration range, as :func:`time_grid` (the last
            step lands on ``sigma = 0`` with ``final_zero``; learned points stay in
            ``(t_min, t_start)``, or ``(t_end, t_start)`` without it).
        base: the solver it starts from and whose coefficients the learned ones are a
            residual over: ``"ddim"``, ``"dpmpp_2m"`` or ``"unipc"``.
        init: the starting grid: ``"default"`` (:func:`~polydiff.core.grids.default_grid`),
            another kind of :func:`time_grid` or an explicit grid. The defaults of ``init``,
            ``iters``, ``lr`` and ``batch_size`` are :func:`fit_best_solver`'s (the bench's).
        iters, lr, lr_times: Adam iterations and learning rates (coefficients; time logits,
            default ``2 * lr``), with cosine decay to 1% over ``iters``.
        batch_size: mini-batch size (``None``: the whole calibration batch). With mini-batches
            or a validation split the selection loss is evaluated every ``eval_every``
            iterations (default ``iters // 30``), else at every iteration for free.
        val_fraction, patience: hold out this fraction of ``x_cal`` to choose the best
            parameters, stopping after ``patience`` evaluations without improvement.
        weight_decay: Adam's L2 pull of the learned residuals towards the base solver.
        importance: draw mini-batches in proportion to (a defensive mixture of uniform and)
            each sample's last measured error, with unbiased ``1 / (n p)`` weights. The
            error is often carried by a few samples near decision boundaries between modes;
            off by default (in our measurements it did not help).
        learn_times, learn_coefficients: what is learned.
        slack: with ``final_zero``, the initial last positive point is raised by this fraction
            of the log-sigma~ range, so that it can move both ways.
        generator: for mini-batch and validation sampling.
        callback: called after each iteration with ``{"i", "loss", "best", "selection"}``
            (``selection``: the selection loss where it was evaluated, else ``None``).
        disable: progress bar (tqdm), as for the samplers.
    """
    if loss not in ("rmse", "mse", "l2"):
        raise ValueError(f"loss must be 'rmse', 'mse' or 'l2', got {loss!r}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    p = denoiser.process
    t0 = float(p.t_max if t_start is None else t_start)
    zero_end = final_zero and p.t_zero is not None
    t_last = (float(p.t_zero) if zero_end and p.t_zero is not None
              else float(p.t_min if t_end is None else t_end))
    t_low = float(p.t_min) if zero_end else t_last
    grid = _init_grid(p, steps, t0, t_end, zero_end, init, slack)
    if reference is None:
        reference = _reference(denoiser, x_cal, t0, None if zero_end else t_last, cond)
    params = _Params(p, t0, t_low, zero_end, t_last, grid, base).to(x_cal.device)
    n_all = x_cal.shape[0]
    c_all = denoiser.center(dict(cond or {}))
    target = reference.to(x_cal.dtype) if c_all is None else (reference - c_all).to(x_cal.dtype)
    perm = torch.randperm(n_all, generator=generator)
    n_val = int(round(val_fraction * n_all))
    val_idx, tr_idx = perm[:n_val], perm[n_val:]

    def run(idx: Tensor, with_grad: bool, weights: Tensor | None = None
            ) -> tuple[Tensor, Tensor]:
        """Loss on ``x_cal[idx]`` (importance ``weights``) and the per-sample squared errors."""
        x, sub = x_cal[idx], _subset(cond, idx, n_all)
        with torch.set_grad_enabled(with_grad):
            times, a, b = params.solver()
            s = Sampling(denoiser, x, times.detach(), sub)
            z = _rollout(s, times, a, b)
            per = (z - target[idx]).pow(2).reshape(idx.numel(), -1).mean(1)
            term = per.sqrt() if loss == "l2" else per
            err = term.mean() if weights is None else (term * weights).mean()
        return (err.sqrt() if loss == "rmse" else err), per.detach()

    groups = []
    if learn_coefficients:
        groups.append({"params": [params.dc, params.db], "lr": lr,
                       "weight_decay": weight_decay})
    if learn_times and steps > 1:
        groups.append({"params": [params.theta], "lr": 2 * lr if lr_times is None else lr_times})
    init_value, init_per = run(tr_idx, False)
    init_loss, init_rmse = float(init_value), math.sqrt(float(init_per.mean()))
    if not (groups and iters > 0):
        iters = 0
    bs = tr_idx.numel() if batch_size is None else min(batch_size, tr_idx.numel())
    full = bs == tr_idx.numel()
    # full-batch training without validation judges every iterate by its own training loss
    # (free); otherwise the selection set is evaluated every ``every`` iterations
    every = 1 if full and not n_val else (eval_every or max(1, iters // 30))
    best, best_state = math.inf, copy.deepcopy(params.state_dict())
    if not (full and not n_val):
        best = float(run(val_idx, False)[0]) if n_val else init_loss
    opt = torch.optim.Adam(groups) if iters else None
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iters, eta_min=0.01 * lr) \
        if opt is not None else None
    stall = 0
    n_tr = tr_idx.numel()
    probs = torch.full((n_tr,), 1.0 / n_tr, dtype=_F64)
    for it in progress(iters + 1, desc="bespoke", disable=disable):
        last = it == iters
        weights = None
        if full:
            pos = torch.arange(n_tr)
        elif importance:  # unbiased: sample by probs, weight by 1 / (n p)
            pos = torch.multinomial(probs, bs, replacement=True, generator=generator)
            weights = (1.0 / (n_tr * probs[pos])).to(x_cal.dtype)
        else:
            pos = torch.randperm(n_tr, generator=generator)[:bs]
        value, _ = run(tr_idx[pos], not last, weights)
        ok = bool(torch.isfinite(value))
        sel = None
        if full and not n_val:
            sel = float(value.detach()) if ok else math.inf
        elif it % every == 0 or last:
            sel = float(run(val_idx, False)[0]) if n_val else None
            if not n_val or (importance and not full):
                tr_loss, per = run(tr_idx, False)
                sel = float(tr_loss) if sel is None else sel
                if bool(torch.isfinite(per).all()) and float(per.sum()) > 0:
                    # defensive mixture of the error distribution and the uniform one
                    probs = 0.5 * per.to(_F64) / per.to(_F64).sum() + 0.5 / n_tr
        if sel is not None:
            if sel < best:
                best, stall = sel, 0
                best_state = copy.deepcopy(params.state_dict())
            else:
                stall += 1
        if callback is not None:
            callback({"i": it, "loss": float(value.detach()), "best": best, "selection": sel})
        if last or (patience is not None and stall > patience):
            break
        assert opt is not None and sched is not None  # iters > 0: else the loop broke above
        if ok:
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
        sched.step()
    params.load_state_dict(best_state)
    with torch.no_grad():
        times, a, b = params.solver()
    final_value, final_per = run(tr_idx, False)
    final, final_rmse = float(final_value), math.sqrt(float(final_per.mean()))
    meta = {"base": base, "steps": steps, "final_zero": zero_end, "t_start": t0,
            "process": type(p).__name__, "loss": loss, "iters": iters,
            "calibration_loss_init": init_loss, "calibration_loss": final,
            "calibration_rmse_init": init_rmse, "calibration_rmse": final_rmse,
            "calibration_size": int(tr_idx.numel()), "validation_size": int(n_val)}
    return BespokeSolver(times, a, b, meta)


# --------------------------------------------------------------------------- one call
#: Training-free candidates of :func:`fit_best_solver`: name -> (registry name, hyperparameters).
GENERIC: dict[str, tuple[str, dict[str, Any]]] = {
    "ddim": ("ddim", {}),
    "dpmpp_2m": ("dpmpp_2m", {}),
    "dpmpp_3m": ("dpmpp_3m", {}),
    "unipc": ("unipc", {}),
    "unipc_bh1": ("unipc", {"variant": "bh1"}),
    "ipndm": ("ipndm", {}),
    "ipndm3": ("ipndm", {"order": 3}),
}
#: Grid kinds :func:`fit_best_solver` tries (see :func:`search_grid`).
SEARCH_GRIDS = ("flow", "uniform", "logsnr", "edm", "gits")


@dataclass
class SolverSearch:
    """What :func:`fit_best_solver` tries (defaults: what ``tools/bench/samplers.py`` uses).

    Attributes:
        calibration: noise samples drawn when no ``x_cal`` is given.
        holdout: fraction of the calibration noise held out to choose among candidates
            (never used for fitting).
        generic: training-free candidates (keys of :data:`GENERIC`), each tried on every
            grid of ``grids``.
        grids: grid kinds (:func:`search_grid`); ``"gits"`` is fitted to the model's
            trajectories (:func:`~polydiff.core.samplers.gits.gits_grid`).
        shifts: the ``"flow"`` grid is also tried with these timestep shifts
            (``"flow@<shift>"``, :func:`~polydiff.core.grids.default_grid`).
        fits: learned candidates, each starting from its base (:data:`BASES`) on the grid
            on which that base did best: ``"<base>"`` learns time points and coefficients
            (the BNS solver of Shaul et al. 2024, RMSE loss); ``"<base>:times"`` learns the
            time points only, with the base's coefficients recomputed from them (as LD3,
            Tong et al. 2025), under the mean per-sample RMS loss, which the few samples a
            few-step solver sends to another mode do not dominate. ``()`` keeps to
            training-free solvers.
        iters, lr, batch_size, weight_decay: :func:`fit_bespoke`'s optimisation (Adam; the
            weight decay pulls the learned residual towards the base solver).
        lr_times: Adam's learning rate for the ``":times"`` fits.
        val_fraction: of the fitting noise, used by :func:`fit_bespoke` to choose its best
            iterate (0: its training loss).
        gits_samples, gits_candidates: calibration samples and candidate intervals of the
            GITS grid.
    """

    calibration: int = 4096
    holdout: float = 0.5
    generic: tuple[str, ...] = ("dpmpp_2m", "dpmpp_3m", "unipc", "unipc_bh1", "ipndm",
                                "ipndm3")
    grids: tuple[str, ...] = SEARCH_GRIDS
    shifts: tuple[float, ...] = (0.7, 1.2, 1.4, 1.7, 2.0, 3.0)
    fits: tuple[str, ...] = ("unipc",)
    iters: int = 400
    lr: float = 0.02
    lr_times: float = 0.005
    batch_size: int | None = 512
    weight_decay: float = 0.0
    val_fraction: float = 0.0
    gits_samples: int = 256
    gits_candidates: int = 100

    def __post_init__(self) -> None:
        if not 0.0 < self.holdout < 1.0:
            raise ValueError(f"holdout must be in (0, 1), got {self.holdout}")
        for g in self.generic:
            if g not in GENERIC:
                raise ValueError(f"unknown generic solver {g!r}; expected some of "
                                 f"{tuple(GENERIC)}")
        for g in self.grids:
            if g not in SEARCH_GRIDS:
                raise ValueError(f"unknown grid {g!r}; expected some of {SEARCH_GRIDS}")
        for f in self.fits:
            base, _, mode = f.partition(":")
            if base not in BASES or mode not in ("", "times"):
                raise ValueError(f"unknown fit {f!r}: expected '<base>' or '<base>:times' "
                                 f"with a base of {BASES}")
        if any(not (v > 0 and math.isfinite(v)) for v in self.shifts):
            raise ValueError(f"shifts must be positive, got {self.shifts}")
        if not (self.generic and self.grids) and not self.fits:
            raise ValueError("nothing to search: give generic solvers and grids, or fits")


def search_grid(kind: str, process: Any, steps: int, t_start: float) -> Tensor:
    """The grids :func:`fit_best_solver` tries, all ending at ``sigma = 0`` (``t_min``
    without a zero-noise time): ``"flow"`` (:func:`~polydiff.core.grids.default_grid`;
    ``"flow@2"``: with timestep shift 2),
    ``"uniform"`` (uniform in ``t`` down to ``t_zero``: diffusers' "linspace"), ``"logsnr"``
    and ``"edm"`` (to ``t_min`` and a final step to ``sigma = 0``). ``"gits"`` needs the
    model: see :func:`~polydiff.core.samplers.gits.gits_grid`."""
    from polydiff.core.grids import default_grid

    zero = process.t_zero
    if kind == "flow" or kind.startswith("flow@"):
        shift = float(kind[5:]) if kind.startswith("flow@") else 1.0
        return default_grid(process, steps, t_start=t_start, shift=shift)
    if kind == "uniform":
        return time_grid(process, steps, "uniform", t_start=t_start,
                         t_end=zero if zero is not None else None)
    if kind in ("logsnr", "edm"):
        return time_grid(process, steps, kind, t_start=t_start, final_zero=True)
    raise ValueError(f"unknown grid {kind!r}; expected one of {SEARCH_GRIDS}")


def fit_best_solver(denoiser: Denoiser, x_shape: tuple[int, ...] | torch.Size, nfe: int, *,
                    config: SolverSearch | None = None, x_cal: Tensor | None = None,
                    reference: Tensor | None = None, cond: dict[str, Any] | None = None,
                    t_start: float | None = None, generator: torch.Generator | None = None,
                    device: torch.device | str | None = None, dtype: torch.dtype = _F64,
                    disable: bool | None = None) -> BespokeSolver:
    """The best solver of ``nfe`` network evaluations for ``denoiser``, in one call: never
    worse than the best training-free candidate on held-out calibration noise.

    1. Calibration: ``config.calibration`` draws of prior noise of per-sample shape
       ``x_shape`` (or ``x_cal``) and their accurate probability-flow endpoints
       (``reference``, default: :func:`~polydiff.core.samplers.adaptive.solve_pf_ode` at
       rtol = atol = 1e-8, then the denoiser at ``t_min``); a fraction ``config.holdout``
       is held out.
    2. Training-free candidates: every solver of ``config.generic`` (DPM-Solver++ 2M/3M,
       UniPC bh1/bh2, iPNDM of Zhang & Chen 2023) on every grid of ``config.grids``,
       including GITS's dynamic-programming grid fitted to the model's trajectories (Chen et
       al. 2024), scored on the held-out noise.
    3. Learned candidates (``config.fits``): bespoke non-stationary solvers (Shaul et al.
       2024; :func:`fit_bespoke`) and learned time points alone (as LD3, Tong et al. 2025)
       fitted on the other calibration noise, each starting from its base on that base's
       best grid (so it starts as a candidate of 2).
    4. The candidate with the lowest held-out RMSE wins; training-free winners are returned
       in their exact bespoke form (:meth:`BespokeSolver.from_sampler`).

    The result samples with :func:`sample_bespoke` (or ``solver.sample``); ``solver.meta``
    records every candidate's held-out RMSE (``"held_out_rmse"``), the winner
    (``"choice"``) and the best training-free one (``"best_generic"``).

    Args:
        denoiser: the model (differentiable in its input and time when ``config.fits`` is
            not empty; use float64 for exact test beds).
        x_shape: per-sample shape (without the batch dimension).
        nfe: network evaluations = steps.
        config: what to try (:class:`SolverSearch`; defaults as the bench).
        x_cal, reference: calibration noise at ``t_start`` and its exact endpoints.
        cond: conditioning (tensors batched like ``x_cal``; mean-reverting processes need
            ``x_cal`` and ``cond={"y": ...}``).
        t_start: start time (default ``process.t_max``).
        generator: for the calibration draw, the split and mini-batches.
        device, dtype: of the drawn calibration noise.
        disable: progress bars.
    """
    cfg = config or SolverSearch()
    if nfe < 1:
        raise ValueError(f"nfe must be >= 1, got {nfe}")
    p = denoiser.process
    t0 = float(p.t_max if t_start is None else t_start)
    if x_cal is None:
        if p.center_key is not None:
            raise ValueError(f"{type(p).__name__} is mean-reverting: pass x_cal and cond")
        x_cal = p.prior_sample((cfg.calibration, *tuple(x_shape)), generator=generator,
                               device=device, dtype=dtype)
    zero_end = p.t_zero is not None
    if reference is None:
        reference = _reference(denoiser, x_cal, t0, None if zero_end else float(p.t_min), cond)
    n_all = x_cal.shape[0]
    n_hold = max(1, int(round(cfg.holdout * n_all)))
    if n_all - n_hold < 1:
        raise ValueError(f"need at least 2 calibration samples, got {n_all}")
    perm = torch.randperm(n_all, generator=generator).to(x_cal.device)
    hold, fit = perm[:n_hold], perm[n_hold:]
    x_h, ref_h, cond_h = x_cal[hold], reference[hold], _subset(cond, hold, n_all)
    x_f, ref_f, cond_f = x_cal[fit], reference[fit], _subset(cond, fit, n_all)

    def held_out(solver: BespokeSolver) -> float:
        out = solver.sample(denoiser, x_h, cond=cond_h, disable=True)
        err = float((out.double() - ref_h.double()).pow(2).mean().sqrt())
        return err if math.isfinite(err) else math.inf

    grids: dict[str, Tensor] = {}
    for kind in cfg.grids if cfg.generic else ():
        if kind == "gits":
            from polydiff.core.samplers.gits import gits_grid

            m = min(cfg.gits_samples, x_f.shape[0])
            grids[kind] = gits_grid(denoiser, x_f[:m], nfe, candidates=max(cfg.gits_candidates,
                                                                          nfe),
                                    t_start=t0, cond=_subset(cond_f, torch.arange(m),
                                                            x_f.shape[0]))
        else:
            grids[kind] = search_grid(kind, p, nfe, t0)
        if kind == "flow":
            for shift in cfg.shifts:
                grids[f"flow@{shift:g}"] = search_grid(f"flow@{shift:g}", p, nfe, t0)
    scores: dict[str, float] = {}
    solvers: dict[str, BespokeSolver] = {}
    for kind, ts in grids.items():
        for name in cfg.generic:
            reg, hyper = GENERIC[name]
            key = f"{name}/{kind}"
            sol = BespokeSolver.from_sampler(reg, p, ts, meta={"choice": key}, **hyper)
            scores[key], solvers[key] = held_out(sol), sol
    best_generic = min(scores, key=scores.__getitem__) if scores else None
    for fit_name in cfg.fits:
        base, _, mode = fit_name.partition(":")
        # start from the grid on which this base did best (the flow grid if it was not tried)
        tried = {k.split("/", 1)[1]: v for k, v in scores.items() if k.split("/")[0] == base}
        kind = min(tried, key=tried.__getitem__) if tried else "flow"
        init = grids[kind] if kind in grids else search_grid(kind, p, nfe, t0)
        if nfe > 1 and not bool(init[1:-1].gt(p.t_min).all()):
            init = search_grid("flow", p, nfe, t0)
        times_only = mode == "times"
        if times_only and nfe == 1:
            continue  # nothing to learn
        sol = fit_bespoke(denoiser, x_f, nfe, reference=ref_f, cond=cond_f, t_start=t0,
                          final_zero=zero_end, base=base, init=init, iters=cfg.iters, lr=cfg.lr,
                          lr_times=cfg.lr_times if times_only else None,
                          loss="l2" if times_only else "rmse",
                          learn_coefficients=not times_only,
                          batch_size=cfg.batch_size, weight_decay=cfg.weight_decay,
                          val_fraction=cfg.val_fraction, generator=generator, disable=disable)
        key = f"bespoke_{fit_name}/{kind}"
        sol.meta["choice"] = key
        scores[key], solvers[key] = held_out(sol), sol
    choice = min(scores, key=scores.__getitem__)
    best = solvers[choice]
    best.meta.update({
        "choice": choice, "nfe": nfe, "held_out_rmse": dict(scores),
        "best_generic": best_generic, "calibration_samples": int(fit.numel()),
        "held_out_samples": int(n_hold),
        "grids": {k: v.tolist() for k, v in grids.items()}})
    return best
