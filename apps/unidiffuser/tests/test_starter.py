"""The starter weights: the manifest is complete, the models re-score on held-out digits as
the manifest says, and the trained UniDiffuser's marginal modes ignore the other modality."""

from __future__ import annotations

import pytest
import torch

from polydiff.apps.unidiffuser.starter import (
    WEIGHTS_DIR,
    manifest,
    starter_available,
    starter_model,
)

pytestmark = pytest.mark.skipif(not starter_available(), reason="starter weights not installed")


def test_manifest_and_size() -> None:
    man = manifest()
    for key in ("train_commands", "commit", "device", "wall_seconds", "held_out_metrics",
                "guidance"):
        assert key in man, key
    for task in ("joint", "t2i", "i2t"):
        assert man["train_commands"][task].startswith("unidiffuser train ")
        assert f"--task {task}" in man["train_commands"][task]
    size = sum(p.stat().st_size for p in WEIGHTS_DIR.rglob("*") if p.is_file())
    assert size <= 8 * 2**20  # <= 8 MB of package data
    m = starter_model("t2i")
    assert m.config.task == "t2i" and next(m.network.parameters()).dtype == torch.float32


@pytest.fixture(scope="module")
def judged():
    from polydiff.multimodal.data import DigitAttributes, load_captioned_digits
    from polydiff.multimodal.unidiffuser.metrics import DigitJudge

    model = starter_model("joint")
    splits = load_captioned_digits(seed=int(model.meta["split_seed"]))
    judge = DigitJudge.fit(splits.train.images, splits.train.labels,
                           DigitAttributes.from_dict(model.meta["attributes"]))
    return model, splits, judge


def test_rescore_on_held_out_digits(judged) -> None:
    """Seed 100 on the 360 test digits is the first seed the manifest averages; the float16
    storage may move a score a little."""
    from polydiff.multimodal.unidiffuser.evaluation import score_i2t, score_t2i

    model, splits, judge = judged
    man = manifest()
    held = man["held_out_metrics"]
    steps = int(man.get("sampling_steps", 20))
    t2i = score_t2i(model, splits.test, judge, guidance=man["guidance"]["t2i/joint"],
                    steps=steps, seed=100)
    i2t = score_i2t(model, splits.test, judge, guidance=man["guidance"]["i2t/joint"],
                    steps=steps, seed=100)
    assert t2i["label_acc"] == pytest.approx(held["t2i_digit_accuracy"]["joint"], abs=0.05)
    assert i2t["strict_acc"] == pytest.approx(held["i2t_caption_accuracy"]["joint"], abs=0.05)
    assert t2i["label_acc"] > 0.5 and i2t["label_acc"] > 0.5  # chance is 0.1


def test_marginal_ignores_the_other_modality(judged) -> None:
    """Held at pure noise (t_max), the text barely moves the image prediction; held clean
    (t = 0), a different caption moves it a lot."""
    from polydiff.core.multimodal import time_key
    from polydiff.multimodal.unidiffuser.sampling import conditional_denoiser

    model, splits, _ = judged
    den = conditional_denoiser(model, "image")
    n = len(splits.test) // 2  # two disjoint halves of the captions (180 each)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, model.layout.size(["image"]), generator=g)
    t = torch.full((n,), 0.7, dtype=torch.float64)
    caps = [c[0] for c in splits.test.captions[:n]]
    other = [c[0] for c in splits.test.captions[n:2 * n]]
    y_a, y_b = model.text_latents(caps), model.text_latents(other)
    with torch.no_grad():
        def eps(y, tt):
            return den.eps(x, t, **{"text": y, time_key("text"): torch.full((n,), tt)})

        t_max = model.process.t_max
        noise_a, noise_b = (torch.randn(y_a.shape, generator=g) for _ in range(2))
        clean = (eps(y_a, 0.0) - eps(y_b, 0.0)).pow(2).mean()
        marginal = (eps(noise_a, t_max) - eps(noise_b, t_max)).pow(2).mean()
    assert float(marginal) < 0.1 * float(clean), (float(marginal), float(clean))
