"""Test configuration for polydiff-gpu.

Unit tests work on small tensors: one intra-op thread avoids oversubscription on small CI
machines (set POLYDIFF_TEST_THREADS to change it). Tests that need CUDA live in
``test_cuda.py``; ``tools/gpu_check.sh`` runs them with ``POLYDIFF_REQUIRE_CUDA=1`` so a
machine without CUDA fails them instead of skipping.
"""

import os

import torch

torch.set_num_threads(int(os.environ.get("POLYDIFF_TEST_THREADS", "1")))
