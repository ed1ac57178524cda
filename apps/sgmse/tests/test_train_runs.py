"""``sgmse train`` runs that never lie: the seed fixes the weights, a killed run resumed with
``--resume`` ends bit-identical to an uninterrupted one, a damaged latest checkpoint is
skipped with one warning, a locked run folder is one error line, and every file of a run
folder carries the user's umask permissions."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from polydiff.apps.sgmse.main import main

TIMEOUT = 300
TINY = ["--preset", "tiny", "--batch-size", "2", "--segment-frames", "16", "--device", "cpu"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CI": "true", "POLYDIFF_TEST_THREADS": "1"}


def run(argv: list, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _train_cmd(corpus: Path, out: Path, *extra: object) -> list[str]:
    return [sys.executable, "-m", "polydiff.apps.sgmse.main", "train", "--data", str(corpus),
            "-o", str(out), *TINY, *map(str, extra)]


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "model" / "model.safetensors"))


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_same_weights(corpus: Path, tmp_path: Path, capsys) -> None:
    """Before the engine seeded model construction, two runs with --seed 0 differed."""
    args = ["train", "--data", corpus, *TINY, "--steps", "1", "--seed", "0"]
    torch.manual_seed(1)
    assert run(args + ["-o", tmp_path / "a"], capsys)[0] == 0
    torch.rand(100)  # the global generator moved: must not matter
    assert run(args + ["-o", tmp_path / "b"], capsys)[0] == 0
    assert _same(_weights(tmp_path / "a"), _weights(tmp_path / "b"))
    assert run(["train", "--data", corpus, *TINY, "--steps", "1", "--seed", "1", "-o",
                tmp_path / "c"], capsys)[0] == 0
    assert not _same(_weights(tmp_path / "a"), _weights(tmp_path / "c"))


def test_killed_and_resumed_equals_uninterrupted(corpus: Path, tmp_path: Path) -> None:
    """A CLI run SIGKILLed after its first checkpoint and resumed with --resume ends
    bit-identical (exported EMA model and final checkpoint) to an uninterrupted run."""
    steps = ["--steps", "6", "--set", "ckpt_every=2", "log_every=1"]
    ref = subprocess.run(_train_cmd(corpus, tmp_path / "ref", *steps), env=ENV,
                         capture_output=True, text=True, timeout=TIMEOUT)
    assert ref.returncode == 0, ref.stderr[-2000:]
    killed = tmp_path / "killed"
    job = subprocess.Popen(_train_cmd(corpus, killed, *steps), env=ENV,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (killed / "checkpoints" / "ckpt-00000002.json").exists():
            assert job.poll() is None, "the run ended before its first checkpoint"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        job.send_signal(signal.SIGKILL)
    finally:
        job.wait(timeout=TIMEOUT)
    assert (killed / ".lock").exists()  # left behind by the killed process
    resumed = subprocess.run(_train_cmd(corpus, killed, "--resume"), env=ENV,
                             capture_output=True, text=True, timeout=TIMEOUT)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "taking over the stale lock" in resumed.stderr
    assert "resumed from ckpt-" in (killed / "log.txt").read_text()
    assert _same(_weights(tmp_path / "ref"), _weights(killed))
    ckpt = "checkpoints/ckpt-00000006.safetensors"
    assert _same(load_file(str(tmp_path / "ref" / ckpt)), load_file(str(killed / ckpt)))


def test_damaged_checkpoints_and_locked_folder(corpus: Path, trained: dict, tmp_path: Path,
                                               capsys) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(trained["run"], run_dir)  # checkpoints 2 and 3
    latest = run_dir / "checkpoints" / "ckpt-00000003.safetensors"
    latest.write_bytes(latest.read_bytes()[:200])
    code, out, err = run(["train", "--data", corpus, "-o", run_dir, "--resume", "--steps", "4",
                          "--json"], capsys)
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "ckpt-00000003" in warnings[0], err
    assert "resuming from ckpt-00000002" in warnings[0]

    for p in (run_dir / "checkpoints").glob("ckpt-*.safetensors"):
        p.write_bytes(p.read_bytes()[:100])
    code, _, err = run(["train", "--data", corpus, "-o", run_dir, "--resume", "--steps", "5"],
                       capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and "Traceback" not in err
    assert lines[-1].startswith("sgmse: error:") and "no usable checkpoint" in lines[-1]

    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from polydiff.core.training import RunLock; "
         "lock = RunLock(sys.argv[1]).acquire(); print('locked', flush=True); sys.stdin.read()",
         str(run_dir)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, _, err = run(["train", "--data", corpus, "-o", run_dir, "--resume"], capsys)
        assert code == 2 and err.count("\n") == 1, err
        assert err.startswith("sgmse: error:") and f"in use by pid {holder.pid}" in err
    finally:
        holder.stdin.close()
        holder.wait(timeout=TIMEOUT)


def test_overwrite_starts_over_and_resume_overwrite_exclude(corpus: Path, trained: dict,
                                                           tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(trained["run"], run_dir)
    (run_dir / "notes.txt").write_text("mine")
    code, _, err = run(["train", "--data", corpus, "-o", run_dir, "--resume", "--overwrite"],
                       capsys)
    assert code == 2 and "exclude each other" in err
    code, out, err = run(["train", "--data", corpus, "-o", run_dir, *TINY, "--steps", "1",
                          "--overwrite", "--json"], capsys)
    assert code == 0, err
    assert "resumed" not in (run_dir / "log.txt").read_text()  # a fresh start
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("*.safetensors")) == [
        "ckpt-00000001.safetensors"]
    assert (run_dir / "notes.txt").read_text() == "mine"


def test_run_folder_follows_the_umask(corpus: Path, tmp_path: Path) -> None:
    """Weights, checkpoints, logs and folders of a run all get the user's umask permissions
    (they used to be written 0600 inside a 0700 folder)."""
    out = tmp_path / "run"
    proc = subprocess.run(_train_cmd(corpus, out, "--steps", "1"), env=ENV, timeout=TIMEOUT,
                          capture_output=True, text=True, preexec_fn=lambda: os.umask(0o027))
    assert proc.returncode == 0, proc.stderr[-2000:]
    paths = [out, *out.rglob("*")]
    modes = {p.relative_to(tmp_path).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in paths}
    assert any(k.endswith("model.safetensors") for k in modes)
    assert any(k.endswith(".pt") for k in modes) and any(k.endswith(".json") for k in modes)
    for name, mode in modes.items():
        want = 0o750 if (tmp_path / name).is_dir() else 0o640
        assert mode == want, f"{name}: {oct(mode)} != {oct(want)}"
