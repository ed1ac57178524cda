"""The shipped starter weights (manifest, size, re-scored metrics) and the tour demo."""

from __future__ import annotations

import contextlib
import io
import math
from pathlib import Path

import pytest

from polydiff.apps.lotus import workflow as wf
from polydiff.apps.lotus.demo import DEMO, DemoSettings
from polydiff.core.cli import App


def test_starter_weights_are_shipped_with_a_manifest() -> None:
    manifest = wf.load_manifest()
    assert manifest["commit"] and manifest["device"]
    for task in ("depth", "normal"):
        m = manifest["tasks"][task]
        assert m["train_command"].startswith(f"lotus train --task {task}")
        for key in ("cpu_seconds", "heldout", "rescore", "settings", "variant"):
            assert m[key], key
        model = wf.load_model(task)
        assert model.path == wf.STARTER_DIR / task and model.variant == m["settings"]["variant"]
    size = sum(f.stat().st_size for f in wf.STARTER_DIR.rglob("*") if f.is_file())
    assert size <= 8_000_000


@pytest.mark.parametrize("task", ["depth", "normal"])
def test_starter_weights_rescore_to_their_manifest_and_beat_the_trivial_baseline(
        task: str) -> None:
    """Re-scored on the manifest's held-out test scenes (and Middlebury for depth), the
    weights give the manifest's numbers, and beat the trivial baseline on the scenes."""
    model = wf.load_model(task)
    want = wf.load_manifest()["tasks"][task]["rescore"]
    got = wf.rescore(model)
    assert set(got) == set(want)
    for k in got:
        assert got[k] == pytest.approx(want[k], rel=0.02, abs=0.005), k
    if task == "depth":
        assert got["test/lotus/absrel"] < got["test/trivial/absrel"]
        assert got["test/lotus/delta1"] > got["test/trivial/delta1"]
    else:
        assert got["test/lotus/mean"] < got["test/trivial/mean"]
        assert got["test/lotus/a22"] > got["test/trivial/a22"]


def test_quick_demo_end_to_end(tmp_path: Path) -> None:
    assert isinstance(DEMO, App) and DEMO.name == "lotus"
    s = DemoSettings(scenes=2, figure_rows=1)
    with contextlib.redirect_stdout(io.StringIO()) as out:
        report = DEMO.demo(tmp_path, settings=s)
    assert out.getvalue() == ""
    m = report.metrics
    numeric = {k: v for k, v in m.items() if not isinstance(v, str)}
    assert all(math.isfinite(v) for v in numeric.values())
    assert all(report.units.get(k) for k in numeric), [k for k in numeric
                                                       if not report.units.get(k)]
    assert report.units["normal/test/lotus/mean"] == "deg"
    assert "depth/middlebury/lotus/absrel" in m and "normal/test/facing/mean" in m
    assert [p.name for p in report.figures] == ["depth.png", "normals.png", "middlebury.png"]
    assert all(p.is_file() and p.stat().st_size > 500 for p in report.figures)
    assert "starter weights" in m["model"] and "AbsRel" in report.text
