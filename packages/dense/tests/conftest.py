"""Test configuration for polydiff-dense: one intra-op thread (POLYDIFF_TEST_THREADS)."""

import os

import torch

torch.set_num_threads(int(os.environ.get("POLYDIFF_TEST_THREADS", "1")))
