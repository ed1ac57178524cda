"""Test configuration for the lotus app: one intra-op thread (POLYDIFF_TEST_THREADS) and tiny
untrained model folders for the CLI tests."""

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(int(os.environ.get("POLYDIFF_TEST_THREADS", "1")))

TINY_NET = {"base_channels": 8, "channel_mults": (1, 2), "attention_levels": (1,)}


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A saved model folder per task with a small random network (fast; not trained)."""
    from polydiff.apps.lotus.workflow import save_model
    from polydiff.dense.lotus.model import LotusNet, LotusNetConfig
    from polydiff.dense.lotus.train import LotusSettings

    root = tmp_path_factory.mktemp("tiny")
    out = {}
    for task in ("depth", "normal"):
        s = LotusSettings(task=task, variant="d", net=LotusNetConfig(**TINY_NET), size=16)
        torch.manual_seed(0)
        net = LotusNet(s.predictor_config())
        torch.nn.init.normal_(net.unet.head.conv.weight, std=0.05)  # zero-initialised head
        out[task] = save_model(net, s, root / task)
    return out
