"""The shipped starter weights: every manifest entry exists, is small, names the command that
trains it, and re-scores on its held-out slice as the manifest says."""

from __future__ import annotations

import pytest

from polydiff.apps.diffusionnag import workflow as wf

MANIFEST = wf.manifest()
ENTRIES = MANIFEST.get("weights", {})


def test_manifest_lists_every_shipped_model():
    shipped = {p.name for p in wf.WEIGHTS.iterdir() if (p / "net").is_dir()}
    assert shipped and shipped == set(ENTRIES)
    total = sum(f.stat().st_size for f in wf.WEIGHTS.rglob("*") if f.is_file())
    assert total <= 8 * 2**20
    for name, e in ENTRIES.items():
        assert e["command"].startswith("diffusionnag train ") and f"-o {name}" in e["command"]
        assert e["commit"] and e["device"] and e["wall_seconds"] > 0
        assert e["metrics"]


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_rescore(name):
    """Re-computes every shipped model's held-out metrics (tools/ built the manifest with the
    same function)."""
    got = wf.rescore(name)
    want = ENTRIES[name]["metrics"]
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=0.03), key
