"""Seeding reproduces draws; RNG state survives torch.save + torch.load(weights_only=True)."""

from __future__ import annotations

import os
import random

import pytest
import torch

from polydiff.gpu import deterministic, rng_state, seed_everything, set_rng_state

try:  # NumPy is optional for polydiff-gpu; its global RNG is covered when installed
    import numpy as np
except ImportError:  # pragma: no cover - the workspace environment has NumPy
    np = None


def _draw() -> tuple[object, ...]:
    """One draw from every global RNG (NumPy's legacy global one is what is seeded)."""
    numpy_draws = ()
    if np is not None:
        numpy_draws = (float(np.random.standard_normal()), float(np.random.rand()))  # noqa: NPY002
    return (random.random(), random.gauss(0.0, 1.0), *numpy_draws, torch.randn(3).tolist())


def test_seed_everything_reproduces() -> None:
    assert seed_everything(1234) == 1234
    first = _draw()
    seed_everything(1234)
    assert _draw() == first
    seed_everything(1235)
    assert _draw() != first


def test_large_seed_and_bad_seeds() -> None:
    seed_everything(2**40 + 7)  # NumPy takes it modulo 2**32
    with pytest.raises(ValueError):
        seed_everything(-1)
    with pytest.raises(ValueError):
        seed_everything(2**64)


def test_rng_state_round_trip_weights_only(tmp_path: os.PathLike[str]) -> None:
    seed_everything(7)
    random.gauss(0.0, 1.0)  # leaves a cached Gaussian in Python's state...
    if np is not None:
        np.random.standard_normal()  # noqa: NPY002 - ...and in NumPy's (has_gauss = 1)
    state = rng_state()
    assert state["python"]["gauss_next"] is not None
    assert np is None or state["numpy"]["has_gauss"] == 1
    expected = _draw()
    path = os.path.join(tmp_path, "rng.pt")
    torch.save({"rng": state}, path)
    _draw()  # move every generator on
    loaded = torch.load(path, weights_only=True)["rng"]
    set_rng_state(loaded)
    assert _draw() == expected


def test_partial_state_leaves_the_rest_alone() -> None:
    seed_everything(3)
    torch_only = {"torch": rng_state()["torch"]}
    expected = torch.randn(2)
    py_before = random.getstate()
    set_rng_state(torch_only)
    torch.testing.assert_close(torch.randn(2), expected, rtol=0, atol=0)
    assert random.getstate() == py_before


def test_deterministic_sets_and_restores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark)
    with deterministic():
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        with deterministic(False):
            assert not torch.are_deterministic_algorithms_enabled()
        assert torch.are_deterministic_algorithms_enabled()
    assert (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark) == before
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ


def test_deterministic_keeps_a_user_cublas_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    with deterministic(warn_only=True):
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
        assert torch.is_deterministic_algorithms_warn_only_enabled()
    assert not torch.is_deterministic_algorithms_warn_only_enabled()
