"""Device policy: pick the best available accelerator, or the one the user asked for.

Resolution order of :func:`select_device`:

1. the ``prefer`` argument, when given and not ``"auto"``;
2. the ``POLYDIFF_DEVICE`` environment variable, when set and not ``"auto"``;
3. automatic choice: CUDA, then Apple MPS, then CPU.

A requested device that is unknown or not available raises one clear ``ValueError``
instead of failing later inside a kernel.
"""

from __future__ import annotations

import os
import platform
from typing import Any

import torch

ENV_DEVICE = "POLYDIFF_DEVICE"
_KNOWN_TYPES = ("cpu", "cuda", "mps")


def mps_available() -> bool:
    """True when PyTorch was built with MPS and this machine (Apple silicon) has it."""
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def _auto_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    if mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def _parse(spec: str | torch.device, source: str) -> torch.device:
    """Parse and validate one device request; ``source`` names where it came from."""
    if isinstance(spec, torch.device):
        dev = spec
    else:
        text = spec.strip().lower()
        type_ = text.split(":", 1)[0]
        if type_ not in _KNOWN_TYPES:
            raise ValueError(
                f"unknown device {spec!r} ({source}); expected one of 'auto', 'cpu', "
                "'cuda', 'cuda:<index>', 'mps'"
            )
        try:
            dev = torch.device(text)
        except RuntimeError as exc:  # e.g. "cuda:x"
            raise ValueError(f"malformed device {spec!r} ({source}): {exc}") from None
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(dev)!r} requested ({source}) but CUDA is not available")
        count = torch.cuda.device_count()
        index = torch.cuda.current_device() if dev.index is None else dev.index
        if not 0 <= index < count:
            raise ValueError(
                f"device {str(dev)!r} requested ({source}) but only {count} CUDA device(s) exist"
            )
        return torch.device("cuda", index)
    if dev.type == "mps":
        if not mps_available():
            raise ValueError(f"device 'mps' requested ({source}) but MPS is not available")
        return torch.device("mps")
    raise ValueError(f"unsupported device type {dev.type!r} ({source})")


def select_device(prefer: str | torch.device | None = None) -> torch.device:
    """Return the device to run on: ``prefer``, else ``$POLYDIFF_DEVICE``, else cuda > mps > cpu.

    A CUDA device is always returned with an explicit index (``cuda:0`` rather than ``cuda``),
    so equal requests compare equal. Raises ``ValueError`` for an unknown device name or a
    device this machine does not have.
    """
    if prefer is not None and not (isinstance(prefer, str) and prefer.strip().lower() == "auto"):
        return _parse(prefer, "argument")
    env = os.environ.get(ENV_DEVICE, "").strip()
    if env and env.lower() != "auto":
        return _parse(env, f"${ENV_DEVICE}")
    return _auto_device()


def as_device(device: str | torch.device | None = None) -> torch.device:
    """``torch.device(device)``, with ``None`` meaning :func:`select_device` (no validation)."""
    if device is None:
        return select_device()
    return device if isinstance(device, torch.device) else torch.device(device)


def device_info(device: str | torch.device | None = None) -> dict[str, Any]:
    """Describe ``device`` (default: :func:`select_device`) as a JSON-serialisable dict.

    Always present: ``device``, ``type``, ``torch``, ``python``, ``platform``,
    ``cuda_available``, ``mps_available``, ``num_threads``. On CUDA also the device
    ``name``, compute ``capability``, ``total_memory_bytes``, ``multiprocessors``,
    ``bf16_supported``, ``cuda_runtime``, ``cudnn`` and ``device_count``.
    """
    dev = select_device(device)
    info: dict[str, Any] = {
        "device": str(dev),
        "type": dev.type,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cuda_available": torch.cuda.is_available(),
        "mps_available": mps_available(),
        "num_threads": torch.get_num_threads(),
    }
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        info.update(
            name=props.name,
            capability=f"{props.major}.{props.minor}",
            total_memory_bytes=int(props.total_memory),
            multiprocessors=int(props.multi_processor_count),
            bf16_supported=bool(torch.cuda.is_bf16_supported()),
            cuda_runtime=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            device_count=torch.cuda.device_count(),
        )
    elif dev.type == "cpu":
        info["name"] = platform.processor() or platform.machine()
    elif dev.type == "mps":
        info["name"] = "Apple MPS"
    return info
