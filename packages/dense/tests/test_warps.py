"""Random warps: exact flow, the homography and spline solvers, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from polydiff.dense.flow import warp
from polydiff.dense.warps import (
    WARP_KINDS,
    apply_homography,
    homography_from_points,
    make_pairs,
    photometric_jitter,
    random_mapping,
    tps_mapping,
)


def test_homography_from_four_points_recovers_it() -> None:
    h = torch.tensor([[1.1, 0.1, 3.0], [-0.05, 0.9, -2.0], [1e-3, -2e-3, 1.0]],
                     dtype=torch.float64)
    src = torch.tensor([[0.0, 0.0], [10.0, 0.0], [10.0, 8.0], [0.0, 8.0]], dtype=torch.float64)
    dst = apply_homography(h, src.T).T
    torch.testing.assert_close(homography_from_points(src, dst), h)


def test_thin_plate_spline_interpolates_its_control_points() -> None:
    gen = torch.Generator().manual_seed(0)
    ctrl = torch.rand(9, 2, generator=gen, dtype=torch.float64) * 30
    off = torch.randn(9, 2, generator=gen, dtype=torch.float64)
    moved = tps_mapping(ctrl, off, ctrl.T.reshape(2, 9, 1))
    torch.testing.assert_close(moved.reshape(2, 9).T, ctrl + off)
    # with no offsets the spline is the identity
    pts = torch.rand(2, 5, 5, generator=gen, dtype=torch.float64) * 30
    torch.testing.assert_close(tps_mapping(ctrl, torch.zeros_like(off), pts), pts)


@pytest.mark.parametrize("kind", WARP_KINDS)
def test_mappings_are_deterministic_and_moderate(kind: str) -> None:
    m1 = random_mapping(kind, torch.Generator().manual_seed(3), (64, 64))
    m2 = random_mapping(kind, torch.Generator().manual_seed(3), (64, 64))
    torch.testing.assert_close(m1, m2)
    grid = torch.stack(torch.meshgrid(torch.arange(64.0), torch.arange(64.0),
                                      indexing="xy")).double()
    disp = (m1 - grid).norm(dim=0)
    assert 0.1 < float(disp.mean()) < 32


def test_pairs_have_exact_flow() -> None:
    """B warped by the flow reproduces A on the valid pixels (up to the bilinear sampling of
    the photograph), far better than no warp at all."""
    rng = np.random.default_rng(0)
    photo = torch.from_numpy(rng.random((1, 200, 220)).astype(np.float32))
    photo = torch.nn.functional.avg_pool2d(photo[None], 5, 1, 2)[0]   # smooth texture
    pb = make_pairs([photo], torch.Generator().manual_seed(1), 6, 64)
    assert pb.a.shape == pb.b.shape == (6, 1, 64, 64) and pb.flow.shape == (6, 2, 64, 64)
    assert set(pb.kinds) <= set(WARP_KINDS)
    w = warp(pb.b, pb.flow)
    v = pb.valid[:, None]
    err = float(((w - pb.a).abs() * v).sum() / v.sum())
    base = float(((pb.b - pb.a).abs() * v).sum() / v.sum())
    assert err < 0.01 and err < 0.1 * base, (err, base)
    again = make_pairs([photo], torch.Generator().manual_seed(1), 6, 64)
    torch.testing.assert_close(again.flow, pb.flow)


def test_photometric_jitter_is_seeded_and_bounded() -> None:
    img = torch.rand(4, 1, 16, 16)
    a = photometric_jitter(img, torch.Generator().manual_seed(0))
    b = photometric_jitter(img, torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, b)
    assert a.min() >= 0 and a.max() <= 1 and not torch.allclose(a, img)
