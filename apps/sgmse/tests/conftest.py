"""Test configuration for the ``sgmse`` app: one intra-op thread (small CI machines; set
POLYDIFF_TEST_THREADS to change it), and one tiny corpus and trained model shared by the
whole test folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(int(os.environ.get("POLYDIFF_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic denoising corpus: 4 training and 2 test pairs of under a second."""
    from polydiff.speech.corpus import CorpusSpec, build_corpus

    root = tmp_path_factory.mktemp("sgmse-data") / "corpus"
    build_corpus(root, CorpusSpec(n_train=4, n_valid=0, n_test=2, seconds=(0.6, 0.9)),
                 show_progress=False)
    return root


@pytest.fixture(scope="session")
def trained(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``sgmse train`` for 3 steps of the tiny preset; returns its JSON result."""
    from polydiff.apps.sgmse.main import main

    run = tmp_path_factory.mktemp("sgmse-run") / "run"
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["train", "--data", str(corpus), "-o", str(run), "--preset", "tiny",
                     "--steps", "3", "--batch-size", "2", "--segment-frames", "16",
                     "--device", "cpu", "--json", "--set", "log_every=1", "ckpt_every=2"])
    assert code == 0
    result = json.loads(buf.getvalue())
    result["run"] = run
    return result
