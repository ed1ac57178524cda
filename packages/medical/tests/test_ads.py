"""Active Diffusion Subsampling: the entropy criterion prefers lines where particles disagree,
the acquisition respects the budget and the centre, and fixed masks reuse the same sampler."""

from __future__ import annotations

import torch

from polydiff.core.operators import MaskedFourier, cartesian_line_mask
from polydiff.medical.ads import (
    ADSConfig,
    active_subsample,
    centre_mask,
    fixed_mask_reconstruct,
    line_entropy,
)
from polydiff.medical.data import TEST_SLICES, template_slices


def test_entropy_prefers_disagreement() -> None:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(1, 1, 6, 8, generator=g, dtype=torch.complex64)
    parts = base.expand(1, 4, 6, 8).clone()
    parts[0, :, :, 5] += torch.randn(4, 6, generator=g, dtype=torch.complex64)  # line 5 differs
    parts[0, :, :, 2] += 0.1 * torch.randn(4, 6, generator=g, dtype=torch.complex64)
    ent = line_entropy(parts, sigma=0.1)
    assert ent.shape == (1, 8)
    assert int(ent.argmax()) == 5 and float(ent[0, 2]) > float(ent[0, 0])
    assert float(ent[0, 0]) == 0.0                          # identical particles: no entropy
    # the maximum is log P (particles far apart)
    assert float(line_entropy(parts * 1e4, sigma=0.1)[0, 5]) == torch.log(torch.tensor(4.0)).item()


def test_active_subsampling_budget_and_centre(tiny_prior) -> None:
    x = template_slices(TEST_SLICES[:2], 32)
    k = MaskedFourier(torch.ones(32), (1, 32, 32))(x)
    cfg = ADSConfig(acceleration=4.0, particles=2, steps=6, center_fraction=0.125)
    res = active_subsample(tiny_prior, k, cfg, seed=0)
    assert res.image.shape == x.shape and res.particles.shape == (2, 2, 1, 32, 32)
    centre = centre_mask(32, 0.125)
    for j in range(2):
        assert int(res.masks[j].sum()) == 8
        assert bool(res.masks[j][centre > 0].all())
        assert len(res.order[j]) == 4 and len(set(res.order[j])) == 4
        assert not any(centre[i] > 0 for i in res.order[j])
    again = active_subsample(tiny_prior, k, cfg, seed=0)
    assert torch.equal(res.masks, again.masks) and torch.equal(res.image, again.image)
    fixed = fixed_mask_reconstruct(tiny_prior, k, cartesian_line_mask(32, 4.0), cfg)
    assert fixed.shape == x.shape
