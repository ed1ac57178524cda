"""The prior trains through core's Trainer (seeded, resumable to the same weights), saves and
loads, and its held-out score is deterministic."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from polydiff.medical.data import TEST_SLICES, template_slices
from polydiff.medical.prior import (
    DiffusionPrior,
    PriorConfig,
    PriorTrainSettings,
    held_out_loss,
    train_prior,
)

TINY = PriorConfig(size=32, base_channels=8, channel_mults=(1, 2), num_heads=2)


def _settings(steps: int) -> PriorTrainSettings:
    return PriorTrainSettings(steps=steps, batch_size=4, ckpt_every=2, log_every=1,
                              device="cpu", prior=TINY)


def test_train_resume_and_reload(tmp_path: Path) -> None:
    data = template_slices(range(40, 48), 32)
    full = train_prior(tmp_path / "a", _settings(4), progress=False, data=data)
    train_prior(tmp_path / "b", _settings(2), progress=False, data=data)
    resumed = train_prior(tmp_path / "b", _settings(4), resume=True, progress=False, data=data)
    for (k, v), (k2, v2) in zip(full.net.state_dict().items(), resumed.net.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k
    back = DiffusionPrior.from_pretrained(tmp_path / "a")
    x = template_slices(TEST_SLICES[:2], 32)
    assert held_out_loss(back, x) == held_out_loss(full, x)
    assert held_out_loss(back, x, seed=1) != held_out_loss(back, x)
    with pytest.raises(ValueError, match="training data"):
        train_prior(tmp_path / "c", _settings(1), progress=False, data=torch.zeros(2, 1, 8, 8))
    with pytest.raises(FileNotFoundError):
        DiffusionPrior.from_pretrained(tmp_path / "missing")


def test_config_checks() -> None:
    with pytest.raises(ValueError, match="divisible"):
        PriorConfig(size=30, channel_mults=(1, 2, 2))
