"""CudaGraphRunner's and GraphedLoop's eager path (no CUDA): same results, same checks, documented
semantics."""

from __future__ import annotations

from typing import NamedTuple

import pytest
import torch

from polydiff.gpu import CudaGraphRunner, GraphedLoop
from polydiff.gpu.graphs import _map_tensors


class Pair(NamedTuple):
    a: torch.Tensor
    b: torch.Tensor


def _step(model: torch.nn.Module) -> object:
    def step(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x - 0.1 * model(torch.cat([x, t[:, None]], dim=1))

    return step


def test_eager_path_equals_eager() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.SiLU(), torch.nn.Linear(16, 4))
    step = _step(model)
    x, t = torch.randn(3, 4), torch.rand(3)
    runner = CudaGraphRunner(step, (x, t), warmup=2)
    assert not runner.captured and runner.pool is None
    for _ in range(3):
        x, t = torch.randn(3, 4), torch.rand(3)
        out = runner(x, t)
        torch.testing.assert_close(out, step(x, t), rtol=0, atol=0)
        assert not out.requires_grad  # no_grad by default, as on the graph path


def test_whole_loop_with_nested_outputs() -> None:
    def loop(x: torch.Tensor) -> dict[str, object]:
        traj = []
        for _ in range(4):
            x = 0.5 * x + 1
            traj.append(x)
        return {"x": x, "traj": traj, "pair": Pair(x, -x)}

    x = torch.zeros(2)
    out = CudaGraphRunner(loop, [x], clone_outputs=True)(x)
    torch.testing.assert_close(out["x"], torch.full((2,), 1.875))
    assert len(out["traj"]) == 4 and isinstance(out["pair"], Pair)


def test_checks_shapes_dtypes_and_arity() -> None:
    runner = CudaGraphRunner(torch.neg, [torch.zeros(2, 3)])
    with pytest.raises(ValueError, match="shape"):
        runner(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="dtype"):
        runner(torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="expected 1 inputs"):
        runner(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(TypeError):
        CudaGraphRunner(torch.neg, [1.0])  # type: ignore[list-item]


def test_capture_required_without_cuda_is_an_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; test_cuda.py covers capture")
    with pytest.raises(ValueError, match="CUDA graph capture needs CUDA"):
        CudaGraphRunner(torch.neg, [torch.zeros(2)], enabled=True)


def test_enabled_false_runs_eagerly_and_grad_optional() -> None:
    w = torch.ones(2, requires_grad=True)
    runner = CudaGraphRunner(lambda x: x * w, [torch.zeros(2)], enabled=False, no_grad=False)
    assert runner(torch.ones(2)).requires_grad


def test_map_tensors_keeps_structure() -> None:
    obj = {"a": [torch.ones(1), (torch.zeros(1), None)], "p": Pair(torch.ones(1), torch.ones(1))}
    out = _map_tensors(obj, lambda t: t + 1)
    assert out["a"][1][1] is None and isinstance(out["p"], Pair)
    assert out["a"][0].item() == 2 and out["p"].b.item() == 2


# --------------------------------------------------------------------------- GraphedLoop
def _ddim_like(model: torch.nn.Module, coefs: list[tuple[float, float]]) -> object:
    """A sampler-shaped step: network call on a low-precision copy, fp32 update with per-step
    host constants indexed by ``i``."""

    def step(i: int, x: torch.Tensor) -> torch.Tensor:
        a, b = coefs[i]
        eps = model(x.to(torch.bfloat16)).float()
        return a * x + b * eps

    return step


def test_graphed_loop_eager_path_equals_the_loop() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.SiLU(), torch.nn.Linear(8, 4))
    model = model.to(torch.bfloat16)
    coefs = [(1.0 - 0.01 * i, -0.1 / (i + 1)) for i in range(6)]
    step = _ddim_like(model, coefs)
    x = torch.randn(3, 4)
    loop = GraphedLoop(step, len(coefs), x)
    assert not loop.captured and loop.pool is None
    want = x.clone()
    with torch.no_grad():
        for i in range(len(coefs)):
            want = step(i, want)
    got = loop(x)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert got.dtype == torch.float32 and not got.requires_grad
    torch.testing.assert_close(loop.eager(x), want, rtol=0, atol=0)


def test_graphed_loop_checks_state_and_steps() -> None:
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="positive int"):
        GraphedLoop(lambda i, s: s, 0, x)
    with pytest.raises(ValueError, match="positive int"):
        GraphedLoop(lambda i, s: s, 2.5, x)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not a tensor"):
        GraphedLoop(lambda i, s: s, 2, [x])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="changed the state"):
        GraphedLoop(lambda i, s: s.double(), 2, x)(x)
    with pytest.raises(ValueError, match="changed the state"):
        GraphedLoop(lambda i, s: s[:1], 2, x)(x)
    with pytest.raises(ValueError, match="shape"):
        GraphedLoop(lambda i, s: s + 1, 2, x)(torch.zeros(3, 3))
    assert GraphedLoop(lambda i, s: s + i, 4, x)(x).tolist() == [[6.0] * 3] * 2


def test_graphed_loop_capture_required_without_cuda_is_an_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; test_cuda.py covers capture")
    with pytest.raises(ValueError, match="CUDA graph capture needs CUDA"):
        GraphedLoop(lambda i, s: s, 2, torch.zeros(2), enabled=True)
