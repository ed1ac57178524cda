"""The run-folder lock: exclusive across processes, released on exit and on crash."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from polydiff.core.runlock import LOCK_NAME, RunLockedError, run_lock


def test_lock_is_exclusive_and_released(tmp_path):
    run = tmp_path / "run"
    with run_lock(run) as d:
        assert d == run and (run / LOCK_NAME).is_file()
        with pytest.raises(RunLockedError, match="in use by another process"):
            with run_lock(run):
                pass
    with run_lock(run):  # free again
        pass


def test_lock_held_by_another_process_and_dropped_when_it_dies(tmp_path):
    run = tmp_path / "run"
    code = textwrap.dedent(f"""
        import sys, time
        from polydiff.core.runlock import run_lock
        with run_lock({str(run)!r}):
            print("held", flush=True)
            sys.stdin.readline()
            import os
            os._exit(1)  # die while holding it
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=f"pid {proc.pid}"):
            with run_lock(run):
                pass
        proc.stdin.write("\n")
        proc.stdin.flush()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    with run_lock(run):  # the crashed holder left no stale lock
        pass
