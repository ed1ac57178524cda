"""FSDP2 data parallelism: a 2-process CPU (Gloo) torchrun run with ``strategy="fsdp"``,
gradient accumulation and a restart from its own checkpoint matches one process with the same
global batch; its checkpoints have the single-process format and resume in one process."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

from polydiff.core.nn import UNet, UNetConfig
from polydiff.core.training import TrainConfig, latest_checkpoint, load_checkpoint
from polydiff.core.training.fsdp import (
    default_fsdp_units,
    optimizer_state_by_index,
    optimizer_state_by_name,
    shard_module,
)

SCRIPT = Path(__file__).parent / "scripts" / "train_tiny.py"
_spec = importlib.util.spec_from_file_location("train_tiny", SCRIPT)
tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny)

TOL = {"rtol": 1e-5, "atol": 1e-6}  # as the DDP test: the same sums in another order
CLIP = 0.5  # below most steps' gradient norm (~0.45-0.8 here): clipping of sharded gradients


def _losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "stats.jsonl").read_text().splitlines()]


def _assert_same_state(a: tuple, b: tuple) -> None:
    """Two checkpoints ``(model, ema, train_state)`` hold the same numbers in the same form."""
    (model_a, ema_a, state_a), (model_b, ema_b, state_b) = a, b
    assert model_a.keys() == model_b.keys() and ema_a.keys() == ema_b.keys()
    for k in model_a:
        assert model_a[k].shape == model_b[k].shape, k  # full tensors, not shards
        torch.testing.assert_close(model_a[k], model_b[k], **TOL)
        torch.testing.assert_close(ema_a[k], ema_b[k], **TOL)
    opt_a, opt_b = state_a["optimizer"], state_b["optimizer"]
    assert opt_a["param_groups"] == opt_b["param_groups"]  # index-keyed, same hyperparameters
    assert opt_a["state"].keys() == opt_b["state"].keys()
    for i in opt_a["state"]:
        for name, value in opt_a["state"][i].items():
            torch.testing.assert_close(value, opt_b["state"][i][name], **TOL)


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                    reason="torch built without distributed/Gloo")
def test_two_process_fsdp_matches_one_process(tmp_path: Path) -> None:
    fsdp_dir, one_dir = tmp_path / "fsdp", tmp_path / "single"
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", CI="true", POLYDIFF_DEVICE="cpu")
    # train 3 steps, then a new trainer resumes from checkpoint 3 to step 6 (FSDP -> FSDP)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", str(SCRIPT), "--run-dir", str(fsdp_dir), "--data", "fixed", "--steps", "6",
           "--batch-size", "16", "--grad-accum", "2", "--ckpt-every", "3", "--restart-at", "3",
           "--strategy", "fsdp", "--grad-clip", str(CLIP)]
    job = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    try:  # one process, no accumulation, same global batch: in this process meanwhile
        tiny.build(str(one_dir), data="fixed", steps=6, batch_size=16, ckpt_every=3,
                   grad_clip=CLIP).fit()
    finally:
        out, err = job.communicate(timeout=300)
    assert job.returncode == 0, (out + err)[-3000:]
    assert "resumed from ckpt-00000003" in (fsdp_dir / "log.txt").read_text()
    config = json.loads((fsdp_dir / "config.json").read_text())["resolved"]
    assert (config["strategy"], config["world_size"]) == ("fsdp", 2)

    fsdp_ckpt = fsdp_dir / "checkpoints"
    final_f = load_checkpoint(latest_checkpoint(fsdp_ckpt))
    final_s = load_checkpoint(latest_checkpoint(one_dir / "checkpoints"))
    assert final_f[2]["step"] == final_s[2]["step"] == 6
    assert final_f[2]["strategy"] == "fsdp" and len(final_f[2]["rng"]) == 2
    init = tiny.build(str(tmp_path / "init"), data="fixed").model.state_dict()
    for k in init:
        assert not torch.allclose(final_s[0][k], init[k]), k  # training moved the weights
    _assert_same_state(final_f, final_s)
    torch.testing.assert_close(torch.tensor(_losses(fsdp_dir)), torch.tensor(_losses(one_dir)),
                               **TOL)
    norms = [json.loads(line)["grad_norm"] for line in (one_dir / "stats.jsonl").open()]
    assert sum(n > CLIP for n in norms) >= 3  # clipping acted (the norm is before clipping)

    # FSDP -> one process: checkpoint 3 of the FSDP run resumes here and ends where the
    # single-process run ended (different world size: fresh RNG streams, unused by "fixed")
    moved = tmp_path / "moved"
    (moved / "checkpoints").mkdir(parents=True)
    for suffix in (".safetensors", ".pt"):
        shutil.copy(fsdp_ckpt / f"ckpt-00000003{suffix}", moved / "checkpoints")
    (moved / "checkpoints" / "latest").write_text("ckpt-00000003\n")
    trainer = tiny.build(str(moved), data="fixed", steps=6, batch_size=16, ckpt_every=3,
                         grad_clip=CLIP)
    assert trainer.fit()["step"] == 6
    assert "resumed from ckpt-00000003" in (moved / "log.txt").read_text()
    _assert_same_state(load_checkpoint(latest_checkpoint(moved / "checkpoints")), final_s)


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 2)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner[1](self.inner[0](x))


class _Level(nn.Module):
    """A container without a forward (its parent calls the children), like a U-Net level."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([nn.Linear(2, 2)])
        self.down = nn.Linear(2, 2)


