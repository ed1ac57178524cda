"""Tests of polydiff.core.utils.hold_dir: one holder at a time, across processes, released on
exit and when the holder dies."""

from __future__ import annotations

import subprocess
import sys

import pytest

from polydiff.core.utils import DirectoryBusyError, hold_dir

_HOLD = """
import sys, time
from polydiff.core.utils import hold_dir
with hold_dir(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def test_second_holder_is_refused_and_release_frees(tmp_path) -> None:
    run = tmp_path / "run"
    with hold_dir(run) as p:
        assert p == run and (run / ".lock").is_file()
        with pytest.raises(DirectoryBusyError, match="in use by another process"):
            with hold_dir(run):
                pass
    with hold_dir(run):  # released
        pass


def test_other_process_holds_until_it_dies(tmp_path) -> None:
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(run)], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(DirectoryBusyError):
            with hold_dir(run):
                pass
    finally:
        proc.kill()
        proc.wait(timeout=30)
    with hold_dir(run):  # the kernel dropped the dead holder's lock
        pass
