"""The tour demo in quick mode: starter weights, finite scores, figures, the registered app."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from polydiff.apps.unidiffuser.demo import DEMO
from polydiff.apps.unidiffuser.starter import starter_available
from polydiff.core.cli import DemoReport, discover_apps


def test_registered_for_the_tour() -> None:
    apps = discover_apps()
    assert "unidiffuser" in apps and apps["unidiffuser"].value.endswith("demo:DEMO")


@pytest.mark.skipif(not starter_available(), reason="starter weights not installed")
def test_demo_quick(tmp_path) -> None:
    rep = DEMO.demo(tmp_path / "out", quick=True)
    assert isinstance(rep, DemoReport) and DEMO.name == "unidiffuser" and DEMO.summary
    m = rep.metrics
    for key in ("t2i/joint/digit_accuracy", "t2i/t2i/digit_accuracy",
                "i2t/joint/caption_accuracy", "i2t/i2t/caption_accuracy",
                "unidiffuser/joint/label_consistency", "unidiffuser/marginal/image_tv",
                "ceiling/classifier_accuracy_on_real_digits", "chain/i2t2i_digit_kept"):
        assert math.isfinite(m[key]) and 0.0 <= m[key] <= 1.0, key
    assert m["t2i/joint/digit_accuracy"] > 0.3  # far above chance
    assert rep.figures and all(Path(f).is_file() for f in rep.figures)
    assert "UniDiffuser" in rep.text and "dedicated" in rep.text
    numeric = {k for k, v in m.items() if not isinstance(v, str)}
    assert numeric == set(rep.units) and all(rep.units.values())  # every number has a unit


def test_units_reject_an_unknown_metric() -> None:
    from polydiff.apps.unidiffuser.demo import units

    assert units({"seconds": 1.0, "ratio/x": 0.9, "starter_weights": "abc"}) == {
        "seconds": "s", "ratio/x": "ratio"}
    with pytest.raises(KeyError):
        units({"mystery": 1.0})
