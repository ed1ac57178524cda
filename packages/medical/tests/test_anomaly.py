"""Synthetic lesions, anomaly maps, the baselines and minority guidance (mechanics with a tiny
prior; the AUROC of the trained prior is measured by the benchmark)."""

from __future__ import annotations

import torch

from polydiff.medical.anomaly import (
    AnomalyConfig,
    add_lesions,
    anomaly_maps,
    blur,
    blur_maps,
    image_scores,
    minority_sample,
    minority_score,
    nearest_neighbour_maps,
)
from polydiff.medical.data import TEST_SLICES, template_slices


def test_lesions_and_baselines() -> None:
    x = template_slices(TEST_SLICES[:3], 32)
    les, masks = add_lesions(x, seed=0)
    assert les.shape == x.shape and bool((masks.flatten(1).sum(1) > 0).all())
    changed = (les - x).abs() > 0.02
    assert float((changed & (masks > 0)).sum()) > 0.5 * float(masks.sum())
    assert torch.equal(les, add_lesions(x, seed=0)[0])
    # the atlas baseline is exact on healthy slices that are in the atlas
    nn = nearest_neighbour_maps(x, x)
    assert float(nn.abs().max()) == 0.0
    assert float(image_scores(nearest_neighbour_maps(les, x), les).min()) > 0
    torch.testing.assert_close(blur(torch.ones(1, 1, 9, 9), 1.5), torch.ones(1, 1, 9, 9))
    assert blur_maps(x).shape == x.shape


def test_anomaly_maps_and_minority_guidance(tiny_prior) -> None:
    x = template_slices(TEST_SLICES[:2], 32)
    maps, rec = anomaly_maps(tiny_prior, x, AnomalyConfig(steps=3, repeats=1))
    assert maps.shape == x.shape and rec.shape == x.shape and float(maps.min()) >= 0
    u = tiny_prior.to_model(x).requires_grad_(True)
    score = minority_score(tiny_prior, u)
    (g,) = torch.autograd.grad(score.sum(), u)
    assert score.shape == (2,) and bool(g.abs().sum() > 0)
    plain = minority_sample(tiny_prior, 2, scale=0.0, steps=3)
    guided = minority_sample(tiny_prior, 2, scale=50.0, steps=3)
    assert plain.shape == (2, 1, 32, 32) and not torch.equal(plain, guided)
