"""Data parallelism: a 2-process CPU (Gloo) torchrun run with gradient accumulation matches
one process with the same global batch, step by step."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from polydiff.core.training import latest_checkpoint, load_checkpoint

SCRIPT = Path(__file__).parent / "scripts" / "train_tiny.py"
_spec = importlib.util.spec_from_file_location("train_tiny", SCRIPT)
tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny)


def _losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "stats.jsonl").read_text().splitlines()]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                    reason="torch built without distributed/Gloo")
def test_two_process_gloo_matches_one_process(tmp_path: Path) -> None:
    ddp_dir, one_dir = tmp_path / "ddp", tmp_path / "single"
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", CI="true", POLYDIFF_DEVICE="cpu")
    # --standalone: a local rendezvous on a free port (no fixed --master_port to collide on)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", str(SCRIPT), "--run-dir", str(ddp_dir), "--data", "fixed", "--steps", "6",
           "--batch-size", "16", "--grad-accum", "2", "--ckpt-every", "3"]
    job = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    try:  # one process, no accumulation, same global batch: in this process meanwhile
        tiny.build(str(one_dir), data="fixed", steps=6, batch_size=16, ckpt_every=3).fit()
    finally:
        out, err = job.communicate(timeout=300)
    assert job.returncode == 0, (out + err)[-3000:]
    # teardown: every rank's process group (and its threads) is gone after gpu.destroy(), so
    # nothing of it runs into interpreter shutdown (where a rank used to abort now and then)
    for r in (0, 1):
        assert f"rank {r}: gloo threads after destroy: 0" in out, out[-2000:]

    model_d, ema_d, state_d = load_checkpoint(latest_checkpoint(ddp_dir / "checkpoints"))
    model_s, ema_s, state_s = load_checkpoint(latest_checkpoint(one_dir / "checkpoints"))
    assert state_d["step"] == state_s["step"] == 6
    assert state_d["world_size"] == 2 and len(state_d["rng"]) == 2  # one RNG state per rank
    init = tiny.build(str(tmp_path / "init"), data="fixed").model.state_dict()
    for k in model_s:
        assert not torch.allclose(model_s[k], init[k]), k  # training moved the weights
        torch.testing.assert_close(model_d[k], model_s[k], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ema_d[k], ema_s[k], rtol=1e-5, atol=1e-6)
    # the logged loss is the mean over ranks: the same global-batch loss as one process
    torch.testing.assert_close(torch.tensor(_losses(ddp_dir)), torch.tensor(_losses(one_dir)),
                               rtol=1e-5, atol=1e-6)
    # only rank 0 wrote the run directory
    assert (ddp_dir / "config.json").is_file()
    assert json.loads((ddp_dir / "config.json").read_text())["resolved"]["world_size"] == 2


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                    reason="torch built without distributed/Gloo")
def test_torchrun_into_a_locked_run_folder_stops_every_rank(tmp_path: Path) -> None:
    """Rank 0 finds the run folder locked: every rank stops with the one-line reason (the
    other ranks do not wait forever in the next collective)."""
    from polydiff.core.training import RunLock

    run = tmp_path / "run"
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", CI="true", POLYDIFF_DEVICE="cpu")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", str(SCRIPT), "--run-dir", str(run), "--data", "fixed", "--steps", "2"]
    with RunLock(run):
        job = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert job.returncode != 0
    text = job.stdout + job.stderr
    assert text.count(f"run folder is in use by pid {os.getpid()}") >= 2, text[-3000:]
    assert not (run / "stats.jsonl").exists()
