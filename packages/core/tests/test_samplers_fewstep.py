"""Few-step sampling: iPNDM, GITS time steps, the paper-form DPM-Solver++(2M) oracle, the
bespoke form of classical solvers and the one-call learned-solver path."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from polydiff.core.grids import default_grid, time_grid
from polydiff.core.processes import OUVE, VE, VPDiscrete, VPLinear
from polydiff.core.samplers import sample_dpmpp_2m, sample_euler, sample_ipndm, sample_unipc
from polydiff.core.samplers.bespoke import (
    BespokeSolver,
    SolverSearch,
    fit_best_solver,
    sample_bespoke,
)
from polydiff.core.samplers.gits import gits_cost_matrix, gits_grid, shortest_path
from polydiff.core.samplers.reference import dpmpp_2m_reference
from polydiff.core.samplers.registry import get_sampler
from polydiff.core.testbeds import GaussianMixture, reference_pf_ode

F64 = torch.float64


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _noise(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _rmse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).pow(2).mean().sqrt())


# --------------------------------------------------------------------------- oracle
@pytest.mark.parametrize("process", [VPDiscrete.linear(), VPLinear(), VE()],
                         ids=lambda p: type(p).__name__)
@pytest.mark.parametrize("steps", [1, 2, 5, 12])
def test_dpmpp_2m_matches_the_paper_form(process, steps) -> None:
    """The shared stepper (also behind the diffusers scheduler) against Algorithm 2 of Lu et
    al. (2022) written out in ~20 lines (``samplers.reference``), on grids ending at
    sigma > 0 (the paper's setting)."""
    mix = GaussianMixture.random(3, 4, seed=0)
    den = mix.denoiser(process)
    x = _noise(16, 3, 1) * float(process.prior_std())
    for kind in ("logsnr", "edm", "flow"):
        ts = time_grid(process, steps, kind)
        fast = sample_dpmpp_2m(den, x, ts, lower_order_final=False, disable=True)
        torch.testing.assert_close(fast, dpmpp_2m_reference(den, x, ts), rtol=1e-10,
                                   atol=1e-10)


# --------------------------------------------------------------------------- iPNDM
def test_ipndm_order_one_is_euler_and_higher_orders_converge() -> None:
    p = VPLinear()
    mix = GaussianMixture.random(2, 3, seed=3)
    den = mix.denoiser(p)
    x = _noise(64, 2, 0)
    ts = default_grid(p, 12)
    torch.testing.assert_close(sample_ipndm(den, x, ts, order=1, disable=True),
                               sample_euler(den, x, ts, disable=True), rtol=1e-12, atol=1e-12)
    ref = reference_pf_ode(mix, p, x, p.t_max)
    errs = {o: [_rmse(sample_ipndm(den, x, default_grid(p, n), order=o, disable=True), ref)
                for n in (40, 80)] for o in (1, 4)}
    for o, (e40, e80) in errs.items():
        assert e80 < e40, (o, errs)
    assert errs[4][1] < 0.2 * errs[1][1], errs  # multistep: far more accurate than Euler
    with pytest.raises(ValueError, match="order"):
        sample_ipndm(den, x, ts, order=5)


# --------------------------------------------------------------------------- GITS
def test_shortest_path_is_the_brute_force_optimum() -> None:
    g = torch.Generator().manual_seed(0)
    m = 8
    cost = torch.rand(m + 1, m + 1, generator=g, dtype=F64)
    cost = torch.where(torch.arange(m + 1)[None, :] > torch.arange(m + 1)[:, None], cost,
                       torch.full_like(cost, math.inf))
    for steps in (1, 2, 3, 5, m):
        best = min((sum(float(cost[a, b]) for a, b in zip((0,) + mid, mid + (m,))), (0,) + mid
                    + (m,)) for mid in itertools.combinations(range(1, m), steps - 1))
        path = shortest_path(cost, steps)
        assert len(path) == steps + 1 and path[0] == 0 and path[-1] == m
        total = sum(float(cost[a, b]) for a, b in zip(path[:-1], path[1:]))
        assert total == pytest.approx(best[0], rel=1e-12)
    with pytest.raises(ValueError):
        shortest_path(cost, m + 1)


def test_gits_costs_and_grid() -> None:
    """Teacher states are accurate (one first-order step between neighbouring candidates
    costs little, a jump over the whole range a lot); the grid runs from t_max to sigma = 0
    through candidate times; a sampler on it beats the same sampler on the flow grid's
    candidates' uniform subsequence at 5 steps on held-out noise."""
    p = VPDiscrete.linear()
    mix = GaussianMixture.random(4, 5, seed=4)
    den = mix.denoiser(p)
    cal = _noise(128, 4, 5)
    times, cost = gits_cost_matrix(den, cal, candidates=40)
    assert times.numel() == 41 and float(times[-1]) == 0.0 and float(times[0]) == 1.0
    lower = torch.ones_like(cost, dtype=torch.bool).tril()
    assert bool(torch.isinf(cost[lower]).all()) and bool(torch.isfinite(cost[~lower]).all())
    assert float(cost[0, 40]) > 10 * float(cost.diagonal(1).max())
    ts = gits_grid(den, cal, 5, candidates=40)
    assert ts.numel() == 6 and float(ts[0]) == 1.0 and float(ts[-1]) == 0.0
    assert all(bool((times - t).abs().min() < 1e-12) for t in ts)
    x = _noise(512, 4, 6)
    ref = reference_pf_ode(mix, p, x, 1.0, rtol=1e-9, atol=1e-9)
    gits_err = _rmse(sample_unipc(den, x, ts, disable=True), ref)
    flow_err = _rmse(sample_unipc(den, x, times[::8], disable=True), ref)
    assert gits_err < flow_err, (gits_err, flow_err)


# --------------------------------------------------------------------------- bespoke form
@pytest.mark.parametrize("name,hyper", [("ddim", {}), ("euler", {}), ("dpmpp_2m", {}),
                                        ("dpmpp_3m", {}), ("unipc", {}),
                                        ("unipc", {"variant": "bh1"}), ("ipndm", {})])
@pytest.mark.parametrize("process", [VPDiscrete.linear(), VE()], ids=["disc", "ve"])
def test_from_sampler_reproduces_the_sampler(name, hyper, process) -> None:
    mix = GaussianMixture.random(3, 3, seed=0)
    den = mix.denoiser(process)
    x = _noise(16, 3, 2) * float(process.prior_std())
    for steps in (1, 3, 8):
        ts = default_grid(process, steps)
        sol = BespokeSolver.from_sampler(name, process, ts, **hyper)
        assert sol.meta["base"] == name and sol.steps == steps
        ref = get_sampler(name).run(den, x, ts, disable=True, **hyper)
        torch.testing.assert_close(sample_bespoke(den, x, sol.grid, solver=sol, disable=True),
                                   ref, rtol=1e-10, atol=1e-10)


def test_from_sampler_refuses_two_evaluation_samplers_and_sample_bespoke_checks_ts() -> None:
    p = VPLinear()
    with pytest.raises(ValueError, match="only one-evaluation-per-step"):
        BespokeSolver.from_sampler("heun", p, default_grid(p, 3))
    sol = BespokeSolver.from_sampler("dpmpp_2m", p, default_grid(p, 3))
    den = GaussianMixture.random(2, 2, seed=0).denoiser(p)
    x = _noise(4, 2, 0)
    a = sample_bespoke(den, x, solver=sol, disable=True)
    b = sample_bespoke(den, x, sol, disable=True)  # the solver in place of ts
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="is not this bespoke solver's grid"):
        sample_bespoke(den, x, default_grid(p, 4), solver=sol)
    with pytest.raises(ValueError, match="needs solver="):
        sample_bespoke(den, x, default_grid(p, 3))


