"""Metrics against closed forms and brute force."""

from __future__ import annotations

import math

import pytest
import torch

from polydiff.medical.metrics import auroc, nmse, psnr, ssim


def test_psnr_and_nmse() -> None:
    x = torch.zeros(2, 1, 8, 8)
    y = x + 0.1
    torch.testing.assert_close(psnr(y, x), torch.full((2,), 20.0, dtype=torch.float64))
    torch.testing.assert_close(nmse(x, y), torch.ones(2, dtype=torch.float64))


def test_ssim() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 32, 32, generator=g)
    torch.testing.assert_close(ssim(x, x), torch.ones(3, dtype=torch.float64))
    noisy = (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    worse = (x + 0.5 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    assert (ssim(worse, x) < ssim(noisy, x)).all() and (ssim(noisy, x) < 1).all()


def test_auroc_matches_brute_force() -> None:
    g = torch.Generator().manual_seed(1)
    s = torch.randint(0, 6, (40,), generator=g).double()   # many ties
    y = torch.rand(40, generator=g) < 0.4
    pos, neg = s[y], s[~y]
    brute = ((pos[:, None] > neg[None]).double() + 0.5 * (pos[:, None] == neg[None]).double())
    assert auroc(s, y) == pytest.approx(float(brute.mean()), abs=1e-12)
    assert auroc(torch.tensor([0.1, 0.2, 0.8, 0.9]), torch.tensor([0, 0, 1, 1])) == 1.0
    assert auroc(torch.tensor([0.9, 0.8, 0.2, 0.1]), torch.tensor([0, 0, 1, 1])) == 0.0
    assert math.isclose(auroc(torch.ones(4), torch.tensor([0, 1, 0, 1])), 0.5)
    with pytest.raises(ValueError):
        auroc(torch.ones(3), torch.ones(3))
