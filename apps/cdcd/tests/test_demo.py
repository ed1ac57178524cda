"""The tour demo in quick mode: starter weights, finite scores, figures, the registered app."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from polydiff.apps.cdcd.demo import DEMO, units
from polydiff.apps.cdcd.starter import starter_available
from polydiff.core.cli import DemoReport, discover_apps


def test_registered_for_the_tour() -> None:
    apps = discover_apps()
    assert "cdcd" in apps and apps["cdcd"].value.endswith("demo:DEMO")


@pytest.mark.skipif(not starter_available(), reason="starter weights not installed")
def test_demo_quick(tmp_path) -> None:
    rep = DEMO.demo(tmp_path / "out", quick=True)
    assert isinstance(rep, DemoReport) and DEMO.name == "cdcd" and DEMO.summary
    m = rep.metrics
    for key in ("cdcd/accuracy", "vanilla/accuracy", "ceiling/real_digit_accuracy",
                "cdcd/level_tv", "vanilla/level_tv"):
        assert math.isfinite(m[key]) and 0.0 <= m[key] <= 1.0, key
    assert m["cdcd/accuracy"] > 0.3  # far above chance (0.1)
    assert rep.figures and all(Path(f).is_file() for f in rep.figures)
    assert "CDCD" in rep.text and "vanilla" in rep.text
    numeric = {k for k, v in m.items() if not isinstance(v, str)}
    assert numeric == set(rep.units) and all(rep.units.values())


def test_units_reject_an_unknown_metric() -> None:
    assert units({"seconds": 1.0, "cdcd/accuracy": 0.5, "w": "abc"}) == {
        "seconds": "s", "cdcd/accuracy": "fraction"}
    with pytest.raises(KeyError):
        units({"mystery": 1.0})
