"""Exact resume: a run SIGKILLed mid-training and resumed in a new process ends bit-identical
to an uninterrupted run (model, EMA, optimizer state and the logged losses)."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import torch

from polydiff.core.training import latest_checkpoint, load_checkpoint

SCRIPT = Path(__file__).parent / "scripts" / "train_tiny.py"
_spec = importlib.util.spec_from_file_location("train_tiny", SCRIPT)
tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny)

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CI": "true"}


def _stats(run: Path) -> dict[int, float]:
    lines = (run / "stats.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    steps = [r["step"] for r in records]
    assert steps == sorted(set(steps)), "a step was logged twice"
    return {r["step"]: r["loss"] for r in records}


def test_resume_after_sigkill_is_exact(tmp_path: Path) -> None:
    killed_dir, ref_dir = tmp_path / "killed", tmp_path / "reference"
    cmd = [sys.executable, str(SCRIPT), "--run-dir", str(killed_dir), "--steps", "40",
           "--ckpt-every", "5"]
    killed = subprocess.Popen(cmd + ["--kill-at", "17"], env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:  # the uninterrupted reference, in this process meanwhile
        summary = tiny.build(str(ref_dir), steps=40, ckpt_every=5).fit()
    finally:
        out, err = killed.communicate(timeout=300)
    assert summary["step"] == 40 and summary["skipped"] == 0
    assert killed.returncode == -signal.SIGKILL, err[-2000:]

    # the crash left checkpoint 15 as the latest, and logged steps up to 17
    ckpt_dir = killed_dir / "checkpoints"
    assert latest_checkpoint(ckpt_dir).name == "ckpt-00000015.safetensors"
    assert max(_stats(killed_dir)) == 17
    assert not list(ckpt_dir.glob(".*.tmp"))

    resumed = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from ckpt-00000015" in (killed_dir / "log.txt").read_text()

    model_a, ema_a, state_a = load_checkpoint(ref_dir / "checkpoints" / "ckpt-00000040.safetensors")
    model_b, ema_b, state_b = load_checkpoint(latest_checkpoint(ckpt_dir))
    assert state_b["step"] == 40
    assert model_a.keys() == model_b.keys() and ema_a.keys() == ema_b.keys()
    for k in model_a:
        assert torch.equal(model_a[k], model_b[k]), k
        assert torch.equal(ema_a[k], ema_b[k]), k
    assert not all(torch.equal(model_a[k], ema_a[k]) for k in model_a)  # EMA is not a copy
    opt_a, opt_b = state_a["optimizer"]["state"], state_b["optimizer"]["state"]
    for i in opt_a:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(opt_a[i][name], opt_b[i][name]), (i, name)
    # the training state is plain data: loadable with weights_only=True
    pt = latest_checkpoint(ckpt_dir).with_suffix(".pt")
    assert torch.load(pt, weights_only=True)["data"]["samples_seen"] == 40 * 16
    # every step logged once, with the same losses as the uninterrupted run
    assert _stats(killed_dir) == _stats(ref_dir)
    # keep_last=2: only checkpoints 35 and 40 remain (weights, train state, manifest)
    assert sorted(p.name for p in ckpt_dir.glob("ckpt-*")) == [
        "ckpt-00000035.json", "ckpt-00000035.pt", "ckpt-00000035.safetensors",
        "ckpt-00000040.json", "ckpt-00000040.pt", "ckpt-00000040.safetensors"]
    # the killed run's lock file was stale: the resumed run took it over with one warning
    # and removed it at the end
    assert "taking over the stale lock of pid" in resumed.stderr
    assert not (killed_dir / ".lock").exists()
