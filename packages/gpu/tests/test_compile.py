"""maybe_compile: compiled where it works, one warning and eager results where it does not;
compile_regions: one compiled function per block class, shared by its instances."""

from __future__ import annotations

import copy
import warnings
from typing import Any

import pytest
import torch

from polydiff.gpu import CompileFallback, compile_regions, maybe_compile, uncompile_regions


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


# --------------------------------------------------------------------------- compile_regions
class Block(torch.nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.lin = torch.nn.Linear(cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.silu(self.lin(x)) + x[..., : self.lin.out_features]


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = torch.nn.ModuleList([Block(8, 8), Block(8, 8), Block(8, 4), Block(4, 4)])
        self.head = torch.nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b in self.blocks:
            x = b(x)
        return self.head(x)


class CountingBackend:
    """A torch.compile backend that counts the graphs it is given and runs them as traced."""

    def __init__(self) -> None:
        self.graphs = 0

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: Any) -> Any:
        self.graphs += 1
        return gm.forward


def test_compile_regions_shares_code_between_blocks() -> None:
    torch.manual_seed(0)
    net, backend = Net(), CountingBackend()
    x = torch.randn(5, 8)
    with torch.no_grad():  # (a block input's requires_grad is guarded on, too)
        want = net(x)
        keys = list(net.state_dict())
        names = compile_regions(net, Block, backend=backend)
        assert names == ["blocks.0", "blocks.1", "blocks.2", "blocks.3"]
        torch.testing.assert_close(net(x), want)
        # four blocks, three distinct (in, out, shape) signatures: three graphs, not four
        assert backend.graphs == 3
        assert list(net.state_dict()) == keys
        net(torch.randn(5, 8))
        assert backend.graphs == 3  # no recompiles for new values
        assert torch._dynamo.config.recompile_limit >= 64
        # the copy runs its own parameters through the same compiled code
        clone = copy.deepcopy(net)
        for p in clone.parameters():
            p.zero_()
        assert clone(x).abs().sum() == 0 and net(x).abs().sum() > 0
        assert backend.graphs == 3
        assert uncompile_regions(net) == names and "forward" not in net.blocks[0].__dict__
        torch.testing.assert_close(net(x), want)


def test_compile_regions_predicate_nesting_and_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    net = Net()
    assert compile_regions(net, lambda name, m: name == "blocks.1", backend="eager") == [
        "blocks.1"]
    with pytest.raises(ValueError, match="already has a compiled forward"):
        compile_regions(net, Block, backend="eager")
    outer = Net()
    assert compile_regions(outer, (Net, Block), backend="eager") == [""]  # blocks are nested
    with pytest.raises(TypeError, match="regions"):
        compile_regions(Net(), "Block", backend="eager")  # type: ignore[arg-type]
    assert compile_regions(Net(), Block, enabled=False) == []
    monkeypatch.setenv("POLYDIFF_COMPILE", "0")
    assert compile_regions(Net(), Block) == []


def test_compile_regions_falls_back_per_class(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch, "compile", _fails_at_first_call)
    torch.manual_seed(0)
    net = Net()
    x = torch.randn(2, 8)
    want = net(x)
    compile_regions(net, Block)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.testing.assert_close(net(x), want)
    assert sum("running eagerly from now on" in str(w.message) for w in caught) == 1
    assert net.blocks[0].forward.__func__.fell_back
