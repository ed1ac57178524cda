# ruff: noqa: NPY002  (the legacy global numpy generator is what seeded() must restore)
"""Runs that never lie: seeded model construction, checkpoint verification with fallback,
the run-folder lock, start_run (resume / overwrite) and the bare-network export."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from polydiff.core import ModelDenoiser, VPCosine
from polydiff.core.losses import DiffusionLoss
from polydiff.core.nn import UNet, UNetConfig
from polydiff.core.training import (
    CheckpointError,
    RunLock,
    RunLockedError,
    TrainConfig,
    Trainer,
    build_seeded,
    export_network,
    find_checkpoint,
    load_checkpoint,
    network_state_dict,
    seeded,
    start_run,
    verify_checkpoint,
)

TIMEOUT = 120  # seconds for every helper process


def _unet() -> ModelDenoiser:
    return ModelDenoiser(UNet(UNetConfig.tiny(dims=2)), VPCosine())


def _data() -> torch.Tensor:
    return torch.randn(32, 2, 8, 8, generator=torch.Generator().manual_seed(3))


def _config(run: Path, **kw: object) -> TrainConfig:
    base = dict(steps=4, batch_size=4, lr=1e-3, ema_decay=0.9, ckpt_every=2, keep_last=5,
                log_every=1, run_dir=str(run), device="cpu", seed=11, progress=False)
    return TrainConfig(**{**base, **kw})  # type: ignore[arg-type]


def _trainer(run: Path, **kw: object) -> Trainer:
    return Trainer(_unet, DiffusionLoss(VPCosine()), _data(), _config(run, **kw))


def _state(t: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in t.model.state_dict().items()}


# ----------------------------------------------------------------------------- seeding
def test_seeded_is_reproducible_and_restores_the_global_generators() -> None:
    torch.manual_seed(123)
    random.seed(5)
    np.random.seed(6)
    before = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(123)
    random.seed(5)
    np.random.seed(6)
    with seeded(7):
        a = (torch.rand(2), random.random(), np.random.rand())
    after = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(before[0], after[0]) and before[1:] == after[1:]  # streams untouched
    torch.rand(100)  # whatever ran before does not matter
    with seeded(7):
        b = (torch.rand(2), random.random(), np.random.rand())
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]
    with seeded(8):
        assert not torch.equal(torch.rand(2), a[0])


def test_trainer_builds_a_model_factory_from_the_seed(tmp_path: Path) -> None:
    """Same seed, same initial weights whatever the global RNG did before; another seed
    other weights. (A model built before the trainer, unseeded, differs run to run.)"""
    torch.manual_seed(1)
    a = _state(_trainer(tmp_path / "a"))
    torch.rand(1000)
    b = _state(_trainer(tmp_path / "b"))
    c = _state(_trainer(tmp_path / "c", seed=12))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    d = build_seeded(_unet, 11).state_dict()  # the trainer's construction, by hand
    assert all(torch.equal(a[k], d[k]) for k in a)
    with pytest.raises(TypeError, match="factory returned"):
        Trainer(lambda: 3, DiffusionLoss(VPCosine()), _data(), _config(tmp_path / "e"))


# ----------------------------------------------------------------------------- checkpoints
def _ckpt(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"ckpt-{step:08d}.safetensors"


def test_manifest_detects_truncation_and_bit_flips(tmp_path: Path) -> None:
    t = _trainer(tmp_path / "run")
    t.fit()
    path = _ckpt(tmp_path / "run", 4)
    manifest = json.loads(path.with_suffix(".json").read_text())
    assert manifest["files"][path.name]["size"] == path.stat().st_size
    assert verify_checkpoint(path) is None
    data = bytearray(path.with_suffix(".pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.with_suffix(".pt").write_bytes(bytes(data))
    assert "does not match its recorded SHA-256" in verify_checkpoint(path)
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(path)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 100])
    assert "bytes" in verify_checkpoint(path) and "recorded" in verify_checkpoint(path)


def test_checkpoint_without_manifest_gets_a_structural_check(tmp_path: Path) -> None:
    _trainer(tmp_path / "run").fit()
    path = _ckpt(tmp_path / "run", 4)
    path.with_suffix(".json").unlink()  # as written before manifests existed
    assert verify_checkpoint(path) is None
    raw = path.read_bytes()
    path.write_bytes(raw[:-7])
    assert "header describes" in verify_checkpoint(path)
    path.write_bytes(raw)
    pt = path.with_suffix(".pt")
    data = pt.read_bytes()
    pt.write_bytes(data[: len(data) // 2])
    assert "not a readable archive" in verify_checkpoint(path)


def test_truncated_latest_falls_back_with_one_warning(tmp_path: Path, capfd) -> None:
    """A truncated latest checkpoint: resume from the previous one (one warning line) and
    end bit-identical to an uninterrupted run."""
    ref = _trainer(tmp_path / "ref")
    ref.fit()
    run = tmp_path / "run"
    _trainer(run, steps=3).fit()  # checkpoints 2 and 3
    latest = _ckpt(run, 3)
    latest.write_bytes(latest.read_bytes()[:1000])
    found, problems = find_checkpoint(run / "checkpoints")
    assert found == _ckpt(run, 2) and len(problems) == 1 and "ckpt-00000003" in problems[0]
    capfd.readouterr()
    resumed = _trainer(run)
    resumed.fit()
    err = capfd.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, err
    assert "ckpt-00000003" in warnings[0] and "resuming from ckpt-00000002" in warnings[0]
    assert "Traceback" not in err
    a, b = _state(ref), _state(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert verify_checkpoint(_ckpt(run, 4)) is None


def test_no_intact_checkpoint_is_one_error(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _trainer(run).fit()
    for step in (2, 4):
        p = _ckpt(run, step)
        p.write_bytes(p.read_bytes()[:50])
    with pytest.raises(CheckpointError) as info:
        _trainer(run).fit()
    msg = str(info.value)
    assert "\n" not in msg and "no usable checkpoint" in msg
    assert "ckpt-00000004" in msg and "ckpt-00000002" in msg
    assert isinstance(info.value, ValueError)  # apps: one line, exit code 2


# ----------------------------------------------------------------------------- lock
_HOLDER = textwrap.dedent("""
    import sys, time
    from polydiff.core.training.lock import RunLock
    lock = RunLock(sys.argv[1]).acquire()
    print("locked", flush=True)
    sys.stdin.read()  # hold until the test closes our stdin (or kills us)
    lock.release()
    print("released", flush=True)
