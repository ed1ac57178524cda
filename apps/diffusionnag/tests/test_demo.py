"""The tour demo in quick mode: starter weights, real offline table, numbers next to the
random baseline, a figure of generated cells."""

from __future__ import annotations

import math
from pathlib import Path

from polydiff.apps.diffusionnag.demo import DEMO, expected_best_of_random
from polydiff.core.cli import DemoReport


def test_expected_best_of_random_is_exact():
    """Against brute force over all subsets of a small set."""
    import itertools

    vals = [0.1, 0.5, 0.2, 0.9, 0.4, 0.7]
    for k in (1, 2, 3, 6):
        subsets = list(itertools.combinations(vals, k))
        brute = sum(max(s) for s in subsets) / len(subsets)
        assert math.isclose(expected_best_of_random(vals, k), brute, rel_tol=1e-12)


def test_demo_quick(tmp_path):
    rep = DEMO.demo(tmp_path / "out", quick=True)
    assert isinstance(rep, DemoReport) and DEMO.name == "diffusionnag" and DEMO.summary
    m = rep.metrics
    assert m["dataset"] == "photo"
    assert 50 < m["guided/best_test_of_first_10_%"] <= 100
    assert 50 < m["random/expected_best_test_of_10_%"] <= 100
    assert m["guided/validity_%"] > 80
    assert rep.figures and all(Path(f).is_file() for f in rep.figures)
    assert "best of 10 random" in rep.text
    numeric = [k for k, v in m.items() if not isinstance(v, str)]
    assert numeric and all(rep.units.get(k) for k in numeric), \
        [k for k in numeric if not rep.units.get(k)]
