"""maybe_compile: compiled where it works, one warning and eager results where it does not."""

from __future__ import annotations

import copy
import warnings
from typing import Any

import pytest
import torch

from polydiff.gpu import CompileFallback, maybe_compile


def f(x: torch.Tensor) -> torch.Tensor:
    """A small function to compile."""
    return torch.sin(x) * 2 + x.square()


def _fails_at_first_call(*args: Any, **kwargs: Any) -> Any:
    """Stand-in for torch.compile whose result raises like a backend failure."""

    def compiled(*a: Any, **k: Any) -> Any:
        raise RuntimeError("backend compiler failed: simulated")

    return compiled


@pytest.fixture(autouse=True)
def _compile_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POLYDIFF_COMPILE", raising=False)


@pytest.mark.parametrize("value", ["0", "false", "OFF"])
def test_env_disables(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("POLYDIFF_COMPILE", value)
    assert maybe_compile(f) is f


def test_enabled_false_returns_the_original() -> None:
    module = torch.nn.Linear(2, 2)
    assert maybe_compile(module, enabled=False) is module


def test_compile_raising_at_wrap_time(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("torch.compile is not supported on this platform")

    monkeypatch.setattr(torch, "compile", broken)
    with pytest.warns(RuntimeWarning, match="unavailable"):
        assert maybe_compile(f) is f


def test_function_falls_back_at_first_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch, "compile", _fails_at_first_call)
    g = maybe_compile(f, mode="max-autotune", fullgraph=True)
    x = torch.randn(5)
    with pytest.warns(RuntimeWarning, match="failed at call time") as record:
        out = g(x)
    assert len(record) == 1
    torch.testing.assert_close(out, f(x), rtol=0, atol=0)
    assert g.fell_back and "simulated" in str(g.compile_error)
    assert g.__name__ == "f" and g.__doc__ == f.__doc__
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning
        torch.testing.assert_close(g(x + 1), f(x + 1), rtol=0, atol=0)


def test_module_falls_back_and_keeps_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch, "compile", _fails_at_first_call)
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh())
    wrapped = maybe_compile(module)
    assert isinstance(wrapped, CompileFallback) and wrapped.module is module
    assert len(list(wrapped.parameters())) == len(list(module.parameters()))
    x = torch.randn(2, 3)
    with pytest.warns(RuntimeWarning):
        out = wrapped(x)
    torch.testing.assert_close(out, module(x), rtol=0, atol=0)
    assert wrapped.fell_back


def test_caller_errors_propagate_without_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch, "compile", _fails_at_first_call)
    g = maybe_compile(f)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(TypeError):
            g("not a tensor")
    assert not g.fell_back


def test_real_compile_matches_eager() -> None:
    # the "eager" backend runs dynamo's tracing without a C++ toolchain, so it is fast
    g = maybe_compile(f, backend="eager")
    x = torch.randn(7)
    torch.testing.assert_close(g(x), f(x))
    assert not g.fell_back


def test_wrapped_module_deepcopies_consistently() -> None:
    # e.g. an EMA copy of a compiled model: the copy must run its own weights
    module = torch.nn.Linear(2, 2)
    wrapped = maybe_compile(module, backend="eager")
    clone = copy.deepcopy(wrapped)
    with torch.no_grad():
        clone.module.weight.zero_()
        clone.module.bias.zero_()
    x = torch.randn(3, 2)
    assert clone(x).abs().sum() == 0 and wrapped(x).abs().sum() > 0
    assert list(wrapped.state_dict()) == ["module.weight", "module.bias"]
