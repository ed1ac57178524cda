"""Precision policy: fp32, bf16 or fp16 autocast, gradient scaling and TF32.

Rules, per device:

- ``fp32``: autocast is a no-op and no gradient scaling is needed.
- ``bf16``: autocast to bfloat16 on CUDA, CPU and MPS. bf16 keeps fp32's exponent range,
  so no gradient scaler is needed.
- ``fp16``: autocast to float16 on CUDA and MPS, and on CPU too (PyTorch supports CPU fp16
  autocast; it is honoured as asked, though bf16 is usually the faster choice there, and
  ``"auto"`` never picks fp16 on CPU). fp16 training needs loss scaling:
  :func:`make_grad_scaler` returns an enabled ``torch.amp.GradScaler`` for it and a disabled
  (pass-through) scaler for every other precision, so one training loop serves all.
- ``auto`` (:func:`resolve_precision`): bf16 on CUDA devices that support it (Ampere and
  later), fp16 on older CUDA devices, fp32 on CPU and MPS.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal, TypedDict

import torch

from polydiff.gpu.device import as_device

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "Precision",
    "PrecisionLike",
    "autocast",
    "autocast_dtype",
    "make_grad_scaler",
    "resolve_precision",
    "set_tf32",
]


class Precision(enum.StrEnum):
    """Compute precision of a run; compares equal to its string value (``"bf16"``)."""

    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


PrecisionLike = Precision | Literal["fp32", "bf16", "fp16", "auto"]

_DTYPES = {Precision.FP32: torch.float32, Precision.BF16: torch.bfloat16,
           Precision.FP16: torch.float16}
_ALIASES = {"float32": "fp32", "32": "fp32", "bfloat16": "bf16", "float16": "fp16",
            "half": "fp16", "16": "fp16"}


def resolve_precision(precision: PrecisionLike | str, device: str | torch.device) -> Precision:
    """Turn ``"auto"`` (or any accepted spelling) into a concrete :class:`Precision`.

    ``"auto"`` gives bf16 on a CUDA device with bf16 support, fp16 on an older CUDA
    device and fp32 elsewhere. ``"float16"``/``"half"`` and ``"bfloat16"``/``"float32"`` are
    accepted as aliases. Raises ``ValueError`` for anything else.
    """
    text = str(precision.value if isinstance(precision, Precision) else precision).lower()
    text = _ALIASES.get(text, text)
    if text == "auto":
        dev = as_device(device)
        if dev.type == "cuda" and torch.cuda.is_available():
            return Precision.BF16 if torch.cuda.is_bf16_supported() else Precision.FP16
        return Precision.FP32
    try:
        return Precision(text)
    except ValueError:
        raise ValueError(
            f"unknown precision {precision!r}; expected 'fp32', 'bf16', 'fp16' or 'auto'"
        ) from None


def autocast_dtype(precision: PrecisionLike | str, device: str | torch.device) -> torch.dtype:
    """The floating dtype that autocast computes in for ``precision`` on ``device``."""
    return _DTYPES[resolve_precision(precision, device)]


@contextlib.contextmanager
def autocast(device: str | torch.device, precision: PrecisionLike | str = "auto") -> Iterator[None]:
    """Mixed-precision region: ``torch.autocast`` for bf16/fp16, nothing at all for fp32.

    Example::

        with autocast(device, "bf16"):
            loss = model(x).square().mean()
    """
    dev = as_device(device)
    prec = resolve_precision(precision, dev)
    if prec is Precision.FP32:
        yield
        return
    with torch.autocast(device_type=dev.type, dtype=_DTYPES[prec]):
        yield


class _GradScalerKwargs(TypedDict, total=False):
    """The tuning arguments of ``torch.amp.GradScaler``."""

    init_scale: float
    growth_factor: float
    backoff_factor: float
    growth_interval: int


def make_grad_scaler(
    device: str | torch.device, precision: PrecisionLike | str = "auto",
    **kwargs: Unpack[_GradScalerKwargs],
) -> torch.amp.GradScaler:
    """A ``torch.amp.GradScaler`` that is enabled only for fp16 (loss scaling needed).

    For fp32 and bf16 the scaler is disabled: ``scale(loss)`` returns ``loss`` and
    ``step(opt)`` just calls ``opt.step()``, so training loops need no branches. Extra
    keyword arguments (``init_scale``, ``growth_interval``, ...) go to ``GradScaler``.
    """
    dev = as_device(device)
    enabled = resolve_precision(precision, dev) is Precision.FP16
    return torch.amp.GradScaler(dev.type, enabled=enabled, **kwargs)


def set_tf32(enabled: bool) -> None:
    """Allow (or forbid) TF32 tensor-core math for fp32 matmuls and cuDNN convolutions.

    TF32 keeps fp32's range with a 10-bit mantissa: typically a large speed-up on Ampere and
    later GPUs at ~1e-3 relative error. It has no effect on CPU. This sets the long-standing
    ``allow_tf32`` flags, which also set every per-operator flag of PyTorch's newer
    ``fp32_precision`` API consistently.
    """
    torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
    torch.backends.cudnn.allow_tf32 = bool(enabled)
