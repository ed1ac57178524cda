"""Shape and dtype helpers shared by the whole engine (public: every package may use them).

Nothing here assumes images: a batch is ``(B, ...)`` of any trailing shape.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["append_dims", "as_time", "compact_time", "schedule_dtype", "time_tensor"]


def append_dims(v: Tensor, x: Tensor) -> Tensor:
    """Broadcast a per-sample quantity ``v`` of shape ``(B,)`` (or ``()``) against ``x`` (B, ...).

    The one broadcasting helper of polydiff (the engine is shape-agnostic): ``v`` gains trailing
    singleton dimensions until it has ``x.ndim`` dimensions, and is cast to ``x``'s dtype
    (real part dtype for complex ``x``) and device.
    """
    if not torch.is_tensor(v):
        v = torch.as_tensor(v)
    if v.ndim > x.ndim:
        raise ValueError(f"cannot broadcast a {v.ndim}-d tensor against a {x.ndim}-d batch")
    dtype = x.real.dtype if x.is_complex() else x.dtype
    v = v.to(device=x.device, dtype=dtype if v.is_floating_point() else v.dtype)
    return v.reshape(v.shape + (1,) * (x.ndim - v.ndim))


def schedule_dtype(device: torch.device | str | None) -> torch.dtype:
    """float64 for schedule arithmetic wherever the device supports it (MPS does not)."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    return torch.float32 if dev.type == "mps" else torch.float64


def as_time(t: float | Tensor, batch: int, device: torch.device | str | None = None,
            dtype: torch.dtype | None = None) -> Tensor:
    """Per-sample time of shape ``(batch,)`` from a scalar, a 0-d or a ``(batch,)`` tensor."""
    dtype = dtype or schedule_dtype(device)
    t = torch.as_tensor(t, dtype=dtype, device=device)
    if t.ndim == 0:
        return t.expand(batch).clone()
    if t.shape != (batch,):
        raise ValueError(f"time must be a scalar or have shape ({batch},), got {tuple(t.shape)}")
    return t


def time_tensor(t: float | Tensor) -> Tensor:
    """``t`` unchanged if it is a tensor, else a float64 tensor (schedules keep the caller's
    dtype so float64 arithmetic is the caller's choice)."""
    return t if torch.is_tensor(t) else torch.as_tensor(t, dtype=torch.float64)


def compact_time(t: Tensor) -> Tensor:
    """``t[:1]`` when a per-sample time is one value broadcast over the batch (an ``expand``ed
    scalar, as samplers pass it), else ``t``: schedule arithmetic then costs one element, and
    the ``(1,)`` result still broadcasts against the batch through :func:`append_dims`."""
    if torch.is_tensor(t) and t.ndim == 1 and t.shape[0] > 1 and t.stride(0) == 0:
        return t[:1]
    return t
