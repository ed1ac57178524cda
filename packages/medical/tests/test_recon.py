"""Simulated acquisitions and the solvers: the baselines against closed forms and each other
(TV must beat zero-filling), and the mechanics of the diffusion solvers with a tiny untrained
prior (shapes, range, determinism, data consistency)."""

from __future__ import annotations

import pytest
import torch

from polydiff.medical.data import TEST_SLICES, template_slices
from polydiff.medical.metrics import psnr
from polydiff.medical.recon import (
    DIFFUSION_SOLVERS,
    acquisition_for,
    ct_acquisition,
    mri_acquisition,
    reconstruct,
    simulate,
    tv_reconstruct,
    zero_filled,
)


@pytest.fixture(scope="module")
def slices() -> torch.Tensor:
    return template_slices(TEST_SLICES[:2], 32)


def test_simulation_and_zero_filling(slices: torch.Tensor) -> None:
    full = mri_acquisition(32, 1.0, noise=0.0)
    torch.testing.assert_close(zero_filled(full, simulate(full, slices)), slices)
    acq = mri_acquisition(32, 4.0, seed=3)
    y = simulate(acq, slices, seed=1)
    assert y.is_complex() and torch.equal(y, simulate(acq, slices, seed=1))
    assert bool((y[..., acq.op.mask[0] == 0] == 0).all())     # nothing off the mask
    ct = ct_acquisition(32, 20)
    s = simulate(ct, slices)
    assert s.shape == (2, 1, 20, ct.op.n_det)
    with pytest.raises(ValueError):
        acquisition_for("pet", 4, 32)


@pytest.mark.parametrize("modality, setting, lam", [("mri", 4.0, 0.002), ("ct", 20, 0.02)])
def test_tv_beats_zero_filling(slices: torch.Tensor, modality: str, setting: float,
                               lam: float) -> None:
    acq = acquisition_for(modality, setting, 32)
    y = simulate(acq, slices)
    zf = psnr(zero_filled(acq, y), slices)
    tv = psnr(tv_reconstruct(acq, y, lam, iters=200), slices)
    assert (tv > zf + 0.5).all(), (tv, zf)


@pytest.mark.parametrize("method", DIFFUSION_SOLVERS)
def test_diffusion_solver_mechanics(tiny_prior, slices: torch.Tensor, method: str) -> None:
    acq = mri_acquisition(32, 4.0)
    y = simulate(acq, slices)
    a = reconstruct(method, acq, y, tiny_prior, seed=0, steps=4)
    b = reconstruct(method, acq, y, tiny_prior, seed=0, steps=4)
    assert a.shape == slices.shape and torch.equal(a, b)
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    with pytest.raises(ValueError, match="needs a diffusion prior"):
        reconstruct(method, acq, y, None)


def test_data_consistency_pulls_towards_the_measurements(tiny_prior, slices: torch.Tensor
                                                        ) -> None:
    """With an untrained prior the unmeasured frequencies are garbage and the final clamp to
    [0, 1] spoils exact consistency, but the projection must still bring the measured lines
    much closer to y than the unconstrained sampler does."""
    acq = mri_acquisition(32, 4.0, noise=0.0)
    y = simulate(acq, slices)
    r = reconstruct("dc", acq, y, tiny_prior, steps=3, lam=0.0, eta=0.0)
    free = tiny_prior.sample(2, steps=3, eta=0.0)

    def rel(img: torch.Tensor) -> float:
        return float((acq.op(img) - y).abs().sum() / y.abs().sum())

    assert rel(r) < 0.5 * rel(free)
    ct = ct_acquisition(32, 12)
    r = reconstruct("dc", ct, simulate(ct, slices), tiny_prior, steps=3)
    assert r.shape == slices.shape


def test_dc_particles_average_each_images_own_samples(tiny_prior, slices: torch.Tensor
                                                      ) -> None:
    """``particles=K`` is the mean of K posterior samples of the SAME image: it equals the
    per-image mean of the K samples drawn as one batch, and (Jensen) its squared error is at
    most the samples' mean squared error, image by image; mixing images would break both."""
    from polydiff.medical.recon import dc_sample

    acq = mri_acquisition(32, 4.0)
    y = simulate(acq, slices)
    k = 3
    r = reconstruct("dc", acq, y, tiny_prior, seed=0, steps=3, particles=k)
    draws = dc_sample(tiny_prior, acq, y.repeat(k, 1, 1, 1), steps=3, seed=0)
    draws = draws.reshape(k, *slices.shape)
    torch.testing.assert_close(r, draws.mean(0))
    err = ((r - slices) ** 2).flatten(1).mean(1)
    per_draw = ((draws - slices) ** 2).flatten(2).mean(2).mean(0)
    assert bool((err <= per_draw + 1e-7).all())
    assert not torch.equal(draws[0], draws[1])          # independent noise per particle
    with pytest.raises(ValueError, match="particles"):
        dc_sample(tiny_prior, acq, y, steps=2, particles=0)


def test_unknown_method(slices: torch.Tensor) -> None:
    acq = mri_acquisition(32, 4.0)
    with pytest.raises(ValueError, match="unknown method"):
        reconstruct("magic", acq, simulate(acq, slices))