""")


def _holder(run: Path) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", _HOLDER, str(run)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "locked"
    return p


def test_second_training_into_a_locked_folder_fails_at_once(tmp_path: Path) -> None:
    run = tmp_path / "run"
    holder = _holder(run)
    try:
        with pytest.raises(RunLockedError) as info:
            _trainer(run)
        msg = str(info.value)
        assert "\n" not in msg and f"pid {holder.pid}" in msg and socket.gethostname() in msg
        assert not (run / "stats.jsonl").exists() and not (run / "checkpoints").exists()
    finally:
        holder.stdin.close()
        holder.wait(timeout=TIMEOUT)
    assert not (run / ".lock").exists()  # released and removed by its owner
    _trainer(run).fit()  # now free


def test_lock_of_a_killed_process_is_taken_over_with_a_warning(tmp_path: Path) -> None:
    run = tmp_path / "run"
    holder = _holder(run)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=TIMEOUT)
    assert json.loads((run / ".lock").read_text())["pid"] == holder.pid  # left behind
    warned: list[str] = []
    with RunLock(run, warn=warned.append) as lock:
        assert lock.held
        assert json.loads((run / ".lock").read_text())["pid"] == os.getpid()
    assert len(warned) == 1 and f"stale lock of pid {holder.pid}" in warned[0]
    assert not (run / ".lock").exists()


def test_stale_lock_file_of_a_dead_pid_and_foreign_locks(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, timeout=TIMEOUT)
    pid = int(dead.stdout)
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").write_text(json.dumps({"pid": pid, "host": socket.gethostname()}))
    warned: list[str] = []
    with RunLock(run, warn=warned.append):
        pass
    assert len(warned) == 1 and "not running" in warned[0]
    (run / ".lock").write_text(json.dumps({"pid": 1, "host": "elsewhere.example"}))
    with pytest.raises(RunLockedError, match=r"host elsewhere\.example.*delete .*\.lock"):
        RunLock(run).acquire()


def test_lock_nests_within_one_process(tmp_path: Path) -> None:
    run = tmp_path / "run"
    outer = RunLock(run).acquire()
    t = _trainer(run)  # the trainer takes the lock its app already holds
    t.fit()
    assert (run / ".lock").exists()  # still held by the outer owner
    outer.release()
    assert not (run / ".lock").exists()


# ----------------------------------------------------------------------------- start_run
def test_start_run_refuses_resumes_and_overwrites(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with start_run(run, settings_name="app.toml", outputs=("model",)) as r:
        assert not r.resume and r.saved_settings is None and (run / ".lock").exists()
        _trainer(run).fit()
        (run / "app.toml").write_text("x = 1\n")
        (run / "model").mkdir()
    assert not (run / ".lock").exists()
    (run / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty.*--resume.*--overwrite"):
        with start_run(run):
            pass
    with pytest.raises(ValueError, match="exclude each other"):
        with start_run(run, resume=True, overwrite=True):
            pass
    with start_run(run, resume=True, settings_name="app.toml") as r:
        assert r.resume and r.saved_settings == run / "app.toml"
    with start_run(run, overwrite=True, settings_name="app.toml", outputs=("model",)):
        pass
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]  # only the user's file
    (run / "notes.txt").unlink()
    with start_run(run):  # empty: a fresh start
        pass


def test_start_run_removes_a_folder_it_created_when_nothing_was_written(tmp_path: Path) -> None:
    run = tmp_path / "new"
    with pytest.raises(RuntimeError):
        with start_run(run):
            raise RuntimeError("bad input found later")
    assert not run.exists()
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="not a folder"):
        with start_run(tmp_path / "file"):
            pass


# ----------------------------------------------------------------------------- export
def test_export_network_from_a_run_folder(tmp_path: Path) -> None:
    run = tmp_path / "run"
    t = _trainer(run)
    t.fit()
    ema = {k: v.detach().clone() for k, v in t.ema.state_dict().items()}
    bare = network_state_dict(run)  # EMA by default, "model." stripped
    assert set(bare) == {k[len("model."):] for k in ema if k.startswith("model.")}
    assert all(torch.equal(bare[k], ema["model." + k]) for k in bare)
    out = export_network(run, tmp_path / "unet")
    net = UNet.from_pretrained(out)
    assert net.config == t.model.model.config
    state = net.state_dict()
    assert all(torch.equal(state[k], bare[k]) for k in state)
    raw = network_state_dict(run / "checkpoints", "model")
    live = t.model.model.state_dict()
    assert all(torch.equal(raw[k], live[k]) for k in live)
    no_ema = tmp_path / "no-ema"
    Trainer(_unet, DiffusionLoss(VPCosine()), _data(), _config(no_ema, ema_decay=None)).fit()
    with pytest.raises(ValueError, match="which='model'"):
        network_state_dict(no_ema)


def test_lock_on_a_filesystem_without_flock(tmp_path: Path, monkeypatch) -> None:
    """Where flock fails (some network filesystems) the recorded pid alone decides."""
    import errno

    from polydiff.core.training import lock as lock_mod

    def no_flock(fd: int, op: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(lock_mod.fcntl, "flock", no_flock)
    run = tmp_path / "run"
    with RunLock(run):
        assert json.loads((run / ".lock").read_text())["pid"] == os.getpid()
    assert not (run / ".lock").exists()
    live = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                            stdin=subprocess.PIPE)
    try:
        (run / ".lock").write_text(json.dumps({"pid": live.pid, "host": socket.gethostname()}))
        with pytest.raises(RunLockedError, match=f"pid {live.pid}"):
            RunLock(run).acquire()
    finally:
        live.stdin.close()
        live.wait(timeout=TIMEOUT)
    warned: list[str] = []
    with RunLock(run, warn=warned.append):  # its process has ended: stale
        pass
    assert len(warned) == 1 and "not running" in warned[0]
