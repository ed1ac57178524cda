"""The starter weights shipped with sgmse: their manifest, a re-score on a held-out slice
against the manifest's numbers, and their use when no --model is given."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from polydiff.apps.sgmse.main import main
from polydiff.apps.sgmse.starter import (
    STARTER_DIR,
    check_slice,
    load_starter,
    read_manifest,
    score,
)

TOL = {"pesq": 0.03, "estoi": 0.01, "si_sdr": 0.2}


@pytest.fixture(scope="module")
def manifest() -> dict:
    return read_manifest()


def test_weights_and_manifest(manifest: dict) -> None:
    sizes = {n: (STARTER_DIR / n / "model.safetensors").stat().st_size
             for n in ("sgmse", "predictive")}
    assert sum(sizes.values()) <= 8 * 2**20 and manifest["weights_bytes"] == sizes
    assert manifest["format"] == "polydiff-sgmse-starter" and manifest["dtype"] == "bfloat16"
    assert manifest["sample_rate"] == 8000 and manifest["commit"]
    for name in ("sgmse", "predictive"):
        t = manifest["training"][name]
        assert t["command"].startswith("sgmse train ") and t["steps"] > 0
        assert t["wall_seconds"] > 0 and t["device"]
    held = manifest["heldout"]
    assert held["files"] > 0 and {"noisy", "predictive"} <= set(held["results"])
    assert manifest["enhance"]["sampler"] in ("storm", "pc")


def _check(measured: dict, recorded: dict) -> None:
    for method, vals in recorded.items():
        for m, v in vals.items():
            assert abs(measured[method][m] - v) <= TOL[m], (method, m, measured[method][m], v)


def test_rescore_formant_slice_matches_manifest(manifest: dict) -> None:
    """Re-score the formant check slice (built here, offline) and compare with the numbers
    recorded when the weights were exported; the models must beat the noisy input."""
    sg, pr = load_starter()
    got = score(sg, pr, check_slice("formant"), manifest["enhance"])
    _check(got, manifest["check_slices"]["formant"]["scores"])
    for method in ("predictive", "sgmse"):
        assert got[method]["si_sdr"] > got["noisy"]["si_sdr"] + 3, got


def test_rescore_real_slice_matches_manifest(manifest: dict) -> None:
    """The same on held-out real speech (the ru_RU test speaker), where its Debian package is
    already in the cache (tests never download)."""
    if "real" not in manifest["check_slices"]:
        pytest.skip("the manifest has no real-speech check slice")
    try:
        items = check_slice("real")
    except FileNotFoundError as err:
        pytest.skip(str(err))
    sg, pr = load_starter()
    got = score(sg, pr, items, manifest["enhance"])
    _check(got, manifest["check_slices"]["real"]["scores"])
    for m in ("pesq", "estoi", "si_sdr"):
        assert got["sgmse"][m] > got["noisy"][m], (m, got)


def test_enhance_uses_the_starter_weights_by_default(tmp_path: Path, capsys) -> None:
    items = check_slice("formant", n=1, snrs=(5.0,))
    src = tmp_path / "noisy.wav"
    sf.write(src, items[0]["noisy"], 8000)
    code = main(["enhance", str(src), "-o", str(tmp_path / "out.wav"), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out)
    assert result["weights"] == "starter weights" and result["written"] == 1
    assert result["sampler"] == read_manifest()["enhance"]["sampler"]
    y, sr = sf.read(tmp_path / "out.wav")
    assert sr == 8000 and y.shape == items[0]["noisy"].shape and np.isfinite(y).all()
    assert math.isfinite(result["rtf"])
