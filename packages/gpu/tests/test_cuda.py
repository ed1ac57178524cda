"""GPU-only tests: CUDA graphs, CUDA events, device memory, autocast and kernels on CUDA.

Without CUDA these tests are skipped (with a reason that ``-ra`` prints), except under
``POLYDIFF_REQUIRE_CUDA=1`` (what ``tools/gpu_check.sh`` sets), where every one of them
fails instead: a GPU check that ran on a machine without a GPU must not pass.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from polydiff.gpu import (
    CudaGraphRunner,
    GraphedLoop,
    GraphedTrainStep,
    Timer,
    attention_backend,
    autocast,
    compile_regions,
    device_info,
    make_grad_scaler,
    maybe_compile,
    peak_memory_bytes,
    reset_peak_memory,
    resolve_precision,
    rng_state,
    select_device,
    set_rng_state,
    time_fn,
    to_channels_last,
)

REQUIRE_CUDA = os.environ.get("POLYDIFF_REQUIRE_CUDA", "") == "1"
pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() and not REQUIRE_CUDA,
    reason="needs CUDA (run tools/gpu_check.sh on a GPU machine; it makes these fail, not skip)",
)


@pytest.fixture
def cuda() -> torch.device:
    if not torch.cuda.is_available():
        pytest.fail("POLYDIFF_REQUIRE_CUDA=1 but CUDA is not available")
    return torch.device("cuda", 0)


def _mlp(device: torch.device, width: int = 64) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(width, width), torch.nn.SiLU(), torch.nn.Linear(width, width)
    ).to(device)


def test_select_device_and_info(cuda: torch.device) -> None:
    assert select_device() == cuda and select_device("cuda") == cuda
    info = device_info(cuda)
    assert info["type"] == "cuda" and info["total_memory_bytes"] > 0 and info["name"]


def test_autocast_and_scaler_on_cuda(cuda: torch.device) -> None:
    a, b = torch.randn(8, 8, device=cuda), torch.randn(8, 8, device=cuda)
    for precision, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        with autocast(cuda, precision):
            assert (a @ b).dtype == dtype
    assert make_grad_scaler(cuda, "fp16").is_enabled()
    assert resolve_precision("auto", cuda) in ("bf16", "fp16")


def test_graph_runner_step_matches_eager(cuda: torch.device) -> None:
    model = _mlp(cuda).eval()

    def step(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x - t[:, None] * model(x)

    x0, t0 = torch.randn(4, 64, device=cuda), torch.rand(4, device=cuda)
    runner = CudaGraphRunner(step, (x0, t0))
    assert runner.captured and runner.pool is not None
    with torch.no_grad():
        for _ in range(3):
            x, t = torch.randn(4, 64, device=cuda), torch.rand(4, device=cuda)
            torch.testing.assert_close(runner(x, t), step(x, t))


def test_graph_runner_static_outputs_and_clones(cuda: torch.device) -> None:
    x = torch.zeros(3, device=cuda)
    static = CudaGraphRunner(lambda v: v + 1, [x])
    first = static(torch.zeros(3, device=cuda))
    second = static(torch.ones(3, device=cuda))
    assert first is second and second.tolist() == [2.0, 2.0, 2.0]  # buffers are reused
    cloned = CudaGraphRunner(lambda v: v + 1, [x], clone_outputs=True)
    a, b = cloned(torch.zeros(3, device=cuda)), cloned(torch.ones(3, device=cuda))
    assert a.tolist() == [1.0] * 3 and b.tolist() == [2.0] * 3


def test_graph_runner_whole_loop_with_noise(cuda: torch.device) -> None:
    model = _mlp(cuda, 16).eval()

    def loop(x: torch.Tensor) -> torch.Tensor:
        for _ in range(8):
            x = x - 0.1 * model(x) + 0.01 * torch.randn_like(x)
        return x

    x = torch.randn(2, 16, device=cuda)
    runner = CudaGraphRunner(loop, [x], clone_outputs=True)
    a, b = runner(x), runner(x)
    assert not torch.equal(a, b)  # fresh noise on every replay
    assert a.shape == x.shape and torch.isfinite(a).all() and torch.isfinite(b).all()
    # same drift without the noise: replay equals eager up to 8 * 0.01 * |noise|
    with torch.no_grad():
        eager = x.clone()
        for _ in range(8):
            eager = eager - 0.1 * model(eager)
    assert (a - eager).abs().max() < 0.5


def test_cuda_timing(cuda: torch.device) -> None:
    a = torch.randn(512, 512, device=cuda)
    stats = time_fn(lambda: a @ a, warmup=2, repeats=5, device=cuda)
    assert 0 < stats["min"] <= stats["median"] <= stats["max"] < 10
    with Timer(cuda) as t:
        for _ in range(10):
            a = a @ a / 512
    assert 0 < t.elapsed < 10 and torch.isfinite(a).all()


def test_cuda_peak_memory(cuda: torch.device) -> None:
    reset_peak_memory(cuda)
    base = torch.cuda.memory_allocated(cuda)  # tensors other tests left alive
    x = torch.empty(64 * 2**20, dtype=torch.uint8, device=cuda)
    assert peak_memory_bytes(cuda) >= base + 64 * 2**20
    del x
    torch.cuda.empty_cache()
    reset_peak_memory(cuda)
    assert peak_memory_bytes(cuda) < base + 64 * 2**20


def test_cuda_rng_round_trip(cuda: torch.device, tmp_path: Path) -> None:
    state = rng_state()
    assert len(state["cuda"]) == torch.cuda.device_count()
    expected = torch.randn(4, device=cuda)
    torch.save(state, tmp_path / "rng.pt")
    torch.randn(4, device=cuda)
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    torch.testing.assert_close(torch.randn(4, device=cuda), expected, rtol=0, atol=0)


def test_channels_last_conv_bf16(cuda: torch.device) -> None:
    net = torch.nn.Conv2d(8, 16, 3, padding=1).to(cuda)
    x = torch.randn(2, 8, 16, 16, device=cuda)
    with autocast(cuda, "bf16"):
        expected = net(x)
        out = to_channels_last(net)(to_channels_last(x))
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out.float(), expected.float(), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("name", ["flash", "efficient", "math"])
def test_attention_backends_agree(cuda: torch.device, name: str) -> None:
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 128, 64, device=cuda, dtype=torch.float16) for _ in range(3))
    with attention_backend(name):
        out = F.scaled_dot_product_attention(q, k, v)
    ref = ((q.float() @ k.float().transpose(-2, -1)) / math.sqrt(64)).softmax(-1) @ v.float()
    torch.testing.assert_close(out.float(), ref, rtol=1e-2, atol=1e-2)


def test_real_inductor_compile(cuda: torch.device) -> None:
    model = _mlp(cuda, 32)
    compiled = maybe_compile(model)
    x = torch.randn(8, 32, device=cuda)
    torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)
    assert not compiled.fell_back, compiled.compile_error


# --------------------------------------------------------------------------- whole-loop graphs
def test_graphed_loop_replays_the_sampler_loop(cuda: torch.device) -> None:
    # a sampler-shaped loop: bf16 network, fp32 state, per-step host constants
    model = _mlp(cuda, 32).eval().to(torch.bfloat16)
    coefs = [(0.98 ** (i + 1), -0.05 / (i + 1)) for i in range(20)]

    def step(i: int, x: torch.Tensor) -> torch.Tensor:
        a, b = coefs[i]
        return a * x + b * model(x.to(torch.bfloat16)).float()

    x = torch.randn(16, 32, device=cuda)
    loop = GraphedLoop(step, len(coefs), x)
    assert loop.captured and loop.pool is not None
    for _ in range(2):
        x = torch.randn(16, 32, device=cuda)
        out = loop(x)
        assert out.dtype == torch.float32 and out.data_ptr() != loop(x).data_ptr()
        torch.testing.assert_close(out, loop.eager(x), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- graphed training
class _Block(torch.nn.Module):
    def __init__(self, width: int, p: float = 0.0):
        super().__init__()
        self.norm = torch.nn.LayerNorm(width)
        self.lin = torch.nn.Linear(width, width)
        self.drop = torch.nn.Dropout(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop(F.silu(self.lin(self.norm(x))))


def _net(device: torch.device, p: float = 0.0) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(_Block(32, p), _Block(32, p), torch.nn.Linear(32, 32)).to(device)


def _denoising_loss(model: torch.nn.Module, device: torch.device):  # type: ignore[no-untyped-def]
    def loss_fn(x: torch.Tensor) -> torch.Tensor:
        noise = torch.randn_like(x)  # random draws inside the step, as a diffusion loss does
        with autocast(device, "bf16"):
            out = model(x + noise)
        return F.mse_loss(out.float(), noise)

    return loss_fn


def test_graphed_train_step_matches_eager(cuda: torch.device) -> None:
    a, b = _net(cuda, p=0.2), _net(cuda, p=0.2)
    opt_a = torch.optim.AdamW(a.parameters(), lr=1e-3, fused=True, capturable=True)
    opt_b = torch.optim.AdamW(b.parameters(), lr=1e-3, fused=True, capturable=True)
    x0 = torch.randn(16, 32, device=cuda)
    graphed = GraphedTrainStep(_denoising_loss(a, cuda), opt_a, [x0], grad_clip=1.0,
                               skip_nonfinite=True)
    eager = GraphedTrainStep(_denoising_loss(b, cuda), opt_b, [x0], grad_clip=1.0,
                             skip_nonfinite=True, enabled=False)
    assert graphed.captured and graphed.capture_error is None and not eager.captured
    for pa, pb in zip(a.parameters(), b.parameters()):  # the warm-up steps were undone
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)
    assert all(float(s["step"]) == 0 for s in opt_a.state.values())
    for k in range(3):  # same RNG state -> same noise and dropout masks -> same step
        x = torch.randn(16, 32, device=cuda)
        torch.cuda.manual_seed(100 + k)
        la = graphed(x)
        torch.cuda.manual_seed(100 + k)
        lb = eager(x)
        torch.testing.assert_close(la, lb, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(graphed.grad_norm, eager.grad_norm, rtol=1e-4, atol=1e-6)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-6)
    # a non-finite batch is skipped on the device; lr 0 leaves the weights alone
    before = [p.detach().clone() for p in a.parameters()]
    assert not torch.isfinite(graphed(torch.full_like(x0, float("nan"))))
    graphed.set_lr(0.0)
    assert torch.isfinite(graphed(x0))
    for p, q in zip(a.parameters(), before):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    assert all(float(s["step"]) == 4 for s in opt_a.state.values())  # 3 + the lr-0 step


def test_graphed_train_step_needs_a_capturable_optimizer(cuda: torch.device) -> None:
    net = _net(cuda)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, fused=True)
    with pytest.raises(ValueError, match="capturable"):
        GraphedTrainStep(_denoising_loss(net, cuda), opt, [torch.randn(4, 32, device=cuda)])


def test_compiled_regions_train_graphed_and_sample_graphed(cuda: torch.device) -> None:
    # the bench's combination in small: regional inductor compile, a graphed training step,
    # then a graphed sampling loop on a bf16 copy, each against the eager network
    net, ref = _net(cuda), _net(cuda)
    names = compile_regions(net, _Block)
    assert names == ["0", "1"]
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, fused=True, capturable=True)
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=1e-3, fused=True, capturable=True)
    x0 = torch.randn(64, 32, device=cuda)

    def loss_of(m: torch.nn.Module):  # type: ignore[no-untyped-def]
        return lambda x: F.mse_loss(m(x), x.flip(1))  # deterministic: no dropout, no noise

    step = GraphedTrainStep(loss_of(net), opt, [x0])
    ref_step = GraphedTrainStep(loss_of(ref), ref_opt, [x0], enabled=False)
    assert step.captured, step.capture_error
    for _ in range(3):
        x = torch.randn(64, 32, device=cuda)
        torch.testing.assert_close(step(x), ref_step(x), rtol=1e-4, atol=1e-5)
    for p, q in zip(net.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-5)
    assert not net[0].forward.__func__.fell_back

    sampler = _net(cuda).eval().to(torch.bfloat16)
    compile_regions(sampler, _Block)
    eager_sampler = _net(cuda).eval().to(torch.bfloat16)

    def step_of(m: torch.nn.Module):  # type: ignore[no-untyped-def]
        return lambda i, x: 0.9 * x + 0.1 * m(x.to(torch.bfloat16)).float()

    loop = GraphedLoop(step_of(sampler), 10, x0)
    assert loop.captured
    want = GraphedLoop(step_of(eager_sampler), 10, x0, enabled=False)(x0)
    got = loop(x0)
    assert (got - want).norm() / want.norm() < 2e-2  # bf16 kernels differ between the two
