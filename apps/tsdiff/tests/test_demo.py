"""The tour demo: real offline data, the shipped starter weights (re-scored against their
manifest), on-the-spot training for other settings, finite metrics with units, figures."""

import dataclasses
import json
import math
from pathlib import Path

import pytest

pytest.importorskip("tsdata")

from polydiff.apps.tsdiff.demo import (  # noqa: E402
    DEMO,
    FULL,
    MODELS,
    QUICK,
    STARTER_DIR,
    UNITS,
    cache_root,
)
from polydiff.core.cli import DemoReport  # noqa: E402


def _manifest() -> dict:
    return json.loads((STARTER_DIR / "manifest.json").read_text())


def test_starter_weights_are_shipped_small_and_described():
    man = _manifest()
    assert {"command", "commit", "device", "torch"} <= set(man)
    assert set(man["models"]) == {f"quick/{n}" for n in QUICK.datasets} | \
        {f"full/{n}" for n in FULL.datasets}
    total = 0
    for entry in man["models"].values():
        folder = STARTER_DIR / entry["folder"]
        weights = folder / "model" / "model.safetensors"
        assert weights.is_file() and (folder / "tsdiff.json").is_file()
        total += weights.stat().st_size
        assert entry["train_seconds"] > 0 and set(entry["heldout"]) == set(MODELS)
    assert total < 8 * 2**20


def test_quick_demo_rescores_the_starter_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("POLYDIFF_CACHE", str(tmp_path / "cache"))
    rep = DEMO.demo(tmp_path / "out", quick=True)
    assert isinstance(rep, DemoReport) and DEMO.name == "tsdiff" and DEMO.summary
    assert rep.metrics["pedestrian/weights"] == "shipped starter weights"
    assert not cache_root().exists()  # nothing trained
    want = _manifest()["models"]["quick/pedestrian"]["heldout"]
    for key, model in MODELS.items():
        for metric, name in UNITS.items():
            got = rep.metrics[f"pedestrian/{model}/{name}"]
            assert math.isfinite(got)
            assert got == pytest.approx(want[key][metric], rel=0.02, abs=1e-3), (key, metric)
    for key, value in rep.metrics.items():  # every number carries its unit
        if not isinstance(value, str):
            assert key.endswith(")") and rep.units[key], key
    assert rep.figures and all(Path(f).is_file() for f in rep.figures)
    assert "CRPS" in rep.text and "seasonal naive" in rep.text


def test_other_settings_train_on_the_spot_and_are_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("POLYDIFF_CACHE", str(tmp_path / "cache"))
    tiny = dataclasses.replace(QUICK, steps=4, num_samples=4, sampling_steps=2, refine_steps=1)
    rep = DEMO.demo(tmp_path / "out", settings=tiny)
    assert rep.metrics["pedestrian/weights"] == "trained now"
    entries = list(cache_root().iterdir())
    assert len(entries) == 1 and (entries[0] / "model" / "model.safetensors").is_file()
    again = DEMO.demo(tmp_path / "out2", settings=tiny)
    assert again.metrics["pedestrian/weights"] == "cached training"
    assert again.metrics["pedestrian/TSDiff/" + UNITS["crps"]] == \
        rep.metrics["pedestrian/TSDiff/" + UNITS["crps"]]
