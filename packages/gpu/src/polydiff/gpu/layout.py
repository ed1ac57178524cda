"""Memory layout and attention-kernel choice.

- :func:`to_channels_last` converts 4-D image-like tensors (``N, C, H, W``) and modules with
  2-D convolutions to ``torch.channels_last``, the layout cuDNN's tensor-core convolutions
  prefer under mixed precision. Everything else (waveforms, series, token batches, modules
  without 2-D convolutions) is returned unchanged, so callers serving several data domains
  need no branches.
- :func:`attention_backend` restricts ``torch.nn.functional.scaled_dot_product_attention``
  to one kernel family through ``torch.nn.attention.sdpa_kernel`` (``"auto"`` lets PyTorch
  choose), for benchmarking kernels or pinning a deterministic path (``"math"``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TypeVar

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

__all__ = ["ATTENTION_BACKENDS", "attention_backend", "to_channels_last"]

ATTENTION_BACKENDS: dict[str, SDPBackend] = {
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "math": SDPBackend.MATH,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
}

_CONV2D = (nn.Conv2d, nn.ConvTranspose2d)
M = TypeVar("M", nn.Module, torch.Tensor)


def to_channels_last(module_or_tensor: M) -> M:
    """``channels_last`` copy of a 4-D tensor, or a module with 2-D convolutions (in place).

    A tensor of another rank, or a module without ``Conv2d``/``ConvTranspose2d``, is returned
    as is. For a module, 4-D parameters and buffers are converted (``module.to``) and the
    same module is returned.
    """
    if isinstance(module_or_tensor, torch.Tensor):
        if module_or_tensor.dim() != 4:
            return module_or_tensor
        return module_or_tensor.contiguous(memory_format=torch.channels_last)
    if isinstance(module_or_tensor, nn.Module):
        if any(isinstance(m, _CONV2D) for m in module_or_tensor.modules()):
            # Module.to accepts memory_format at run time; torch's stubs omit it
            module_or_tensor.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        return module_or_tensor
    raise TypeError(
        f"to_channels_last expects a tensor or an nn.Module, got {type(module_or_tensor).__name__}"
    )


def _backends(name: str | Sequence[str]) -> list[SDPBackend] | None:
    names = [name] if isinstance(name, str) else list(name)
    if not names:
        raise ValueError("attention_backend needs at least one backend name")
    lowered = [n.strip().lower() for n in names]
    if "auto" in lowered:
        if len(lowered) > 1:
            raise ValueError("'auto' cannot be combined with other attention backends")
        return None
    unknown = [n for n in lowered if n not in ATTENTION_BACKENDS]
    if unknown:
        choices = ", ".join(["auto", *ATTENTION_BACKENDS])
        raise ValueError(f"unknown attention backend(s) {unknown}; expected one of {choices}")
    return [ATTENTION_BACKENDS[n] for n in lowered]


@contextlib.contextmanager
def attention_backend(name: str | Sequence[str] = "auto") -> Iterator[None]:
    """Restrict scaled-dot-product attention to ``name`` (or a list of names) in a block.

    Names: ``"flash"``, ``"efficient"`` (memory-efficient), ``"math"``, ``"cudnn"``, or
    ``"auto"`` (no restriction). Inside the block, an SDPA call that none of the chosen
    kernels supports (e.g. ``"flash"`` on CPU) raises a ``RuntimeError`` from PyTorch.
    """
    backends = _backends(name)
    if backends is None:
        yield
        return
    with sdpa_kernel(backends):
        yield
