"""The starter prior shipped with the app: small enough, described by its manifest, and the
manifest's held-out score is re-measured here; the manifest's train command is one the app's
``train-prior`` accepts with exactly the recorded settings."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from polydiff.apps.medical.commands import load_prior, starter_dir
from polydiff.apps.medical.main import build_parser
from polydiff.medical.data import TEST_SLICES, template_slices
from polydiff.medical.prior import PriorConfig, held_out_loss


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads((starter_dir() / "manifest.json").read_text())


def test_weights_are_small_and_described(manifest: dict) -> None:
    weights = starter_dir() / "model" / "model.safetensors"
    assert weights.stat().st_size <= 8 * 2**20
    for key in ("train_command", "commit", "device", "wall_seconds", "steps", "held_out"):
        assert key in manifest, key
    assert PriorConfig(**json.loads((starter_dir() / "prior.json").read_text())) == \
        PriorConfig(**manifest["prior"])


def test_held_out_score_is_reproduced(manifest: dict) -> None:
    prior = load_prior(None)
    x = template_slices(TEST_SLICES[:2], prior.size)
    score = held_out_loss(prior, x, n_times=8)
    assert score == pytest.approx(manifest["held_out"]["test_v_mse_2_slices"], rel=1e-4)
    # a trained prior denoises held-out anatomy far better than an untrained network
    assert score < 0.5 * manifest["held_out"]["untrained_v_mse_2_slices"]


def test_train_command_matches_the_recorded_settings(manifest: dict) -> None:
    argv = shlex.split(manifest["train_command"])
    assert argv[0] == "polydiff-med" and argv[1] == "train-prior"
    args = build_parser().parse_args(argv[1:])
    assert args.steps == manifest["steps"]
    assert args.batch_size == manifest["batch_size"] and args.seed == manifest["seed"]
    assert Path(args.output).name  # a run folder
