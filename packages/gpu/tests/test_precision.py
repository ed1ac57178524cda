"""Precision policy: autocast dtypes, grad scaler only for fp16, auto resolution, TF32."""

from __future__ import annotations

import pytest
import torch

from polydiff.gpu import (
    Precision,
    autocast,
    autocast_dtype,
    make_grad_scaler,
    resolve_precision,
    set_tf32,
)


def test_resolve() -> None:
    assert resolve_precision("auto", "cpu") is Precision.FP32
    assert resolve_precision("bfloat16", "cpu") is Precision.BF16
    assert resolve_precision("half", torch.device("cpu")) is Precision.FP16
    assert resolve_precision(Precision.FP16, "cpu") == "fp16"
    with pytest.raises(ValueError, match="unknown precision"):
        resolve_precision("fp8", "cpu")


@pytest.mark.parametrize(("bf16_ok", "expected"), [(True, "bf16"), (False, "fp16")])
def test_auto_on_cuda(monkeypatch: pytest.MonkeyPatch, bf16_ok: bool, expected: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_ok)
    assert resolve_precision("auto", "cuda:0") == expected


@pytest.mark.parametrize(
    ("precision", "dtype"),
    [("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)],
)
def test_autocast_matmul_dtype_on_cpu(precision: str, dtype: torch.dtype) -> None:
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    with autocast("cpu", precision):
        out = a @ b
        assert torch.is_autocast_enabled("cpu") == (precision != "fp32")
    assert out.dtype == dtype == autocast_dtype(precision, "cpu")
    torch.testing.assert_close(out.float(), a @ b, atol=0.1, rtol=0.05)
    assert not torch.is_autocast_enabled("cpu")


def test_grad_scaler_only_for_fp16() -> None:
    assert make_grad_scaler("cpu", "fp16").is_enabled()
    for precision in ("fp32", "bf16", "auto"):
        assert not make_grad_scaler("cpu", precision).is_enabled()


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_one_training_step_for_every_precision(precision: str) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = make_grad_scaler("cpu", precision)
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    before = model.weight.detach().clone()
    with autocast("cpu", precision):
        loss = (model(x).float() - y).square().mean()
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    assert torch.isfinite(model.weight).all() and not torch.equal(model.weight, before)


def test_set_tf32_toggles_flags() -> None:
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        set_tf32(True)
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        set_tf32(False)
        assert not torch.backends.cuda.matmul.allow_tf32
        assert not torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
