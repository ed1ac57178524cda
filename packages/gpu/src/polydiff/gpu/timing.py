"""Wall-clock timing that measures the device's work, not just the kernel launches.

CUDA work is asynchronous: ``time.perf_counter()`` around a CUDA call measures the launch.
On CUDA the :class:`Timer` records a pair of ``torch.cuda.Event(enable_timing=True)`` on the
current stream and waits for the end event; elsewhere it uses ``time.perf_counter`` and, on
MPS, ``torch.mps.synchronize()`` before reading the clock. All times are in seconds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import torch

from polydiff.gpu.device import as_device

__all__ = ["Timer", "synchronize", "time_fn"]


def synchronize(device: str | torch.device | None = None) -> None:
    """Wait for all queued work on ``device`` (a no-op on CPU)."""
    dev = as_device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    elif dev.type == "mps":
        torch.mps.synchronize()


class Timer:
    """Time a block on ``device`` (default: :func:`~polydiff.gpu.select_device`).

    Example::

        with Timer(device) as t:
            y = model(x)
        print(t.elapsed)  # seconds, device work included
    """

    def __init__(self, device: str | torch.device | None = None) -> None:
        self.device = as_device(device)
        self.elapsed: float = float("nan")
        self._start: Any = None
        self._end: Any = None

    def __enter__(self) -> Timer:
        if self.device.type == "cuda":
            with torch.cuda.device(self.device):
                self._start = torch.cuda.Event(enable_timing=True)
                self._end = torch.cuda.Event(enable_timing=True)
                self._start.record()
        else:
            synchronize(self.device)
            self._start = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.device.type == "cuda":
            with torch.cuda.device(self.device):
                self._end.record()
                self._end.synchronize()
            self.elapsed = self._start.elapsed_time(self._end) / 1e3
        else:
            synchronize(self.device)
            self.elapsed = time.perf_counter() - self._start


def time_fn(
    fn: Callable[[], Any],
    *,
    warmup: int = 3,
    repeats: int = 10,
    device: str | torch.device | None = None,
) -> dict[str, float]:
    """Time ``repeats`` calls of the nullary ``fn`` after ``warmup`` untimed calls.

    Returns ``{"mean", "std", "min", "median", "max"}`` in seconds per call (``std`` is the
    sample standard deviation, 0 for one repeat) and ``"repeats"``. On CUDA each call is
    bracketed by its own event pair, with one synchronisation after the last call, so
    host-side gaps between calls do not count.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    dev = as_device(device)
    for _ in range(warmup):
        fn()
    times: list[float] = []
    if dev.type == "cuda":
        with torch.cuda.device(dev):
            synchronize(dev)
            events = [
                (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                for _ in range(repeats)
            ]
            for start, end in events:
                start.record()
                fn()
                end.record()
            synchronize(dev)
            times = [start.elapsed_time(end) / 1e3 for start, end in events]
    else:
        synchronize(dev)
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            synchronize(dev)
            times.append(time.perf_counter() - t0)
    return {
        "mean": statistics.fmean(times),
        "std": statistics.stdev(times) if len(times) > 1 else 0.0,
        "min": min(times),
        "median": statistics.median(times),
        "max": max(times),
        "repeats": repeats,
    }
