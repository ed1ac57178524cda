"""The starter weights: the manifest is complete and small, and the models re-score on the
held-out test digits as the manifest says."""

from __future__ import annotations

import numpy as np
import pytest

from polydiff.apps.cdcd.starter import (
    MODELS,
    WEIGHTS_DIR,
    manifest,
    starter_available,
    starter_model,
)

pytestmark = pytest.mark.skipif(not starter_available(), reason="starter weights not installed")


def test_manifest_and_size() -> None:
    man = manifest()
    for key in ("train_commands", "commit", "device", "wall_seconds", "held_out_metrics"):
        assert key in man, key
    for name in MODELS:
        assert man["train_commands"][name].startswith("cdcd train --task digits ")
    assert "--variant sample" in man["train_commands"]["cdcd"]
    assert "--variant vanilla" in man["train_commands"]["vanilla"]
    size = sum(p.stat().st_size for p in WEIGHTS_DIR.rglob("*") if p.is_file())
    assert size <= 8 * 2**20


def test_rescore_on_held_out_digits() -> None:
    """The first manifest seed on all test digits reproduces the manifest's accuracy for
    that seed exactly (same weights, same seed: deterministic on CPU, up to tiny float
    differences in the classifier boundary)."""
    from polydiff.multimodal.cdcd import DigitJudge, load_digit_tokens, score_digits

    man = manifest()
    model = starter_model("cdcd")
    splits = load_digit_tokens(levels=model.config.num_tokens)
    judge = DigitJudge.fit(splits.train, model.config.num_tokens)
    sc = score_digits(model, splits.test, judge, steps=int(man["sampling_steps"]),
                      seed=int(man["score_seeds"][0]))
    held = man["held_out_metrics"]["cdcd"]
    assert sc["accuracy"] == pytest.approx(held["accuracy_per_seed"][0], abs=0.02)
    assert sc["accuracy"] > 0.3 and np.isfinite(sc["nn_distance"])
