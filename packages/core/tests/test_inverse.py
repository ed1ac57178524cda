"""Data-consistency sampling and RED-Diff against closed forms on exact Gaussian test beds:
the projected pair stays consistent, hard consistency reproduces the measurement exactly while
the unobserved coordinates keep their exact (independent) prior law, and RED-Diff's fixed point
is the measurement on observed and the prior mean on unobserved coordinates."""

from __future__ import annotations

import pytest
import torch

from polydiff.core.grids import time_grid
from polydiff.core.inverse import DataConsistency, red_diff
from polydiff.core.operators import Masking
from polydiff.core.processes import VPCosine, VPLinear
from polydiff.core.samplers import sample_ddim
from polydiff.core.testbeds import GaussianMixture

F64 = torch.float64
MEAN = torch.tensor([0.5, -0.3, 0.2, 0.8], dtype=F64)
VAR = torch.tensor([0.3, 0.5, 0.2, 0.4], dtype=F64) ** 2
OBS = torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=F64)   # coordinates 0 and 2 are measured


def _prior(process):  # a diagonal Gaussian: coordinates independent
    return GaussianMixture(MEAN[None], VAR[None]).denoiser(process)


def test_projected_pair_is_consistent() -> None:
    proc = VPLinear()
    den = _prior(proc)
    op = Masking(OBS)
    y = op(torch.full((3, 4), 2.0, dtype=F64))
    dc = DataConsistency(den, lambda x0, t: op.prox(x0, y, 0.5))
    x = torch.randn(3, 4, dtype=F64)
    t = torch.full((3,), 0.4, dtype=F64)
    x0, eps = dc.x0_eps(x, t)
    a, s = proc.alpha(t)[:, None], proc.sigma(t)[:, None]
    torch.testing.assert_close(a * x0 + s * eps, x)           # x_t = alpha x0' + sigma eps'
    raw = den.x0(x, t)
    torch.testing.assert_close(x0, (OBS * y + 0.5 * raw) / (OBS + 0.5))
    # below t_stop the estimate passes through unchanged
    late = DataConsistency(den, lambda x0, t: op.prox(x0, y, 0.5), t_stop=0.5)
    torch.testing.assert_close(late.x0_eps(x, t)[0], raw)


def test_hard_consistency_sampling_keeps_the_prior_elsewhere() -> None:
    """With independent coordinates the projection must not touch the unobserved ones: they
    equal, draw for draw, those of the unconditional sampler with the same noise."""
    proc = VPCosine()
    den = _prior(proc)
    op = Masking(OBS)
    n = 2000
    y = op(torch.tensor([[1.2, 0.0, -0.4, 0.0]], dtype=F64)).expand(n, 4)
    dc = DataConsistency(den, lambda x0, t: op.prox(x0, y, 0.0))
    ts = time_grid(proc, 200, "uniform", t_end=0.0)

    def run(d):
        g = torch.Generator().manual_seed(0)
        x = proc.prior_sample((n, 4), generator=g, dtype=F64)
        return sample_ddim(d, x, ts, eta=1.0, generator=g, disable=True)

    out, free = run(dc), run(den)
    torch.testing.assert_close(out[:, [0, 2]], y[:, [0, 2]])   # the measurement, exactly
    torch.testing.assert_close(out[:, [1, 3]], free[:, [1, 3]])
    se = (VAR[[1, 3]] / n).sqrt()                                # and that is the prior law
    assert ((out[:, [1, 3]].mean(0) - MEAN[[1, 3]]).abs() < 4 * se).all()
    assert ((out[:, [1, 3]].var(0) / VAR[[1, 3]] - 1).abs() < 0.15).all()


@pytest.mark.parametrize("weighting", ["sqrt_inv_snr", "const"])
def test_red_diff_fixed_point(weighting: str) -> None:
    proc = VPCosine()
    den = _prior(proc)
    op = Masking(OBS)
    truth = torch.tensor([[1.2, 0.0, -0.4, 0.0]], dtype=F64).expand(64, 4)
    y = op(truth)

    def data_loss(mu: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((op(mu) - y) ** 2).sum(dim=1) / 0.01

    g = torch.Generator().manual_seed(1)
    ts = torch.linspace(0.9, 0.02, 400, dtype=F64)
    mu = red_diff(den, data_loss, torch.zeros(64, 4, dtype=F64), ts, lam=1.0, lr=0.05,
                  weighting=weighting, generator=g)
    est = mu.mean(0)
    assert float((est[[0, 2]] - truth[0, [0, 2]]).abs().max()) < 0.02   # data term
    assert float((est[[1, 3]] - MEAN[[1, 3]]).abs().max()) < 0.1        # prior mean
    with pytest.raises(ValueError):
        red_diff(den, data_loss, torch.zeros(1, 4, dtype=F64), ts[:2], weighting="nope")
