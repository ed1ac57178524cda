"""Ancestral sampling of discrete-state diffusion (mask-and-replace and absorbing processes).

The network is called as ``model(x_t, t, **cond)`` with tokens ``x_t`` of shape ``(B, ...)``
(values in ``{0..K}``, ``K`` = [MASK]) and integer steps ``t`` of shape ``(B,)``, and returns
``x_0``-logits ``(B, ..., K)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from polydiff.core.processes.discrete import MaskAndReplaceProcess, categorical_sample
from polydiff.core.samplers._common import Callback
from polydiff.core.utils import progress

__all__ = ["discrete_time_grid", "sample_discrete"]


def discrete_time_grid(num_steps: int, steps: int | Sequence[int] | None = None,
                       device: torch.device | str | None = None) -> Tensor:
    """Descending integer steps from ``T = num_steps`` to 0 (LongTensor).

    ``steps=None`` gives all ``T + 1`` steps; an int ``n`` gives ``n`` jumps on a uniformly
    strided grid (rounded, duplicates removed); a sequence is taken as the grid itself and must
    start at ``T``, end at 0 and decrease strictly.
    """
    if steps is None:
        steps = num_steps
    if isinstance(steps, int):
        if not 1 <= steps <= num_steps:
            raise ValueError(f"steps must lie in [1, {num_steps}], got {steps}")
        grid = torch.linspace(num_steps, 0, steps + 1, dtype=torch.float64).round().long()
        grid = torch.unique_consecutive(grid)
    else:
        grid = torch.as_tensor(list(steps), dtype=torch.long).flatten()
        if grid.numel() < 2 or int(grid[0]) != num_steps or int(grid[-1]) != 0 or \
                bool((grid[1:] >= grid[:-1]).any()):
            raise ValueError(f"a step grid must decrease strictly from {num_steps} to 0")
    return grid.to(device)


@torch.no_grad()
def sample_discrete(model: Callable[..., Tensor], process: MaskAndReplaceProcess,
                    shape: tuple[int, ...] | torch.Size, *,
                    steps: int | Sequence[int] | None = None,
                    cond: Mapping[str, Any] | None = None,
                    generator: torch.Generator | None = None,
                    callback: Callback | None = None, disable: bool | None = None,
                    temperature: float = 1.0,
                    device: torch.device | str | None = None) -> Tensor:
    """Ancestral sampling with ``p_theta(x_s | x_t) = sum_{x_0} q(x_s | x_t, x_0)
    p_theta(x_0 | x_t)``, Gu et al. (2022), "Vector Quantized Diffusion Model for Text-to-Image
    Synthesis", eq. 11 (for absorbing processes the same as Austin et al. (2021), eq. 4).

    Starts from ``x_T ~ p(x_T)`` of token shape ``shape = (B, ...)`` and walks the grid of
    :func:`discrete_time_grid` (``steps``: ``None`` for all ``T`` steps, an int for a strided
    grid, or an explicit grid); a jump ``t -> s`` uses the ``s``-step posterior
    ``q(x_s | x_t, x_0)`` of the cumulative transitions. ``temperature`` divides the
    ``x_0``-logits. After each step ``callback`` receives ``{"i", "t", "t_next", "x", "x0"}``
    (``x0``: the predicted ``p_theta(x_0 | x_t)``, shape ``(B, ..., K)``); ``disable`` is passed
    to tqdm. Returns tokens ``(B, ...)`` in ``{0..K-1}``.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    cond = dict(cond or {})
    grid = discrete_time_grid(process.num_steps, steps)
    x = process.prior_sample(tuple(shape), generator=generator, device=device)
    batch = x.shape[0]
    for i in progress(grid.numel() - 1, disable=disable):
        t_now, t_next = int(grid[i]), int(grid[i + 1])
        t = torch.full((batch,), t_now, dtype=torch.long, device=x.device)
        s = torch.full_like(t, t_next)
        logits = model(x, t, **cond)
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32)) / temperature
        log_p = process.log_p_reverse(logits, x, t, s)
        x = categorical_sample(log_p, generator)
        if callback is not None:
            callback({"i": i, "t": t_now, "t_next": t_next, "x": x,
                      "x0": torch.softmax(logits, dim=-1)})
    return x
