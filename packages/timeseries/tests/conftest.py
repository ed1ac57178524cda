"""Test configuration for polydiff-timeseries.

Unit tests work on small tensors: one intra-op thread avoids oversubscription on small CI
machines (set POLYDIFF_TEST_THREADS to change it).
"""

import os

import torch

torch.set_num_threads(int(os.environ.get("POLYDIFF_TEST_THREADS", "1")))
