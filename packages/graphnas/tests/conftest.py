"""Test configuration for polydiff-graphnas: one intra-op thread (small tensors; avoids
oversubscription on small CI machines; POLYDIFF_TEST_THREADS changes it)."""

import os

import torch

torch.set_num_threads(int(os.environ.get("POLYDIFF_TEST_THREADS", "1")))
