"""The shipped starter weights (manifest, size, re-scored metrics) and the tour demo."""

from __future__ import annotations

import contextlib
import io
import math
from pathlib import Path

import pytest

from polydiff.apps.diffmatch import workflow as wf
from polydiff.apps.diffmatch.demo import DEMO, DemoSettings
from polydiff.core.cli import App


def test_starter_weights_are_shipped_with_a_manifest() -> None:
    pipe, d = wf.load_model()
    assert d == wf.STARTER_DIR
    m = wf.load_manifest(d)
    assert m["train_command"] == wf.TRAIN_COMMAND
    for key in ("commit", "device", "train_seconds", "heldout_metrics", "settings",
                "stage_seconds", "stage_steps"):
        assert m[key], key
    assert set(pipe.networks()) == {"features", "coarse", "sr", "regressor"}
    assert m["parameters"] == {k: sum(p.numel() for p in n.parameters())
                               for k, n in pipe.networks().items()}
    size = sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
    assert size < 8_000_000


def test_starter_weights_rescore_to_their_manifest() -> None:
    """Re-scored on the manifest's held-out pairs with the same seeds, the weights give the
    manifest's numbers, and DiffMatch refines the argmax it starts from."""
    pipe, d = wf.load_model()
    m = wf.load_manifest(d)
    got = wf.rescore(pipe, n_pairs=m["rescore_pairs"])
    want = m["heldout_metrics"]
    assert set(got) == set(want)
    for k in got:
        assert got[k] == pytest.approx(want[k], rel=0.02, abs=0.01), k
    assert got["diffmatch/aepe"] < got["argmax/aepe"]


def test_quick_demo_end_to_end(tmp_path: Path) -> None:
    assert isinstance(DEMO, App) and DEMO.name == "diffmatch"
    s = DemoSettings(pairs=2, corruptions=("clean",), middlebury=True, figure_rows=1)
    with contextlib.redirect_stdout(io.StringIO()) as out:
        report = DEMO.demo(tmp_path, settings=s)
    assert out.getvalue() == ""
    m = report.metrics
    numeric = {k: v for k, v in m.items() if not isinstance(v, str)}
    assert all(math.isfinite(v) for v in numeric.values())
    assert all(report.units.get(k) for k in numeric), [k for k in numeric
                                                       if not report.units.get(k)]
    assert m["warps/diffmatch/aepe"] > 0 and "middlebury/diffmatch/aepe" in m
    assert [p.name for p in report.figures] == ["warps.png", "middlebury.png"]
    assert all(p.is_file() and p.stat().st_size > 1000 for p in report.figures)
    assert "starter weights" in m["model"] and "AEPE" in report.text
