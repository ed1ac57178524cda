"""Lotus: rendered scenes, metrics against closed forms, the prior adaptation, the variants."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from polydiff.dense.data import MOTORCYCLE_CALIBRATION, motorcycle_depth, motorcycle_pair
from polydiff.dense.lotus.metrics import (
    align_scale_shift,
    angular_error,
    depth_metrics,
    normal_metrics,
)
from polydiff.dense.lotus.model import (
    VARIANTS,
    LotusNet,
    LotusNetConfig,
    adapt_prior,
    decode,
    depth_target,
    nfe,
    predict,
)
from polydiff.dense.lotus.scenes import render_scene, render_split, split_textures
from polydiff.dense.lotus.train import LotusSettings, SceneSource, variant_loss

TINY = LotusNetConfig(base_channels=8, channel_mults=(1, 2), attention_levels=(1,))


# ----------------------------------------------------------------------------- metrics
def _depth_map(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(1.0, 10.0, size=(12, 16))


def test_scaled_and_shifted_disparity_scores_perfectly() -> None:
    depth = _depth_map(np.random.default_rng(0))
    pred = 3.7 * (1.0 / depth) - 0.25
    m = depth_metrics(pred, depth)
    assert m["absrel"] == pytest.approx(0.0, abs=1e-9)
    assert m["delta1"] == 1.0
    s, b = align_scale_shift(pred, 1.0 / depth)
    assert s == pytest.approx(1 / 3.7) and b == pytest.approx(0.25 / 3.7)


def test_depth_metrics_match_the_closed_form_when_alignment_is_identity() -> None:
    """A true disparity that differs from the prediction by a residual orthogonal to
    [prediction, 1] makes the least-squares alignment the identity, so the metrics equal
    their definitions evaluated on ``1 / prediction``."""
    rng = np.random.default_rng(1)
    pred = (1.0 / _depth_map(rng)).ravel()
    a = np.stack([pred, np.ones_like(pred)], 1)
    r = rng.normal(size=pred.shape)
    r -= a @ np.linalg.lstsq(a, r, rcond=None)[0]
    r *= 0.6 * pred.min() / np.abs(r).max()
    depth = 1.0 / (pred + r)
    s, b = align_scale_shift(pred, 1.0 / depth)
    assert s == pytest.approx(1.0) and b == pytest.approx(0.0, abs=1e-12)
    est = 1.0 / pred
    want_absrel = np.mean(np.abs(est - depth) / depth)
    want_d1 = np.mean(np.maximum(est / depth, depth / est) < 1.25)
    m = depth_metrics(pred.reshape(12, 16), depth.reshape(12, 16))
    assert m["absrel"] == pytest.approx(want_absrel, rel=1e-9)
    assert m["delta1"] == pytest.approx(want_d1)
    assert 0.01 < m["absrel"] < 0.5 and m["delta1"] < 1.0


def test_depth_metrics_respect_the_mask() -> None:
    depth = _depth_map(np.random.default_rng(2))
    pred = 1.0 / depth
    bad = pred.copy()
    bad[:, :4] = 5.0                      # garbage where the mask excludes
    mask = np.ones(depth.shape, bool)
    mask[:, :4] = False
    assert depth_metrics(bad, depth, mask)["absrel"] == pytest.approx(0.0, abs=1e-9)
    assert depth_metrics(bad, depth)["absrel"] > 0.05
    nan_depth = depth.copy()
    nan_depth[:, :4] = np.nan
    assert depth_metrics(bad, nan_depth)["absrel"] == pytest.approx(0.0, abs=1e-9)


def test_normal_rotated_by_a_known_angle() -> None:
    """Rotating every normal by 20 degrees about an axis perpendicular to it gives an error
    of exactly 20 degrees everywhere."""
    rng = np.random.default_rng(3)
    n = rng.normal(size=(3, 10, 10))
    n /= np.linalg.norm(n, axis=0)
    k = np.cross(n, rng.normal(size=(3, 10, 10)), axis=0)
    k /= np.linalg.norm(k, axis=0)        # unit axis perpendicular to n
    theta = math.radians(20.0)
    rotated = math.cos(theta) * n + math.sin(theta) * np.cross(k, n, axis=0)
    err = angular_error(rotated, n)
    assert np.allclose(err, 20.0, atol=1e-6)
    m = normal_metrics(3.0 * rotated, n)  # length does not matter
    assert m["mean"] == pytest.approx(20.0) and m["median"] == pytest.approx(20.0)
    assert (m["a11"], m["a22"], m["a30"]) == (0.0, 1.0, 1.0)
    assert normal_metrics(-n, n)["mean"] == pytest.approx(180.0)


# ----------------------------------------------------------------------------- scenes
def test_scenes_are_deterministic_and_well_formed() -> None:
    tex = split_textures("train")
    a, b = render_scene(5, 32, tex), render_scene(5, 32, tex)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.depth, b.depth)
    c = render_scene(6, 32, tex)
    assert not np.array_equal(a.depth, c.depth)
    for s in (a, c):
        assert s.image.shape == (32, 32, 3) and s.depth.shape == (32, 32)
        assert 0 <= s.image.min() and s.image.max() <= 1 and s.image.std() > 0.02
        assert np.isfinite(s.depth).all() and s.depth.min() > 0.5
        assert np.allclose(np.linalg.norm(s.normal, axis=2), 1.0, atol=1e-5)


def test_rendered_normals_agree_with_the_depth_geometry() -> None:
    """Back-project the depth map with the focal length and differentiate: the normals of
    the resulting surface equal the rendered normals wherever the surface is smooth."""
    tex = split_textures("val")
    errs = []
    for seed in range(3):
        s = render_scene(1000 + seed, 64, tex)
        h, w = s.depth.shape
        v, u = np.mgrid[0:h, 0:w] + 0.5
        p = np.stack([(u - w / 2) / s.focal, -(v - h / 2) / s.focal, np.ones((h, w))],
                     -1) * s.depth[..., None]
        du = p[1:-1, 2:] - p[1:-1, :-2]
        dv = p[2:, 1:-1] - p[:-2, 1:-1]
        n = np.cross(du, dv)
        n *= np.array([1.0, 1.0, -1.0])   # the renderer's z points to the camera
        n /= np.linalg.norm(n, axis=-1, keepdims=True)
        n *= np.sign((n * s.normal[1:-1, 1:-1]).sum(-1, keepdims=True))
        err = angular_error(np.moveaxis(n, -1, 0), np.moveaxis(s.normal[1:-1, 1:-1], -1, 0))
        errs.append(np.median(err))
    assert max(errs) < 3.0, errs


def test_splits_use_their_own_textures_and_seeds() -> None:
    assert len(split_textures("test")) != len(split_textures("train"))
    val, test = render_split("val", 2, 32), render_split("test", 2, 32)
    assert not np.array_equal(val[0].depth, test[0].depth)
    src = SceneSource(32)
    batch = src.get(torch.arange(3), torch.Generator().manual_seed(0))
    assert batch["image"].shape == (3, 3, 32, 32) and batch["image"].min() >= -1
    assert batch["depth"].shape == (3, 1, 32, 32) and batch["normal"].shape == (3, 3, 32, 32)


def test_motorcycle_depth_from_disparity_and_calibration() -> None:
    image, depth = motorcycle_depth()
    disp = -motorcycle_pair().flow[0]
    c = MOTORCYCLE_CALIBRATION
    ok = np.isfinite(depth)
    assert image.shape[:2] == depth.shape and 0.8 < ok.mean() < 1.0
    assert np.allclose(depth[ok] * (disp[ok] + c["doffs"]), c["baseline"] * c["focal"],
                       rtol=1e-5)
    assert 1500 < np.nanmin(depth) < np.nanmax(depth) < 8000   # millimetres


# ----------------------------------------------------------------------------- model
def test_adapted_network_equals_the_prior_when_image_equals_input() -> None:
    """Copied-and-halved first layer: with the image equal to the noisy input, the adapted
    network computes exactly the prior (the task embedding starts at zero)."""
    torch.manual_seed(0)
    prior = LotusNet(LotusNetConfig(**{**TINY.__dict__, "image_channels": 0}))
    for p in prior.parameters():        # the zero-initialised head would hide everything
        p.data.normal_(0, 0.2)
    for tasks in (0, 2):
        net = adapt_prior(prior, LotusNetConfig(**{**TINY.__dict__, "tasks": tasks}))
        x, t = torch.randn(2, 3, 16, 16), torch.tensor([0.3, 0.9])
        want = prior(x, t)
        assert want.abs().mean() > 0.01
        torch.testing.assert_close(net(x, t, image=x), want, rtol=1e-4, atol=1e-5)
        w = net.unet.stem.conv.weight
        torch.testing.assert_close(w[:, :3], w[:, 3:])
        torch.testing.assert_close(2 * w[:, :3], prior.unet.stem.conv.weight)


def test_depth_target_is_affine_invariant_and_normalised() -> None:
    depth = torch.rand(2, 1, 8, 8) * 5 + 1
    y = depth_target(depth)
    assert y.shape == (2, 3, 8, 8)
    assert torch.allclose(y.amin(dim=(1, 2, 3)), torch.tensor(-1.0))
    assert torch.allclose(y.amax(dim=(1, 2, 3)), torch.tensor(1.0))
    torch.testing.assert_close(depth_target(3.0 * depth), y)   # scale-free
    assert torch.allclose(decode(y, "depth")[:, 0], y[:, 0])
    n = decode(torch.randn(2, 3, 4, 4), "normal")
    assert torch.allclose(n.norm(dim=1), torch.ones(2, 4, 4))


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_trains_and_predicts(variant: str) -> None:
    s = LotusSettings(task="normal", variant=variant, detail_preserver=True, net=TINY,
                      size=16)
    torch.manual_seed(0)
    net = LotusNet(s.predictor_config())
    batch = SceneSource(16).get(torch.arange(2), torch.Generator().manual_seed(1))
    loss = variant_loss(s)(net, batch, torch.Generator().manual_seed(2))
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert net.unet.stem.conv.weight.grad is not None
    image = batch["image"]
    a = predict(net, variant, image, steps=2, seed=0)
    b = predict(net, variant, image, steps=2, seed=0)
    assert a.shape == (2, 3, 16, 16) and torch.equal(a, b)
    assert nfe(variant, 50) == (50 if variant in ("eps", "x0") else 1)
    if variant in ("d", "regression"):     # deterministic: no noise input at all
        torch.testing.assert_close(predict(net, variant, image, seed=1), a)


def test_detail_preserver_doubles_the_batch_with_the_reconstruction_task() -> None:
    s = LotusSettings(task="depth", variant="d", net=TINY, size=16)
    seen = {}

    class Spy(LotusNet):
        def forward(self, x, t, *, image=None, task=None):  # type: ignore[no-untyped-def]
            seen["task"], seen["image"] = task, image
            return super().forward(x, t, image=image, task=task)

    torch.manual_seed(0)
    net = Spy(s.predictor_config())
    batch = SceneSource(16).get(torch.arange(3), torch.Generator().manual_seed(1))
    variant_loss(s)(net, batch, torch.Generator())
    assert seen["task"].tolist() == [0, 0, 0, 1, 1, 1]
    torch.testing.assert_close(seen["image"][:3], seen["image"][3:])
    assert LotusSettings(variant="regression").preserves_detail is False
    with pytest.raises(ValueError, match="unknown task"):
        LotusSettings(task="segmentation")
