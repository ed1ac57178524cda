"""The tour demo in quick mode: real offline data, a tiny model, finite metrics, figures."""

import math
from pathlib import Path

import pytest

pytest.importorskip("tsdata")

from polydiff.apps.tsdiff.demo import DEMO, MODELS, UNITS, cache_root  # noqa: E402
from polydiff.core.cli import DemoReport  # noqa: E402


def test_demo_quick(tmp_path, monkeypatch):
    monkeypatch.setenv("POLYDIFF_CACHE", str(tmp_path / "cache"))
    rep = DEMO.demo(tmp_path / "out", quick=True)
    assert isinstance(rep, DemoReport) and DEMO.name == "tsdiff" and DEMO.summary
    for model in MODELS.values():
        for metric in UNITS.values():
            assert math.isfinite(rep.metrics[f"pedestrian/{model}/{metric}"])
    assert rep.metrics["pedestrian/training cached (yes/no)"] == "no"
    # every number carries its unit in its name
    for key in rep.metrics:
        assert key == "device" or key.endswith(")"), key
    assert rep.figures and all(Path(f).is_file() for f in rep.figures)
    assert "CRPS" in rep.text and "seasonal naive" in rep.text
    entries = list(cache_root().iterdir())
    assert len(entries) == 1 and (entries[0] / "model" / "model.safetensors").is_file()
