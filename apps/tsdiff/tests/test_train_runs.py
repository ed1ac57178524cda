"""``tsdiff train`` runs that never lie: an existing run is never deleted without
``--overwrite``, ``--resume`` continues from the saved settings and the newest intact
checkpoint, a killed run resumed equals an uninterrupted one bit for bit, the seed fixes the
weights and a locked run folder is one error line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from polydiff.apps.tsdiff.main import main

TIMEOUT = 300
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CI": "true", "POLYDIFF_TEST_THREADS": "1"}


@pytest.fixture(scope="module")
def csv(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    t = np.arange(160)
    frame = pd.concat([pd.DataFrame({
        "item_id": f"s{k}", "timestamp": pd.date_range("2021-01-01", periods=len(t), freq="h"),
        "target": 10 + 3 * np.sin(2 * np.pi * t / 24 + k) + 0.3 * rng.normal(size=len(t))})
        for k in range(2)], ignore_index=True)
    path = tmp_path_factory.mktemp("data") / "tiny.csv"
    frame.to_csv(path, index=False)
    return path


def _args(csv: Path, out: Path, *extra: object) -> list[str]:
    return ["train", "--data", str(csv), "-o", str(out), "--preset", "tiny",
            "--prediction-length", "12", "--context-length", "24", "--batch-size", "8",
            *map(str, extra)]


def run(argv: list, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "model" / "model.safetensors"))


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_existing_run_is_kept_resumed_or_overwritten(csv: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert run(_args(csv, out, "--steps", "4"), capsys)[0] == 0
    before = _weights(out)
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    # -o into an existing run used to delete its model and checkpoints without asking
    code, _, err = run(_args(csv, out, "--steps", "4"), capsys)
    assert code == 2 and err.count("\n") == 1 and "--resume" in err and "--overwrite" in err
    assert _same(_weights(out), before)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ckpts
    # --resume: the saved train.toml is the base (no --preset/lengths given here)
    code, _, err = run(["train", "--data", csv, "-o", out, "--resume", "--steps", "6"], capsys)
    assert code == 0, err
    assert "resumed from ckpt-00000004" in (out / "log.txt").read_text()
    assert (out / "checkpoints" / "ckpt-00000006.safetensors").is_file()
    # --overwrite: a fresh run in the same folder
    (out / "notes.txt").write_text("mine")
    code, _, err = run(_args(csv, out, "--steps", "2", "--overwrite"), capsys)
    assert code == 0, err
    assert sorted(p.name for p in (out / "checkpoints").glob("*.safetensors")) == [
        "ckpt-00000001.safetensors", "ckpt-00000002.safetensors"]
    assert "resumed" not in (out / "log.txt").read_text()
    assert (out / "notes.txt").read_text() == "mine"


def test_same_seed_same_weights(csv: Path, tmp_path: Path, capsys) -> None:
    torch.manual_seed(3)
    assert run(_args(csv, tmp_path / "a", "--steps", "2", "--seed", "5"), capsys)[0] == 0
    torch.rand(50)
    assert run(_args(csv, tmp_path / "b", "--steps", "2", "--seed", "5"), capsys)[0] == 0
    assert run(_args(csv, tmp_path / "c", "--steps", "2", "--seed", "6"), capsys)[0] == 0
    assert _same(_weights(tmp_path / "a"), _weights(tmp_path / "b"))
    assert not _same(_weights(tmp_path / "a"), _weights(tmp_path / "c"))


def test_killed_and_resumed_equals_uninterrupted(csv: Path, tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "polydiff.apps.tsdiff.main"]
    steps = ["--steps", "60"]  # a checkpoint every 6 steps
    ref = subprocess.run(cmd + _args(csv, tmp_path / "ref", *steps), env=ENV,
                         capture_output=True, text=True, timeout=TIMEOUT)
    assert ref.returncode == 0, ref.stderr[-2000:]
    out = tmp_path / "killed"
    job = subprocess.Popen(cmd + _args(csv, out, *steps), env=ENV, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (out / "checkpoints" / "ckpt-00000006.json").exists():
            assert job.poll() is None, "the run ended before its first checkpoint"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        job.send_signal(signal.SIGKILL)
    finally:
        job.wait(timeout=TIMEOUT)
    resumed = subprocess.run(cmd + ["train", "--data", str(csv), "-o", str(out), "--resume"],
                             env=ENV, capture_output=True, text=True, timeout=TIMEOUT)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from ckpt-" in (out / "log.txt").read_text()
    assert _same(_weights(tmp_path / "ref"), _weights(out))
    final = "checkpoints/ckpt-00000060.safetensors"
    assert _same(load_file(str(tmp_path / "ref" / final)), load_file(str(out / final)))


def test_locked_run_folder_is_one_error_line(csv: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from polydiff.core.training import RunLock; "
         "lock = RunLock(sys.argv[1]).acquire(); print('locked', flush=True); sys.stdin.read()",
         str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, _, err = run(_args(csv, out, "--steps", "2"), capsys)
        assert code == 2 and err.count("\n") == 1, err
        assert err.startswith("tsdiff: error:") and f"in use by pid {holder.pid}" in err
    finally:
        holder.stdin.close()
        holder.wait(timeout=TIMEOUT)
    assert not (out / "model").exists()
