"""Tests of polydiff.multimodal.unidiffuser on small models: what the issue asks (t_text = 0 is
a conditional model's loss, marginal modes ignore the other modality, guidance weight 0 is
conditional sampling, chained modes run), training and resuming, save/load, and bad input.
The learned behaviour of a trained model is tested on the app's starter weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from polydiff.core.grids import time_grid
from polydiff.core.losses import DiffusionLoss
from polydiff.core.multimodal import time_key
from polydiff.core.samplers import sample_dpmpp_2m
from polydiff.multimodal.data import load_captioned_digits
from polydiff.multimodal.text import TextAutoencoder, TextAutoencoderConfig, Vocabulary
from polydiff.multimodal.unidiffuser import (
    DiffusionSettings,
    UniDiffuser,
    UniDiffuserConfig,
    load_unidiffuser,
    sample,
    train_unidiffuser,
)
from polydiff.multimodal.unidiffuser.sampling import conditional_denoiser
from polydiff.multimodal.unidiffuser.train import joint_loss, pair_tensors


@pytest.fixture(scope="module")
def splits():
    return load_captioned_digits(seed=0)


@pytest.fixture(scope="module")
def text(splits) -> TextAutoencoder:
    caps = [c for cs in splits.train.captions for c in cs]
    torch.manual_seed(0)
    return TextAutoencoder(TextAutoencoderConfig(vocab=tuple(Vocabulary.build(caps).words),
                                                 max_len=14, latent_tokens=2, latent_dim=4,
                                                 embed_dim=16, hidden=32)).eval()


def _model(text: TextAutoencoder, task: str = "joint", seed: int = 0) -> UniDiffuser:
    torch.manual_seed(seed)
    return UniDiffuser.create(UniDiffuserConfig(patch_size=4, hidden_size=32, depth=2,
                                                num_heads=2, time_embed_dim=16, task=task),
                              text).eval()


def test_clean_text_time_is_the_conditional_models_loss(splits, text) -> None:
    """The t2i objective with the text always clean (t_text = 0) is DiffusionLoss of the
    conditional image model eps(x_t, y_0, t, 0), sample by sample."""
    model = _model(text)
    data = pair_tensors(model, splits.val.subset(np.arange(32)))
    loss = joint_loss(model, DiffusionSettings(task="t2i", guidance_dropout=0.0))
    g = torch.Generator().manual_seed(0)
    t = torch.rand(len(data["image"]), generator=g, dtype=torch.float64) * 0.9 + 0.05
    eps = torch.randn(data["image"].shape, generator=g)
    with torch.no_grad():
        got = loss(model.network, data, t={"image": t}, eps={"image": eps}, reduction="none")

        def conditional(x, tt, text_latent):
            return model.network({"image": x, "text": text_latent},
                                 {"image": tt, "text": torch.zeros_like(tt)})["image"]

        want = DiffusionLoss(model.process, target=model.config.prediction)(
            conditional, data["image"], cond={"text_latent": data["text"]}, t=t, eps=eps,
            reduction="none")
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert float(got.mean()) > 0.1  # an untrained model: a real loss, not a vacuous zero


def test_joint_objective_sees_independent_times(splits, text) -> None:
    model = _model(text)
    loss = joint_loss(model, DiffusionSettings(task="joint", clean_prob=0.15, noise_prob=0.15))
    ts = loss.sample_times(20_000, generator=torch.Generator().manual_seed(0))
    ti, tt = ts["image"], ts["text"]
    for t in (ti, tt):
        assert float((t == 0).double().mean()) == pytest.approx(0.15, abs=0.015)
        assert float((t == model.process.t_max).double().mean()) == pytest.approx(0.15,
                                                                                 abs=0.015)
    assert abs(float(torch.corrcoef(torch.stack([ti, tt]))[0, 1])) < 0.03
    ded = joint_loss(model, DiffusionSettings(task="i2t", guidance_dropout=0.1))
    ts = ded.sample_times(20_000, generator=torch.Generator().manual_seed(1))
    assert set(torch.unique(ts["image"]).tolist()) == {0.0, model.process.t_max}
    assert ded.weights == {"image": 0.0, "text": 1.0}


def test_guidance_weight_zero_is_conditional_sampling(splits, text) -> None:
    model = _model(text)
    prompts = splits.val.captions[0][:3]
    out = sample(model, "t2i", prompts=prompts, guidance=0.0, steps=6, seed=3)
    # by hand: the conditional denoiser (text clean at t = 0), same noise draws
    g = torch.Generator().manual_seed(3)
    x = torch.randn((3, model.layout.size(["image"])), generator=g)
    torch.randn((3, *model.layout.shapes["text"]), generator=g)  # the (unused) guidance noise
    cond = {"text": model.text_latents(prompts), time_key("text"): torch.zeros(3)}
    ts = time_grid(model.process, 6, "logsnr", final_zero=True)
    with torch.no_grad():
        lat = sample_dpmpp_2m(conditional_denoiser(model, "image"), x, ts, cond=cond,
                              disable=True)
    want = model.images(lat.reshape(3, *model.layout.shapes["image"]))
    np.testing.assert_array_equal(out.images, want)
    guided = sample(model, "t2i", prompts=prompts, guidance=2.0, steps=6, seed=3)
    assert not np.allclose(guided.images, out.images)


def test_marginal_modes_hold_the_other_modality_at_pure_noise(splits, text) -> None:
    """Marginals: the network sees the other modality only as fresh N(0, 1) noise at t_max,
    whatever the data; nothing of a prompt or an image reaches it."""
    model = _model(text)
    seen = []

    def spy(module, args):
        xs, ts = args
        seen.append(({k: v.clone() for k, v in xs.items()}, dict(ts)))

    hook = model.network.register_forward_pre_hook(spy)
    try:
        img = sample(model, "image", n=64, steps=3, seed=0)
        txt = sample(model, "text", n=64, steps=3, seed=1)
    finally:
        hook.remove()
    t_max = torch.tensor(model.process.t_max, dtype=torch.float32)
    for (xs, ts), other in zip(seen, ["text"] * 3 + ["image"] * 3):
        assert torch.all(ts[other] == t_max)
        v = xs[other]
        assert abs(float(v.mean())) < 0.1 and abs(float(v.std()) - 1.0) < 0.1
    first = seen[0][0]["text"]
    assert all(torch.equal(s[0]["text"], first) for s in seen[:3])  # one draw for the run
    assert img.images.shape == (64, 1, 8, 8) and len(txt.captions) == 64


def test_all_modes_and_chains_run(splits, text) -> None:
    model = _model(text)
    imgs = splits.val.images[:2]
    out = sample(model, "i2t2i", images=imgs, steps=2)
    assert out.images.shape == (2, 1, 8, 8) and len(out.captions) == 2
    assert out.mid_captions == out.captions
    out = sample(model, "t2i2t", prompts=["a thick seven", "a two"], steps=2, guidance=1.0)
    assert out.images.shape == (2, 1, 8, 8) and len(out.captions) == 2
    assert np.array_equal(out.mid_images, out.images)
    out = sample(model, "joint", n=3, steps=2, guidance=1.0)
    assert out.images.shape == (3, 1, 8, 8) and len(out.captions) == 3
    assert float(np.abs(out.images).max()) <= 1.0
    out = sample(model, "i2t", images=imgs, steps=2)
    assert all(isinstance(c, str) for c in out.captions)


def test_bad_input(splits, text) -> None:
    model = _model(text)
    with pytest.raises(ValueError, match="unknown mode"):
        sample(model, "video")
    with pytest.raises(ValueError, match="needs at least one prompt"):
        sample(model, "t2i")
    with pytest.raises(ValueError, match="unknown word"):
        sample(model, "t2i", prompts=["a purple seven"])
    with pytest.raises(ValueError, match="guidance"):
        sample(model, "joint", guidance=-1.0)
    with pytest.raises(ValueError, match="images must be"):
        sample(model, "i2t", images=np.zeros((1, 3, 8, 8), np.float32))
    dedicated = _model(text, task="t2i")
    with pytest.raises(ValueError, match="trained for 't2i' only"):
        sample(dedicated, "i2t", images=splits.val.images[:1])


def test_train_resume_and_reload(splits, text, tmp_path) -> None:
    data = splits.train.subset(np.arange(64))
    s = DiffusionSettings(steps=6, batch_size=16, hidden_size=32, depth=2, num_heads=2,
                          patch_size=4, ema_decay=0.9, lr_warmup=0)
    straight = train_unidiffuser(data, tmp_path / "a", s, text, seed=1)
    half = DiffusionSettings(**{**s.__dict__, "steps": 3})
    train_unidiffuser(data, tmp_path / "b", half, text, seed=1)  # an "interrupted" run
    resumed = train_unidiffuser(data, tmp_path / "b", s, text, seed=1, resume=True)
    for (k, a), b in zip(straight.network.state_dict().items(),
                         resumed.network.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)
    assert straight.meta["train"]["pairs"] == 64 * 5
    straight.save(tmp_path / "model")
    back = load_unidiffuser(tmp_path / "model")
    assert back.config == straight.config and back.meta == straight.meta
    a = sample(back, "joint", n=2, steps=2, seed=0)
    b = sample(straight, "joint", n=2, steps=2, seed=0)
    np.testing.assert_array_equal(a.images, b.images)
    with pytest.raises(FileNotFoundError, match="not a UniDiffuser model folder"):
        load_unidiffuser(tmp_path)
