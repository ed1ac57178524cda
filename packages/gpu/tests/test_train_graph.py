"""GraphedTrainStep's eager path (no CUDA): the same step as the hand-written loop, the
non-finite skip and clipping on the device, argument checks. test_cuda.py checks the graph."""

from __future__ import annotations

import copy

import pytest
import torch

from polydiff.gpu import GraphedTrainStep


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.SiLU(), torch.nn.Linear(16, 2))


def _loss(model: torch.nn.Module):  # type: ignore[no-untyped-def]
    def loss_fn(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.mse_loss(model(x), y)

    return loss_fn


def _batches(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 3, generator=g), torch.randn(8, 2, generator=g)) for _ in range(n)]


@pytest.mark.parametrize("fused", [False, True])
def test_eager_path_equals_the_hand_written_step(fused: bool) -> None:
    a, b = _model(), _model()
    opt_a = torch.optim.AdamW(a.parameters(), lr=1e-2, fused=fused or None)
    opt_b = torch.optim.AdamW(b.parameters(), lr=1e-2, fused=fused or None)
    batches = _batches(4)
    step = GraphedTrainStep(_loss(a), opt_a, batches[0], grad_clip=0.5)
    assert not step.captured and step.capture_error is None
    for x, y in batches:
        got = step(x, y)
        opt_b.zero_grad(set_to_none=True)
        want = _loss(b)(x, y)
        want.backward()
        norm = torch.nn.utils.clip_grad_norm_(b.parameters(), 0.5)
        opt_b.step()
        torch.testing.assert_close(got, want.detach(), rtol=0, atol=0)
        torch.testing.assert_close(step.grad_norm, norm, rtol=1e-6, atol=0)
        assert got.ndim == 0 and not got.requires_grad
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-6, atol=1e-7)


def test_skip_nonfinite_leaves_parameters_and_state_alone() -> None:
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, fused=True)
    (x, y), (x2, y2) = _batches(2)
    step = GraphedTrainStep(_loss(model), opt, (x, y), skip_nonfinite=True)
    step(x, y)
    before = copy.deepcopy(model.state_dict())
    state_before = copy.deepcopy(opt.state_dict()["state"])
    bad = step(torch.full_like(x, float("nan")), y)
    assert not torch.isfinite(bad) and not torch.isfinite(step.grad_norm)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    for i, s in opt.state_dict()["state"].items():
        for k, v in s.items():
            torch.testing.assert_close(v, state_before[i][k], rtol=0, atol=0)
    assert float(opt.state_dict()["state"][0]["step"]) == 1.0  # the skipped step is not counted
    assert not hasattr(opt, "found_inf")  # the flag does not leak into later eager steps
    step(x2, y2)
    assert float(opt.state_dict()["state"][0]["step"]) == 2.0
    assert any(not torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_set_lr_reaches_the_optimizer() -> None:
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    step = GraphedTrainStep(_loss(model), opt, _batches(1)[0])
    step.set_lr(0.5)
    assert opt.param_groups[0]["lr"] == 0.5
    group_lr = torch.tensor(0.1)
    opt.param_groups[0]["lr"] = group_lr
    step.set_lr(0.25)
    assert opt.param_groups[0]["lr"] is group_lr and float(group_lr) == 0.25


def test_argument_checks() -> None:
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x, y = _batches(1)[0]
    with pytest.raises(ValueError, match="fused"):
        GraphedTrainStep(_loss(model), opt, (x, y), skip_nonfinite=True)
    with pytest.raises(ValueError, match="warmup"):
        GraphedTrainStep(_loss(model), opt, (x, y), warmup=0)
    with pytest.raises(ValueError, match="grad_clip"):
        GraphedTrainStep(_loss(model), opt, (x, y), grad_clip=0.0)
    with pytest.raises(TypeError, match="not a tensor"):
        GraphedTrainStep(_loss(model), opt, (x, 1.0))  # type: ignore[arg-type]
    frozen = torch.nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no parameters"):
        GraphedTrainStep(_loss(model), torch.optim.SGD(frozen.parameters(), lr=0.1), (x, y))
    step = GraphedTrainStep(_loss(model), opt, (x, y))
    with pytest.raises(ValueError, match="shape"):
        step(x[:2], y[:2])
    with pytest.raises(ValueError, match="expected 2 inputs"):
        step(x)
    with pytest.raises(ValueError, match="0-d"):
        GraphedTrainStep(lambda x, y: model(x), opt, (x, y))(x, y)


def test_capture_required_without_cuda_is_an_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; test_cuda.py covers capture")
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    with pytest.raises(ValueError, match="CUDA graph capture needs CUDA"):
        GraphedTrainStep(_loss(model), opt, _batches(1)[0], enabled=True)
