"""Test configuration for the diffmatch app: one intra-op thread (POLYDIFF_TEST_THREADS) and
a tiny untrained model folder for the CLI tests."""

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(int(os.environ.get("POLYDIFF_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved pipeline with small random networks (fast; not a trained model)."""
    from polydiff.dense.diffmatch import (
        DiffMatch,
        DiffMatchConfig,
        FeatureNet,
        FeatureNetConfig,
        FlowDenoiserNet,
        FlowNetConfig,
    )

    torch.manual_seed(0)
    cfg = DiffMatchConfig(radius=1, sr_radius=1, hypotheses=2, max_side=64)
    pipe = DiffMatch(cfg, FeatureNet(FeatureNetConfig(widths=(8, 8, 8), dim=8, fine_dim=4)),
                     FlowDenoiserNet(FlowNetConfig(cost_channels=9, base_channels=8)),
                     FlowDenoiserNet(FlowNetConfig(cost_channels=9, feat_channels=4,
                                                   base_channels=8)),
                     FlowDenoiserNet(FlowNetConfig(cost_channels=9, base_channels=8)))
    out = tmp_path_factory.mktemp("tiny") / "model"
    pipe.save(out)
    return out
