"""Training engine units: EMA closed form, clipping, accumulation, the non-finite guard,
atomic checkpoints, data order, config and precision."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from polydiff.core.training import (
    EMA,
    IndexedData,
    StreamData,
    TrainConfig,
    as_objective,
    checkpoint,
    latest_checkpoint,
    load_checkpoint,
    next_run_dir,
)
from polydiff.core.training.loop import Trainer

SCRIPT = Path(__file__).parent / "scripts" / "train_tiny.py"
_spec = importlib.util.spec_from_file_location("train_tiny", SCRIPT)
tiny = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("train_tiny", tiny)  # dynamo (torch.compile) looks modules up by name
_spec.loader.exec_module(tiny)


def _params(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


# --------------------------------------------------------------------------- EMA
@pytest.mark.parametrize("warmup", ["none", "tf", "power"])
def test_ema_matches_closed_form(warmup: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    decay = 0.95
    ema = EMA(model, decay, warmup, power=0.75, inv_gamma=2.0)
    expected = {k: v.detach().double().clone() for k, v in model.state_dict().items()}
    for t in range(6):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
            model[1].running_mean.add_(1.0)
        d = {"none": decay, "tf": min(decay, (1 + t) / (10 + t)),
             "power": min(decay, 1 - (1 + t / 2.0) ** -0.75)}[warmup]
        assert math.isclose(ema.update(t), d, rel_tol=1e-12)
        for name, p in model.named_parameters():
            expected[name] = d * expected[name] + (1 - d) * p.detach().double()
    for name, _ in model.named_parameters():
        torch.testing.assert_close(ema.shadow[name].double(), expected[name], rtol=1e-6,
                                   atol=1e-6)
    assert torch.equal(ema.shadow["1.running_mean"], model[1].running_mean)  # buffers copied
    if warmup == "power":  # decay_0 = 0: the first update copied the weights
        assert ema.decay_at(0) == 0.0
    other = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema.copy_to(other)
    for name, p in other.named_parameters():
        torch.testing.assert_close(p.detach().double(), expected[name], rtol=1e-6, atol=1e-6)
    fresh = EMA(other, decay, warmup)
    fresh.load_state_dict(ema.state_dict())
    assert all(torch.equal(fresh.shadow[k], ema.shadow[k]) for k in ema.shadow)


# --------------------------------------------------------------------------- one step
def _grad_norm(trainer: Trainer) -> float:
    return torch.linalg.vector_norm(
        torch.stack([p.grad.norm() for p in trainer.params])).item()


def test_gradient_clipping_to_max_norm(tmp_path: Path) -> None:
    free = tiny.build(str(tmp_path / "free"), data="fixed", grad_clip=None)
    rec = free.train_step()
    assert math.isclose(_grad_norm(free), rec["grad_norm"], rel_tol=1e-5)  # untouched
    clipped = tiny.build(str(tmp_path / "clip"), data="fixed", grad_clip=1e-3)
    rec_c = clipped.train_step()
    assert math.isclose(rec_c["grad_norm"], rec["grad_norm"], rel_tol=1e-6)  # pre-clip norm
    assert rec_c["grad_norm"] > 0.1
    assert math.isclose(_grad_norm(clipped), 1e-3, rel_tol=1e-4)  # after the clip


def _fit_fixed(run: Path, **kw: Any) -> dict[str, torch.Tensor]:
    trainer = tiny.build(str(run), data="fixed", steps=3, ckpt_every=0, **kw)
    trainer.fit()
    return _params(trainer)


def test_gradient_accumulation_equals_larger_batch(tmp_path: Path) -> None:
    big = _fit_fixed(tmp_path / "big", batch_size=16, grad_accum=1)
    acc = _fit_fixed(tmp_path / "acc", batch_size=16, grad_accum=2)
    acc4 = _fit_fixed(tmp_path / "acc4", batch_size=16, grad_accum=4)
    half = _fit_fixed(tmp_path / "half", batch_size=8, grad_accum=1)
    for k in big:
        torch.testing.assert_close(acc[k], big[k], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(acc4[k], big[k], rtol=1e-5, atol=1e-6)
    # the check can fail: one micro-batch alone is a different step
    assert max((half[k] - big[k]).abs().max().item() for k in big) > 1e-4


class _NaNAt:
    """A loss that is NaN on call ``k`` (0-based)."""

    def __init__(self, loss: Any, k: int):
        self.loss, self.k, self.calls = as_objective(loss), k, 0

    def __call__(self, model: nn.Module, batch: Any, generator: torch.Generator) -> Any:
        out = self.loss(model, batch, generator)
        self.calls += 1
        return out * float("nan") if self.calls == self.k + 1 else out


def test_nonfinite_loss_skips_the_step(tmp_path: Path) -> None:
    trainer = tiny.build(str(tmp_path / "nan"), data="fixed", steps=5, ckpt_every=0)
    trainer._module._loss[0] = _NaNAt(trainer._module._loss[0], k=2)
    snaps: list[dict[str, Any]] = []

    def snapshot(tr: Trainer, record: dict[str, Any]) -> None:
        opt = tr.optimizer.state_dict()["state"]
        snaps.append({"params": _params(tr), "record": record,
                      "ema": {k: v.clone() for k, v in tr.ema.shadow.items()},
                      "opt": {i: {n: v.clone() for n, v in s.items()} for i, s in opt.items()}})

    trainer.callbacks.append(snapshot)
    summary = trainer.fit()
    assert summary["step"] == 5 and summary["skipped"] == 1
    before, during, after = snaps[1], snaps[2], snaps[3]
    assert during["record"]["skipped"] == 1 and math.isnan(during["record"]["loss"])
    for part in ("params", "ema"):
        assert all(torch.equal(before[part][k], during[part][k]) for k in before[part]), part
        assert not all(torch.equal(during[part][k], after[part][k]) for k in during[part])
    for i, s in before["opt"].items():
        assert all(torch.equal(v, during["opt"][i][n]) for n, v in s.items())
    stats = [json.loads(x) for x in (trainer.run_dir / "stats.jsonl").read_text().splitlines()]
    assert [r["skipped"] for r in stats] == [0, 0, 1, 0, 0]
    assert stats[2]["loss"] is None and stats[-1]["skipped_total"] == 1
    assert all(math.isfinite(r["loss"]) for r in stats if not r["skipped"])
    assert "step 3: non-finite loss" in (trainer.run_dir / "log.txt").read_text()


# --------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("fail_at", ["weights", "state", "latest"])
def test_interrupted_checkpoint_keeps_previous(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               fail_at: str) -> None:
    run = tmp_path / "run"
    trainer = tiny.build(str(run), data="fixed", steps=2, ckpt_every=2)
    trainer.fit()
    saved = _params(trainer)
    trainer.train_step()
    trainer.train_step()
    real_save, real_replace = checkpoint.save_file, os.replace

    def torn_save(tensors: Any, filename: str, metadata: Any = None) -> None:
        Path(filename).write_bytes(b"\x00" * 17)  # half-written, then the "crash"
        raise OSError("disk full")

    def failing_replace(src: Any, dst: Any) -> None:
        suffix = ".pt" if fail_at == "state" else "latest"
        if str(dst).endswith(suffix):
            raise OSError("crash before the rename")
        real_replace(src, dst)

    if fail_at == "weights":
        monkeypatch.setattr(checkpoint, "save_file", torn_save)
    else:
        monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError):
        trainer.save_checkpoint()
    monkeypatch.setattr(checkpoint, "save_file", real_save)
    monkeypatch.setattr(os, "replace", real_replace)

    ckpt_dir = run / "checkpoints"
    assert latest_checkpoint(ckpt_dir).name == "ckpt-00000002.safetensors"
    assert not list(ckpt_dir.glob(".*.tmp"))  # temporary files cleaned up
    model, _, state = load_checkpoint(latest_checkpoint(ckpt_dir))
    assert state["step"] == 2 and all(torch.equal(model[k], saved[k]) for k in saved)
    fresh = tiny.build(str(run), data="fixed", steps=4, ckpt_every=2)
    assert fresh.load_checkpoint() and fresh.step == 2
    assert all(torch.equal(v, saved[k]) for k, v in _params(fresh).items())
    stale = ckpt_dir / ".ckpt-00000003.pt.99999.tmp"  # left by a writer killed mid-write
    stale.write_bytes(b"torn")
    trainer.save_checkpoint()  # the next save succeeds, moves the pointer and cleans up
    assert latest_checkpoint(ckpt_dir).name == "ckpt-00000004.safetensors"
    assert not stale.exists()


# --------------------------------------------------------------------------- data, config
def test_indexed_data_order() -> None:
    n = 10
    data = IndexedData(torch.arange(n) * 10, seed=3)
    pos = torch.arange(3 * n)
    idx = data.indices(pos)
    for e in range(3):  # every epoch is a permutation, and epochs differ
        assert sorted(idx[e * n:(e + 1) * n].tolist()) == list(range(n))
    assert not torch.equal(idx[:n], idx[n:2 * n])
    again = IndexedData({"a": torch.arange(n) * 10}, seed=3)
    assert torch.equal(again.get(pos[7:15])["a"], data.get(pos[7:15]))  # a pure function
    assert torch.equal(IndexedData(torch.arange(n), shuffle=False).get(pos[8:12]),
                       torch.tensor([8, 9, 0, 1]))


def test_stream_data_resumes_position() -> None:
    def factory(epoch: int) -> list[int]:
        return [100 * epoch + i for i in range(3)]

    a = StreamData(factory)
    first = [a.get() for _ in range(4)]
    b = StreamData(factory)
    b.load_state_dict(a.state_dict())
    assert first == [0, 1, 2, 100] and [a.get(), a.get()] == [b.get(), b.get()] == [101, 102]


def test_config_roundtrip_and_validation(tmp_path: Path) -> None:
    cfg = TrainConfig(steps=5, betas=[0.8, 0.99], grad_clip=None)
    assert TrainConfig.from_dict(json.loads(cfg.to_json())) == cfg
    (tmp_path / "c.toml").write_text("[train]\nsteps = 7\nbatch_size = 8\ngrad_accum = 2\n")
    assert TrainConfig.from_toml(tmp_path / "c.toml", "train").micro_batch == 4
    for bad in ({"batch_size": 6, "grad_accum": 4}, {"precision": "fp8"}, {"grad_clip": 0},
                {"ema_warmup": "cosine"}, {"nope": 1}):
        with pytest.raises(ValueError):
            TrainConfig.from_dict(bad)
    assert next_run_dir(tmp_path / "runs", "x y").name == "00000-x-y"
    assert next_run_dir(tmp_path / "runs", "x y").name == "00001-x-y"


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_smoke(tmp_path: Path, precision: str) -> None:
    trainer = tiny.build(str(tmp_path / precision), data="fixed", steps=3, ckpt_every=0,
                         precision=precision)
    summary = trainer.fit()
    assert summary["step"] == 3
    assert all(torch.isfinite(v).all() for v in _params(trainer).values())
    _, _, state = load_checkpoint(latest_checkpoint(trainer.checkpoint_dir))
    assert bool(state["scaler"]) == (precision == "fp16")  # fp16 saves the loss scale


# --------------------------------------------------------------------------- torch.compile
_CUDA_REQUIRED = os.environ.get("POLYDIFF_REQUIRE_CUDA") == "1"


@pytest.mark.parametrize("device", [
    pytest.param("cpu", marks=pytest.mark.slow),
    pytest.param("cuda", marks=pytest.mark.skipif(
        not torch.cuda.is_available() and not _CUDA_REQUIRED, reason="needs CUDA")),
])
def test_compiled_training_matches_eager(tmp_path: Path, device: str) -> None:
    """``TrainConfig(compile=True)`` really compiles (no silent eager fallback) and trains the
    same parameters as the eager loop, up to kernel-fusion rounding."""
    eager = _fit_fixed(tmp_path / "eager", batch_size=16, device=device)
    trainer = tiny.build(str(tmp_path / "compiled"), data="fixed", steps=3, ckpt_every=0,
                         batch_size=16, device=device, compile=True)
    trainer.fit()
    assert not getattr(trainer._forward, "fell_back", True), trainer._forward.compile_error
    compiled = _params(trainer)
    for k in eager:
        torch.testing.assert_close(compiled[k], eager[k], rtol=1e-4, atol=1e-5)
    moved = max((compiled[k] - tiny.build(str(tmp_path / "init"), data="fixed").model
                 .state_dict()[k].to(device)).abs().max().item() for k in compiled)
    assert moved > 1e-4  # three optimiser steps did change the weights


def test_read_stats_skips_torn_and_nonfinite_lines(tmp_path: Path) -> None:
    from polydiff.core.training import read_stats

    lines = ['{"step": 1, "loss": 0.5}', '{"step": 2, "loss": NaN}', '{"step": 3, "lo',
             '{"step": 4, "loss": true}', '[1, 2]', '{"step": 5, "loss": 2}']
    (tmp_path / "stats.jsonl").write_text("\n".join(lines))
    want = [{"step": 1, "loss": 0.5}, {"step": 5, "loss": 2}]
    assert read_stats(tmp_path) == want == read_stats(tmp_path / "stats.jsonl")
    assert read_stats(tmp_path / "missing") == []
