"""Timer and time_fn: sane numbers and the documented call counts (no timed assertions)."""

from __future__ import annotations

import time

import pytest

from polydiff.gpu import Timer, synchronize, time_fn


def test_time_fn_statistics_and_call_count() -> None:
    calls = []

    def fn() -> None:
        calls.append(1)
        time.sleep(0.002)

    stats = time_fn(fn, warmup=2, repeats=5, device="cpu")
    assert len(calls) == 7 and stats["repeats"] == 5
    assert set(stats) >= {"mean", "std", "min", "median", "max"}
    assert 0.002 <= stats["min"] <= stats["median"] <= stats["max"]
    assert stats["min"] <= stats["mean"] <= stats["max"] and stats["std"] >= 0


def test_single_repeat_has_zero_std() -> None:
    assert time_fn(lambda: None, warmup=0, repeats=1, device="cpu")["std"] == 0.0


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        time_fn(lambda: None, repeats=0)
    with pytest.raises(ValueError):
        time_fn(lambda: None, warmup=-1)


def test_timer_measures_the_block() -> None:
    with Timer("cpu") as t:
        time.sleep(0.003)
    assert t.elapsed >= 0.003
    synchronize("cpu")  # no-op on CPU
