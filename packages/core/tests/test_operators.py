"""Measurement operators against closed forms: adjointness ``<A x, y> = <x, A^T y>`` (also
against the autograd adjoint), Parseval, the Radon transform of a disk and of a point,
filtered back-projection of a disk, closed-form proxes against conjugate gradients, masks."""

from __future__ import annotations

import math

import pytest
import torch

from polydiff.core.operators import (
    LinearOperator,
    MaskedFourier,
    Masking,
    ParallelBeamRadon,
    cartesian_line_mask,
    conjugate_gradient,
    inner,
    ramp_filter,
)

F64 = torch.float64
N = 32


def _disk(n: int, r: float, cx: float = 0.0, cy: float = 0.0) -> torch.Tensor:
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    x, y = j + 0.5 - n / 2, n / 2 - i - 0.5
    return (((x - cx) ** 2 + (y - cy) ** 2) <= r * r).to(F64)[None, None]


@pytest.fixture(scope="module")
def radon() -> ParallelBeamRadon:
    return ParallelBeamRadon(N, n_angles=24)


def _ops(radon: ParallelBeamRadon) -> list[LinearOperator]:
    g = torch.Generator().manual_seed(0)
    mask = (torch.rand(1, N, N, generator=g) > 0.5).to(F64)
    return [Masking(mask), MaskedFourier(cartesian_line_mask(N, 4, seed=1), (1, N, N)),
            MaskedFourier(torch.rand(2, 1, 1, N, generator=g).round(), (1, N, N)), radon]


