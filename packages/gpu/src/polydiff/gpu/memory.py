"""Peak-memory accounting on CUDA and CPU.

What is measured differs by device, and the numbers are not comparable across devices:

- **CUDA**: bytes held by tensors through PyTorch's caching allocator
  (``torch.cuda.max_memory_allocated``), resettable with
  ``torch.cuda.reset_peak_memory_stats``. Cached-but-free blocks and the CUDA context are
  not counted.
- **CPU**: the peak resident set size of the whole process (Linux ``VmHWM`` from
  ``/proc/self/status``, else ``resource.getrusage(...).ru_maxrss``): every allocation,
  the interpreter and loaded libraries included. Linux lets a process reset its own peak
  by writing ``5`` to ``/proc/self/clear_refs``; :func:`reset_peak_memory` does that and
  returns ``False`` where it is not possible (then the peak is since process start). This
  avoids ``tracemalloc``, which does not see tensor storage allocated by PyTorch's C++ code
  and slows Python down.
- **MPS**: there is no peak counter; :func:`peak_memory_bytes` returns the memory currently
  allocated by tensors (``torch.mps.current_allocated_memory``).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import torch

from polydiff.gpu.device import as_device

__all__ = ["current_memory_bytes", "format_bytes", "peak_memory_bytes", "reset_peak_memory"]

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _proc_status_bytes(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` in bytes, or ``None`` when unavailable."""
    try:
        text = _STATUS.read_text()
    except OSError:
        return None
    m = re.search(rf"^{field}:\s+(\d+)\s+kB", text, re.M)
    return int(m.group(1)) * 1024 if m else None


def reset_peak_memory(device: str | torch.device | None = None) -> bool:
    """Start a new peak-memory window on ``device``; returns whether a reset happened."""
    dev = as_device(device)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        return True
    if dev.type == "cpu":
        try:
            _CLEAR_REFS.write_text("5")  # Linux: reset this process's peak RSS (VmHWM)
        except OSError:
            return False
        return True
    return False


def peak_memory_bytes(device: str | torch.device | None = None) -> int:
    """Peak memory on ``device`` since the last :func:`reset_peak_memory` (see module doc)."""
    dev = as_device(device)
    if dev.type == "cuda":
        return int(torch.cuda.max_memory_allocated(dev))
    if dev.type == "mps":
        return int(torch.mps.current_allocated_memory())
    peak = _proc_status_bytes("VmHWM")
    if peak is not None:
        return peak
    import resource  # not on Windows

    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(maxrss) if sys.platform == "darwin" else int(maxrss) * 1024  # macOS: bytes


def current_memory_bytes(device: str | torch.device | None = None) -> int:
    """Memory in use on ``device`` now: CUDA/MPS tensor bytes, or the CPU process's RSS."""
    dev = as_device(device)
    if dev.type == "cuda":
        return int(torch.cuda.memory_allocated(dev))
    if dev.type == "mps":
        return int(torch.mps.current_allocated_memory())
    rss = _proc_status_bytes("VmRSS")
    return rss if rss is not None else peak_memory_bytes(dev)


def format_bytes(n: int | float, digits: int = 2) -> str:
    """Human-readable binary size: ``format_bytes(1536) == "1.50 KiB"``; ``"512 B"``."""
    value = float(n)
    sign = "-" if value < 0 else ""
    value = abs(value)
    if value < 1024:
        return f"{sign}{int(value)} B"
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        value /= 1024
        if value < 1024 or unit == "PiB":
            return f"{sign}{value:.{digits}f} {unit}"
    raise AssertionError("unreachable")