def test_from_sampler_on_a_centred_process() -> None:
    p = OUVE()
    mix = GaussianMixture.random(2, 2, seed=1)
    den = mix.denoiser(p)
    y = _noise(8, 2, 3)
    x = p.prior_sample(y.shape, y=y, generator=torch.Generator().manual_seed(0))
    ts = default_grid(p, 6)
    sol = BespokeSolver.from_sampler("unipc", p, ts)
    torch.testing.assert_close(sol.sample(den, x, cond={"y": y}, disable=True),
                               sample_unipc(den, x, ts, cond={"y": y}, disable=True))


# --------------------------------------------------------------------------- one call
@pytest.fixture(scope="module")
def best_fit():
    p = VPDiscrete.linear()
    mix = GaussianMixture.random(4, 6, seed=7)
    den = mix.denoiser(p)
    cfg = SolverSearch(calibration=768, holdout=0.25, iters=60, batch_size=256,
                       gits_samples=128, gits_candidates=40, fits=("unipc", "unipc:times"))
    sol = fit_best_solver(den, (4,), 4, config=cfg, generator=torch.Generator().manual_seed(0),
                          disable=True)
    return p, mix, den, sol


def test_fit_best_solver_never_worse_than_generic_on_held_out(best_fit) -> None:
    """The winner is the best held-out candidate, and every training-free candidate (all
    generic solvers on every grid, GITS included) was scored on the held-out noise."""
    p, mix, den, sol = best_fit
    scores = sol.meta["held_out_rmse"]
    generic = {k: v for k, v in scores.items() if not k.startswith("bespoke")}
    cfg = SolverSearch()
    assert cfg.fits == ("unipc",)
    assert len(generic) == len(cfg.generic) * (len(cfg.grids) + len(cfg.shifts))
    assert {k.split("/", 1)[1] for k in generic} >= {"gits", "flow", "flow@2", "uniform"}
    assert scores[sol.meta["choice"]] == min(scores.values()) <= min(generic.values())
    assert sol.meta["best_generic"] == min(generic, key=generic.__getitem__)
    assert sol.meta["calibration_samples"] + sol.meta["held_out_samples"] == 768
    assert {k.split("/")[0] for k in scores if k.startswith("bespoke_")} == \
        {"bespoke_unipc", "bespoke_unipc:times"}


def test_fit_best_solver_beats_the_default_on_fresh_noise(best_fit) -> None:
    """On noise it never saw, the chosen 4-step solver is more accurate than DPM-Solver++(2M)
    on the default grid (measured: about 3x)."""
    p, mix, den, sol = best_fit
    x = _noise(1024, 4, 99)
    ref = reference_pf_ode(mix, p, x, 1.0, rtol=1e-9, atol=1e-9)
    ours = _rmse(sample_bespoke(den, x, solver=sol, disable=True), ref)
    default = _rmse(sample_dpmpp_2m(den, x, default_grid(p, 4), disable=True), ref)
    assert ours < 0.7 * default, (ours, default)


def test_solver_search_validates() -> None:
    with pytest.raises(ValueError, match="holdout"):
        SolverSearch(holdout=1.0)
    with pytest.raises(ValueError, match="unknown generic"):
        SolverSearch(generic=("magic",))
    with pytest.raises(ValueError, match="unknown fit"):
        SolverSearch(fits=("ipndm",))
    with pytest.raises(ValueError, match="unknown fit"):
        SolverSearch(fits=("unipc:coefs",))
    with pytest.raises(ValueError, match="nothing to search"):
        SolverSearch(generic=(), fits=())
