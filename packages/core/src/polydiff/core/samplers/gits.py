"""Time steps fitted to a model's trajectories by dynamic programming (GITS).

Implements the geometry-inspired time scheduling of Chen, Zhou, Wang, Shen & Lyu (2024),
"On the Trajectory Regularity of ODE-based Diffusion Sampling" (ICML 2024, Sec. 4 and
Algorithm 1): probability-flow trajectories of one model are so regular that one time
schedule, found from a few hundred of them, serves every sample. Training-free: it only runs
the model forward.

1. Teacher trajectories: ``x_cal`` (noise at ``t_start``) is integrated accurately on a fine
   grid (UniPC on ``candidates * substeps`` steps); its states at ``candidates + 1``
   candidate times ``s_0 > .. > s_M`` (:func:`~polydiff.core.grids.time_grid` spacing
   ``kind``, ending at ``sigma = 0``) are kept.
2. Cost matrix: ``C[k, j]`` is the RMS error of one first-order (DDIM = DPM-Solver-1) step
   from the teacher state at ``s_k`` to ``s_j`` against the teacher state at ``s_j``
   (``M`` network evaluations in all).
3. Dynamic programming: the path ``0 = k_0 < k_1 < .. < k_n = M`` of exactly ``n`` steps
   minimising ``sum_i C[k_i, k_{i+1}]`` (the summed local errors bound the global one);
   its times are the schedule, to be used with any solver (the paper pairs it with iPNDM
   and DPM-Solver; here it is measured with all of polydiff's, ``tools/bench/samplers.py``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from polydiff.core.denoiser import Denoiser
from polydiff.core.grids import time_grid
from polydiff.core.samplers.unipc import sample_unipc

__all__ = ["gits_grid", "gits_cost_matrix", "shortest_path"]


@torch.no_grad()
def gits_cost_matrix(denoiser: Denoiser, x_cal: Tensor, *, candidates: int = 100,
                     substeps: int = 4, kind: str = "flow", t_start: float | None = None,
                     cond: dict[str, Any] | None = None) -> tuple[Tensor, Tensor]:
    """``(times (M + 1,), C (M + 1, M + 1))``: the candidate times and the one-step cost
    matrix of GITS (steps 1-2 of the module docstring; ``C[k, j] = inf`` for ``j <= k``).

    Args:
        denoiser: the model.
        x_cal: a calibration batch of noise at ``t_start``.
        candidates: number of candidate intervals ``M``.
        substeps: teacher steps per candidate interval (UniPC-3).
        kind: candidate spacing (a :func:`~polydiff.core.grids.time_grid` kind that can end at
            ``sigma = 0``: ``"flow"``, ``"uniform"`` or ``"quadratic"``).
        t_start: start time (default ``process.t_max``).
        cond: conditioning for the denoiser (batched like ``x_cal``).
    """
    if candidates < 1 or substeps < 1:
        raise ValueError(f"need candidates >= 1 and substeps >= 1, got {candidates}, {substeps}")
    p = denoiser.process
    end = p.t_zero if p.t_zero is not None else p.t_min
    fine = time_grid(p, candidates * substeps, kind, t_start=t_start, t_end=end)
    times = fine[::substeps].clone()
    states: list[Tensor] = [x_cal]

    def keep(info: dict[str, Any]) -> None:
        if (info["i"] + 1) % substeps == 0:
            states.append(info["x"])

    sample_unipc(denoiser, x_cal, fine.to(x_cal.device), cond=cond, callback=keep,
                 disable=True)
    c = denoiser.center(dict(cond or {}))
    zs = torch.stack([s if c is None else s - c for s in states])  # (M + 1, B, ...)
    alphas = p.alpha(times).tolist()
    sigmas = p.sigma(times).tolist()
    m = candidates
    cost = torch.full((m + 1, m + 1), math.inf, dtype=torch.float64)
    batch = x_cal.shape[0]
    for k in range(m):
        t = times[k].to(x_cal.device).expand(batch)
        x0, eps = denoiser.x0_eps(states[k], t, **(cond or {}))
        z0 = x0 if c is None else x0 - c
        a = torch.tensor(alphas[k + 1:], dtype=zs.dtype, device=zs.device)
        s = torch.tensor(sigmas[k + 1:], dtype=zs.dtype, device=zs.device)
        shape = (-1,) + (1,) * z0.ndim
        pred = a.view(shape) * z0 + s.view(shape) * eps  # DDIM from s_k to every s_j
        err = (pred - zs[k + 1:]).reshape(m - k, -1).double().pow(2).mean(1).sqrt()
        cost[k, k + 1:] = err.cpu()
    return times, cost


def shortest_path(cost: Tensor, steps: int) -> list[int]:
    """The indices ``0 = k_0 < .. < k_steps = M`` minimising ``sum_i cost[k_i, k_{i+1}]``
    over paths of exactly ``steps`` edges (dynamic programming, ``O(steps M^2)``)."""
    m = cost.shape[0] - 1
    if not 1 <= steps <= m:
        raise ValueError(f"need 1 <= steps <= {m} candidate intervals, got {steps}")
    best = torch.full((steps + 1, m + 1), math.inf, dtype=torch.float64)
    arg = torch.zeros((steps + 1, m + 1), dtype=torch.long)
    best[0, 0] = 0.0
    for s in range(1, steps + 1):
        total = best[s - 1][:, None] + cost  # (from, to)
        best[s], arg[s] = total.min(0)
    path = [m]
    for s in range(steps, 0, -1):
        path.append(int(arg[s, path[-1]]))
    return path[::-1]


def gits_grid(denoiser: Denoiser, x_cal: Tensor, steps: int, *, candidates: int = 100,
              substeps: int = 4, kind: str = "flow", t_start: float | None = None,
              cond: dict[str, Any] | None = None) -> Tensor:
    """A grid of ``steps`` steps fitted to ``denoiser``'s trajectories from the noise batch
    ``x_cal`` (Chen et al. 2024, "On the Trajectory Regularity of ODE-based Diffusion
    Sampling", Algorithm 1; see the module docstring): descending float64 process times from
    ``t_start`` to ``sigma = 0`` (``t_min`` without a zero-noise time), for any sampler.

    Costs ``candidates`` + ``candidates * substeps`` evaluations on ``x_cal`` (a few hundred
    samples suffice: the paper uses 256), and no training.
    """
    times, cost = gits_cost_matrix(denoiser, x_cal, candidates=candidates, substeps=substeps,
                                   kind=kind, t_start=t_start, cond=cond)
    return times[shortest_path(cost, steps)].clone()
