"""Device selection: argument > $POLYDIFF_DEVICE > cuda > mps > cpu, with clear errors."""

from __future__ import annotations

import json

import pytest
import torch

from polydiff.gpu import device as device_mod
from polydiff.gpu import device_info, select_device


@pytest.fixture
def no_accelerators(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POLYDIFF_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device_mod, "mps_available", lambda: False)


@pytest.fixture
def two_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend two CUDA devices exist (selection only; nothing runs on them)."""
    monkeypatch.delenv("POLYDIFF_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)


def test_cpu_when_nothing_else(no_accelerators: None) -> None:
    assert select_device() == torch.device("cpu")
    assert select_device("auto") == torch.device("cpu")


def test_cuda_preferred_and_indexed(two_gpus: None) -> None:
    assert select_device() == torch.device("cuda", 0)
    assert select_device("cuda") == torch.device("cuda", 0)
    assert select_device("cuda:1") == torch.device("cuda", 1)
    assert select_device(torch.device("cuda", 1)) == torch.device("cuda", 1)
    assert select_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="only 2 CUDA device"):
        select_device("cuda:2")


def test_mps_before_cpu(no_accelerators: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device_mod, "mps_available", lambda: True)
    assert select_device() == torch.device("mps")


def test_env_override(two_gpus: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLYDIFF_DEVICE", "cpu")
    assert select_device() == torch.device("cpu")
    monkeypatch.setenv("POLYDIFF_DEVICE", " CUDA:1 ")
    assert select_device() == torch.device("cuda", 1)
    monkeypatch.setenv("POLYDIFF_DEVICE", "auto")
    assert select_device() == torch.device("cuda", 0)
    # an explicit argument wins over the environment
    monkeypatch.setenv("POLYDIFF_DEVICE", "cuda:1")
    assert select_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("request_", ["cuda", "cuda:0", "mps"])
def test_unavailable_device_is_a_clear_error(no_accelerators: None, request_: str) -> None:
    with pytest.raises(ValueError, match="not available"):
        select_device(request_)


def test_unavailable_device_from_env_names_the_variable(
    no_accelerators: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POLYDIFF_DEVICE", "cuda")
    with pytest.raises(ValueError, match=r"\$POLYDIFF_DEVICE"):
        select_device()


@pytest.mark.parametrize("bad", ["tpu", "gpu", "cuda:x", ""])
def test_unknown_device(no_accelerators: None, bad: str) -> None:
    with pytest.raises(ValueError, match="unknown|malformed"):
        select_device(bad)


def test_device_info_is_json(no_accelerators: None) -> None:
    info = device_info()
    assert info["type"] == "cpu" and info["torch"] == torch.__version__
    json.dumps(info)
