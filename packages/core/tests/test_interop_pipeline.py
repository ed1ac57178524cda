"""A whole diffusers pipeline with a :class:`PolydiffScheduler` survives save -> load: by
``DDPMPipeline.from_pretrained`` alone (diffusers resolves the scheduler class from the saved
``model_index.json``) and with the scheduler passed explicitly. Offline, tiny UNet2DModel."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from diffusers import DDPMPipeline, UNet2DModel  # noqa: E402

from polydiff.core.interop.diffusers import PolydiffScheduler  # noqa: E402


def _pipeline() -> DDPMPipeline:
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 8),
                       layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4)
    sched = PolydiffScheduler(solver="dpmpp_3m", grid="uniform", beta_end=0.015,
                              prediction_type="epsilon")
    return DDPMPipeline(unet=unet, scheduler=sched)


def _images(pipe: DDPMPipeline) -> np.ndarray:
    out = pipe(batch_size=2, num_inference_steps=4, generator=torch.Generator().manual_seed(3),
               output_type="np")
    return out.images


def test_pipeline_save_load_round_trip(tmp_path: Path) -> None:
    pipe = _pipeline()
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["scheduler"] == ["polydiff.core.interop.diffusers", "PolydiffScheduler"]

    loaded = DDPMPipeline.from_pretrained(tmp_path)  # resolved from model_index.json
    assert type(loaded.scheduler) is PolydiffScheduler
    def public(config: dict) -> dict:  # diffusers adds bookkeeping keys ("_...") on load
        return {k: v for k, v in config.items() if not k.startswith("_")}

    assert public(loaded.scheduler.config) == public(pipe.scheduler.config)
    expected = _images(pipe)
    np.testing.assert_array_equal(_images(loaded), expected)

    sched = PolydiffScheduler.from_pretrained(tmp_path, subfolder="scheduler")
    explicit = DDPMPipeline.from_pretrained(tmp_path, scheduler=sched)
    assert explicit.scheduler is sched
    np.testing.assert_array_equal(_images(explicit), expected)


@pytest.mark.slow  # a second interpreter importing diffusers: ~1 minute on a busy machine
def test_pipeline_loads_in_a_fresh_process(tmp_path: Path) -> None:
    """What a user does later: import polydiff's adapter, then load the saved pipeline."""
    _pipeline().save_pretrained(tmp_path)
    code = ("import sys, polydiff.core.interop.diffusers as m; from diffusers import "
            "DDPMPipeline; p = DDPMPipeline.from_pretrained(sys.argv[1]); "
            "print(type(p.scheduler).__name__, p.scheduler.config.solver)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["PolydiffScheduler", "dpmpp_3m"]
