"""Memory accounting on CPU (process RSS) and byte formatting."""

from __future__ import annotations

import pytest
import torch

from polydiff.gpu import current_memory_bytes, format_bytes, peak_memory_bytes, reset_peak_memory


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0 B"), (512, "512 B"), (1536, "1.50 KiB"), (3 * 2**30, "3.00 GiB"), (-2048, "-2.00 KiB"),
     (2**60, "1024.00 PiB")],
)
def test_format_bytes(n: int, text: str) -> None:
    assert format_bytes(n) == text


def test_cpu_peak_sees_a_large_allocation() -> None:
    reset_peak_memory("cpu")
    base = current_memory_bytes("cpu")
    assert base > 0 and peak_memory_bytes("cpu") >= base
    big = torch.ones(16 * 2**20)  # 64 MiB, written so the pages are resident
    after = current_memory_bytes("cpu")
    # the peak never trails the current footprint; where the allocation grew the resident set
    # (the allocator may reuse pages this long-lived test process already holds), it shows
    assert peak_memory_bytes("cpu") >= after
    if after >= base + 48 * 2**20:
        assert peak_memory_bytes("cpu") >= base + 48 * 2**20
    del big
    if reset_peak_memory("cpu"):  # Linux: the peak window restarts
        assert peak_memory_bytes("cpu") < base + 48 * 2**20
