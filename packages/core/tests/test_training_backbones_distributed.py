"""Every core backbone (U-Net 1-D/2-D, DiT, U-ViT, WaveNet) trains under DDP and under FSDP
with 2 Gloo processes and ends where one process with the same global batch ends.

Before the FSDP unit fix the U-Nets failed under FSDP ("got mixed torch.Tensor and DTensor"
at ``level.downsample``: a U-Net level became an FSDP unit but its forward never runs).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from polydiff.core.training import load_checkpoint, verify_checkpoint

SCRIPT = Path(__file__).parent / "scripts" / "train_backbones.py"
_spec = importlib.util.spec_from_file_location("train_backbones", SCRIPT)
bb = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bb)

TOL = {"rtol": 1e-4, "atol": 1e-5}  # the same sums in another order, over 3 AdamW steps


def _final(run: Path) -> tuple:
    path = run / "checkpoints" / "ckpt-00000003.safetensors"
    assert verify_checkpoint(path) is None
    return load_checkpoint(path)


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                    reason="torch built without distributed/Gloo")
def test_every_backbone_under_ddp_and_fsdp_matches_one_process(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", CI="true", POLYDIFF_DEVICE="cpu")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", str(SCRIPT), "--run-root", str(tmp_path / "multi"), "--strategy", "ddp",
           "fsdp"]
    job = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    try:  # the single-process references, in this process meanwhile
        for name in bb.BACKBONES:
            trainer = bb.build(name, str(tmp_path / "single" / name))
            trainer.fit()
            trainer.close()
    finally:
        try:
            out, err = job.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            job.kill()
            out, err = job.communicate()
    assert job.returncode == 0, (out + err)[-4000:]
    for name in bb.BACKBONES:
        model_s, ema_s, state_s = _final(tmp_path / "single" / name)
        init = bb.build(name, str(tmp_path / "init" / name)).model.state_dict()
        moved = [k for k in model_s if not torch.equal(model_s[k], init[k])]
        assert len(moved) > len(model_s) // 2, name  # training changed the weights
        for strategy in ("ddp", "fsdp"):
            model_m, ema_m, state_m = _final(tmp_path / "multi" / f"{strategy}-{name}")
            assert state_m["world_size"] == 2 and state_m["strategy"] == strategy
            assert model_m.keys() == model_s.keys(), (strategy, name)
            where = f"{strategy} {name}"
            for k in model_s:
                torch.testing.assert_close(model_m[k], model_s[k], **TOL,
                                           msg=lambda m, k=k, w=where: f"{w} {k}: {m}")
                torch.testing.assert_close(ema_m[k], ema_s[k], **TOL)
