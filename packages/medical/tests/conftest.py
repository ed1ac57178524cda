"""Test configuration for polydiff-medical: one intra-op thread (POLYDIFF_TEST_THREADS) and a
tiny untrained prior for the mechanics of the solvers."""

import os

import pytest
import torch

torch.set_num_threads(int(os.environ.get("POLYDIFF_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def tiny_prior():
    from polydiff.core.nn.unet import UNet
    from polydiff.core.training import seeded
    from polydiff.medical.prior import DiffusionPrior, PriorConfig

    cfg = PriorConfig(size=32, base_channels=8, channel_mults=(1, 2), num_heads=2)
    with seeded(0):
        net = UNet(cfg.unet())
    return DiffusionPrior(net, cfg).eval()