def test_default_units_are_list_children_innermost_first() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.ModuleList([_Block(), nn.Linear(2, 2)]))
    units = default_fsdp_units(model)
    block, last = model[1][0], model[1][1]
    expected = [last, block.inner[1], block.inner[0], block]  # pre-order, reversed
    assert [id(u) for u in units] == [id(u) for u in expected]
    assert units.index(block.inner[0]) < units.index(block)  # children before parents
    assert default_fsdp_units(nn.Sequential(nn.Linear(2, 2))) == []


def test_containers_without_forward_are_never_units() -> None:
    """A unit's parameters are gathered only inside its own forward: a container that is
    never called is replaced by its children (this is what broke the U-Net under FSDP)."""
    levels = nn.ModuleList([_Level(), _Level()])
    units = default_fsdp_units(nn.Sequential(levels))
    assert not any(isinstance(u, _Level) for u in units)
    expected = {id(m) for lv in levels for m in (lv.blocks[0], lv.down)}
    assert {id(u) for u in units} == expected
    unet_units = default_fsdp_units(UNet(UNetConfig.tiny(dims=2)))
    assert unet_units and all(type(u).forward is not nn.Module.forward for u in unet_units)
    mesh = None  # never reached: the check comes before any sharding
    with pytest.raises(ValueError, match="no forward of its own"):
        shard_module(nn.Sequential(levels), levels, mesh, lambda m: [m[0]])


def test_optimizer_state_name_index_round_trip() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 1))
    opt = torch.optim.AdamW([{"params": [model[0].weight, model[1].weight]},
                             {"params": [model[0].bias, model[1].bias], "weight_decay": 0.0}])
    model(torch.ones(2, 3)).sum().backward()
    opt.step()
    names = ["0.weight", "1.weight", "0.bias", "1.bias"]  # the optimizer's order
    by_index = opt.state_dict()
    by_name = optimizer_state_by_name(by_index, names)
    assert set(by_name["state"]) == set(names)
    assert by_name["param_groups"][1]["params"] == ["0.bias", "1.bias"]
    assert by_name["state"]["1.bias"] is by_index["state"][3]
    back = optimizer_state_by_index(by_name, names)
    assert back["param_groups"] == by_index["param_groups"]
    assert back["state"].keys() == by_index["state"].keys()
    with pytest.raises(ValueError, match="trainable parameters"):
        optimizer_state_by_name(by_index, names[:3])


def test_strategy_is_validated_and_single_process_ignores_it(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="strategy must be one of"):
        TrainConfig(strategy="zero3")
    assert TrainConfig.from_dict({"strategy": "fsdp"}).to_dict()["strategy"] == "fsdp"
    trainer = tiny.build(str(tmp_path / "one"), data="fixed", steps=2, strategy="fsdp")
    assert trainer.strategy == "single" and trainer.resolved_config()["strategy"] == "fsdp"
    trainer.fit()
    full, ema = trainer.full_state_dict(), trainer.full_state_dict("ema")
    for k, v in trainer.model.state_dict().items():
        assert full[k].device.type == "cpu" and torch.equal(full[k], v)
        assert full[k].data_ptr() != v.data_ptr()  # a copy, safe to keep
        assert torch.equal(ema[k], trainer.ema.state_dict()[k])
    with pytest.raises(ValueError, match="'model' or 'ema'"):
        trainer.full_state_dict("optimizer")