def test_adjointness_of_every_operator(radon: ParallelBeamRadon) -> None:
    g = torch.Generator().manual_seed(1)
    for op in _ops(radon):
        x = torch.randn(2, 1, N, N, generator=g, dtype=F64)
        ax = op(x)
        y = torch.randn(ax.shape, generator=g, dtype=ax.dtype)
        lhs, rhs = inner(ax, y), inner(x, op.adjoint(y))
        torch.testing.assert_close(lhs, rhs, rtol=1e-10, atol=1e-9)
        # the closed forms agree with the exact autograd transpose of the forward map
        torch.testing.assert_close(op.adjoint(y), LinearOperator.adjoint(op, y),
                                   rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(op.normal(x), op.adjoint(op(x)), rtol=1e-10, atol=1e-10)


def test_fourier_is_orthonormal_and_centred() -> None:
    op = MaskedFourier(torch.ones(N), (1, N, N))
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 1, N, N, generator=g, dtype=F64)
    k = op(x)
    torch.testing.assert_close(inner(k, k), inner(x, x))            # Parseval
    torch.testing.assert_close(op.adjoint(k), x)                      # fully sampled: A^T A = I
    const = torch.ones(1, 1, N, N, dtype=F64)
    kc = op(const)[0, 0]
    assert abs(kc[N // 2, N // 2] - N) < 1e-9                         # DC at the centre
    assert float(kc.abs().sum()) == pytest.approx(N, abs=1e-9)


def test_line_masks() -> None:
    for acc, kind in [(4, "random"), (8, "random"), (4, "equispaced"), (8, "equispaced")]:
        m = cartesian_line_mask(64, acc, center_fraction=0.08, kind=kind, seed=3)
        assert int(m.sum()) == round(64 / acc)
        centre = round(64 * 0.08)
        assert bool(m[32 - centre // 2: 32 - centre // 2 + centre].all())
    eq = cartesian_line_mask(64, 4, kind="equispaced")
    gaps = torch.diff(torch.nonzero(eq).flatten())
    assert int(gaps.max()) <= 6 and int(gaps[gaps > 1].min()) >= 4  # evenly spread
    assert not torch.equal(cartesian_line_mask(64, 4, seed=1), cartesian_line_mask(64, 4, seed=2))
    with pytest.raises(ValueError):
        cartesian_line_mask(64, 0.5)


def test_closed_form_proxes_match_conjugate_gradients(radon: ParallelBeamRadon) -> None:
    g = torch.Generator().manual_seed(4)
    for op in _ops(radon)[:3]:
        x = torch.randn(2, 1, N, N, generator=g, dtype=F64)
        y = op(torch.randn(2, 1, N, N, generator=g, dtype=F64))
        lam = torch.tensor([0.3, 2.0], dtype=F64)
        torch.testing.assert_close(op.prox(x, y, lam), LinearOperator.prox(op, x, y, lam,
                                                                            iters=200),
                                   rtol=1e-7, atol=1e-7)
    # hard data consistency (lam = 0) on MRI: the measured frequencies are y's exactly
    mri = _ops(radon)[1]
    x = torch.randn(1, 1, N, N, generator=g, dtype=F64)
    truth = torch.randn(1, 1, N, N, generator=g, dtype=F64)
    z = mri.prox(x, mri(truth), 0.0)
    torch.testing.assert_close(mri.normal(z), mri.normal(truth))


def test_conjugate_gradient_solves_spd_systems() -> None:
    g = torch.Generator().manual_seed(5)
    m = torch.randn(6, 6, generator=g, dtype=F64)
    k = m @ m.T + 0.5 * torch.eye(6, dtype=F64)
    b = torch.randn(3, 6, generator=g, dtype=F64)
    x = conjugate_gradient(lambda v: v @ k, b, iters=50)
    torch.testing.assert_close(x @ k, b)


def test_radon_of_a_disk_and_a_point(radon: ParallelBeamRadon) -> None:
    r = 10.0
    p = radon(_disk(N, r))
    s = torch.arange(radon.n_det, dtype=F64) - (radon.n_det - 1) / 2
    chord = 2 * torch.sqrt((r * r - s * s).clamp_min(0))
    for a in range(radon.n_angles):  # every angle sees the same chord lengths
        err = (p[0, 0, a] - chord).abs()
        assert float(err.mean()) < 0.3 and float(err.max()) < 3.0
    assert float(p.sum(dim=-1).std() / p.sum(dim=-1).mean()) < 1e-3  # mass at every angle
    # an off-centre point at (x, y) = (5.5, -3.5) projects to s = x cos + y sin
    pt = torch.zeros(1, 1, N, N, dtype=F64)
    pt[0, 0, int(N / 2 + 3.5 - 0.5), int(5.5 + N / 2 - 0.5)] = 1.0
    th = [0.0, math.pi / 2, math.pi / 3]
    q = ParallelBeamRadon(N, angles=th, n_det=N + 1)(pt)[0, 0]
    sd = torch.arange(N + 1, dtype=F64) - N / 2
    for a, t in enumerate(th):
        centroid = float((q[a] * sd).sum() / q[a].sum())
        tol = 1e-9 if a < 2 else 0.1  # exact on the axes; bilinear ray sampling otherwise
        assert centroid == pytest.approx(5.5 * math.cos(t) - 3.5 * math.sin(t), abs=tol)
        assert float(q[a].sum()) == pytest.approx(1.0, abs=tol)


def test_fbp_recovers_a_disk() -> None:
    op = ParallelBeamRadon(N, n_angles=90)
    disk = _disk(N, 9.0, cx=2.0, cy=-1.0)
    rec = op.fbp(op(disk))
    assert float((rec - disk).abs().mean()) < 0.05
    inside = rec[disk > 0]
    assert float(inside.mean()) == pytest.approx(1.0, abs=0.05)
    few = ParallelBeamRadon(N, n_angles=8)
    assert float((few.fbp(few(disk)) - disk).abs().mean()) > float((rec - disk).abs().mean())


def test_ramp_filter_is_a_ramp() -> None:
    h = ramp_filter(64, dtype=F64)
    f = torch.fft.fftfreq(64, dtype=F64).abs()
    # the truncated spatial kernel keeps a small DC gain (about 1 / (pi^2 n)), shrinking with n
    assert 0.0 < float(h[0]) < 1.0 / (math.pi**2 * 64) * 2
    assert float(ramp_filter(256, dtype=F64)[0]) < float(h[0]) / 3
    assert float((h - f).abs()[1:20].max()) < 0.01       # |f| at low frequencies
    assert float(ramp_filter(64, "hann", dtype=F64)[32]) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError):
        ramp_filter(64, "nope")


def test_operator_norms() -> None:
    assert MaskedFourier(cartesian_line_mask(N, 4), (1, N, N)).norm() == pytest.approx(1.0,
                                                                                    abs=1e-6)
    m = torch.zeros(1, N, N)
    m[..., :4] = 3.0
    assert Masking(m).norm() == pytest.approx(3.0, abs=1e-6)


def test_gradients_flow_through_operators(radon: ParallelBeamRadon) -> None:
    for op in _ops(radon):
        x = torch.randn(2, 1, N, N, dtype=F64, requires_grad=True)
        y = op(x)
        (grad,) = torch.autograd.grad(inner(y, y).sum(), x)
        torch.testing.assert_close(grad, 2 * op.normal(x.detach()), rtol=1e-9, atol=1e-9)
