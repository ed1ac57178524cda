"""Sampler benchmark on exact test beds: polydiff's samplers against diffusers' schedulers.

Problems are Gaussian mixtures (full or diagonal covariance) and mixtures of low-rank Gaussians
in 8-64 dimensions with 6-12 components, under DDPM's discrete linear-beta VP schedule (which
every diffusers scheduler supports). Each problem is declared a *tuning* problem (polydiff's
grid defaults and :class:`~polydiff.core.samplers.bespoke.SolverSearch` defaults were chosen
on these) or a *held-out* one (never looked at before the final run). For each NFE in
{5, 10, 20, 50} every deterministic sampler starts from the same evaluation noise at the same
noise level (diffusers' first timestep 999, i.e. t = 1) and is scored by the RMS distance of
its output to the exact probability-flow ODE endpoint (``reference_pf_ode``, ~1e-9 accurate).
Both libraries call the same exact denoiser.

* diffusers: DDIM, Euler, Heun, DPM-Solver++ 2M/3M, UniPC, DEIS with their defaults, again with
  Karras sigmas (and uniform-lambda steps); ``diffusers_best`` is the best of them on the
  evaluation noise.
* polydiff, training-free: DDIM, Euler, Heun, DPM-Solver++ 2M/3M, UniPC (bh1, bh2), iPNDM
  (orders 3, 4) on fixed grids (log-SNR, EDM, uniform-to-zero, flow with timestep shifts)
  and on the GITS grid (dynamic programming over teacher trajectories of calibration noise).
* polydiff, one call: :func:`~polydiff.core.samplers.bespoke.fit_best_solver` with its default
  :class:`SolverSearch` (at NFE 5 and 10 with bespoke fits, at 20 and 50 training-free only),
  using calibration noise disjoint from the evaluation noise and choosing on a held-out part
  of it.

Ratios are polydiff / diffusers_best RMSE (lower is better): ``best`` over every polydiff
entry, ``generic`` over training-free ones only, ``one_call`` for fit_best_solver alone.
Stochastic samplers are scored by a sliced Wasserstein-2 distance to fresh data samples, and
every sampler's per-step overhead is measured with a model that costs nothing. ``--grids``
instead measures grid kinds per process family (the evidence for ``default_grid``).

    uv run python tools/bench/samplers.py --out tools/bench/results/samplers.json
    uv run python tools/bench/samplers.py --quick          # 2 problems, smaller batches
    uv run python tools/bench/samplers.py --grids --out tools/bench/results/samplers_grids.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

from polydiff.core.denoiser import Denoiser, ModelDenoiser
from polydiff.core.grids import default_grid, time_grid
from polydiff.core.processes import (
    EDM,
    VE,
    LinearInterpolant,
    TrigInterpolant,
    VPCosine,
    VPDiscrete,
    VPLinear,
)
from polydiff.core.samplers.bespoke import SolverSearch, fit_best_solver
from polydiff.core.samplers.gits import gits_grid
from polydiff.core.samplers.registry import get_sampler
from polydiff.core.testbeds import GaussianMixture, LowRankMixture, reference_pf_ode

NFES = (5, 10, 20, 50)
N_TRAIN = 1000


# --------------------------------------------------------------------------- problems
@dataclass(frozen=True)
class Problem:
    name: str
    role: str  # "tuning" or "held-out"
    make: Callable[[], GaussianMixture]


PROBLEMS = [
    # tuning: the grid defaults, the SolverSearch defaults and the timestep shifts were
    # chosen by looking at these (and at two more mixtures, seeds 101/102, in --grids)
    Problem("gmm-d8-k6", "tuning", lambda: GaussianMixture.random(8, 6, seed=11)),
    Problem("gmm-d32-k6", "tuning", lambda: GaussianMixture.random(32, 6, seed=12)),
    Problem("gmm-d8-k12", "tuning", lambda: GaussianMixture.random(8, 12, seed=13)),
    # held-out: run once, with the final code, never tuned on
    Problem("gmm-d16-k10", "held-out", lambda: GaussianMixture.random(16, 10, seed=21)),
    Problem("gmm-d64-k8", "held-out", lambda: GaussianMixture.random(64, 8, seed=22)),
    Problem("gmm-diag-d24-k12", "held-out",
            lambda: GaussianMixture.random(24, 12, seed=23, cov="diag")),
    Problem("lowrank-d48-r4-k8", "held-out",
            lambda: LowRankMixture.random(48, rank=4, n_components=8, seed=24)),
    Problem("gmm-d12-k7-wide", "held-out",
            lambda: GaussianMixture.random(12, 7, seed=25, mean_scale=2.5,
                                           std_range=(0.1, 1.0))),
]
QUICK = ("gmm-d8-k6", "gmm-d16-k10")


def rmse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).pow(2).mean().sqrt())


# --------------------------------------------------------------------------- polydiff side
#: training-free entries: (registry name, hyperparameters)
POLY_SOLVERS = {
    "ddim": ("ddim", {}), "euler": ("euler", {}), "heun": ("heun", {}),
    "dpmpp_2m": ("dpmpp_2m", {}), "dpmpp_3m": ("dpmpp_3m", {}),
    "unipc_bh2": ("unipc", {}), "unipc_bh1": ("unipc", {"variant": "bh1"}),
    "ipndm": ("ipndm", {}), "ipndm3": ("ipndm", {"order": 3}),
}
SHIFTS = SolverSearch().shifts


def poly_grids(process: VPDiscrete, steps: int) -> dict[str, torch.Tensor]:
    """Fixed grids, all from t = 1 (diffusers' timestep 999) to sigma = 0."""
    out = {
        "logsnr": time_grid(process, steps, "logsnr", t_start=1.0, final_zero=True),
        "edm": time_grid(process, steps, "edm", t_start=1.0, final_zero=True),
        "uniform": time_grid(process, steps, "uniform", t_start=1.0, t_end=0.0),
        "flow": default_grid(process, steps, t_start=1.0),
    }
    for s in SHIFTS:
        out[f"flow@{s:g}"] = default_grid(process, steps, t_start=1.0, shift=s)
    return out


# --------------------------------------------------------------------------- diffusers side
def diffusers_configs() -> dict[str, tuple[str, dict]]:
    base = {"num_train_timesteps": N_TRAIN, "beta_schedule": "linear",
            "beta_start": 1e-4, "beta_end": 0.02}
    return {
        "DDIM": ("DDIMScheduler", {**base, "timestep_spacing": "trailing"}),
        "Euler": ("EulerDiscreteScheduler", dict(base)),
        "Euler-karras": ("EulerDiscreteScheduler", {**base, "use_karras_sigmas": True}),
        "Heun": ("HeunDiscreteScheduler", dict(base)),
        "Heun-karras": ("HeunDiscreteScheduler", {**base, "use_karras_sigmas": True}),
        "DPM++2M": ("DPMSolverMultistepScheduler", {**base, "solver_order": 2}),
        "DPM++2M-karras": ("DPMSolverMultistepScheduler",
                           {**base, "solver_order": 2, "use_karras_sigmas": True}),
        "DPM++2M-lu": ("DPMSolverMultistepScheduler",
                       {**base, "solver_order": 2, "use_lu_lambdas": True}),
        "DPM++3M": ("DPMSolverMultistepScheduler", {**base, "solver_order": 3}),
        "DPM++3M-karras": ("DPMSolverMultistepScheduler",
                           {**base, "solver_order": 3, "use_karras_sigmas": True}),
        "UniPC": ("UniPCMultistepScheduler", dict(base)),
        "UniPC-karras": ("UniPCMultistepScheduler", {**base, "use_karras_sigmas": True}),
        "DEIS": ("DEISMultistepScheduler", dict(base)),
        "DEIS-karras": ("DEISMultistepScheduler", {**base, "use_karras_sigmas": True}),
    }


def make_scheduler(cls_name: str, kwargs: dict):
    import diffusers

    return getattr(diffusers, cls_name)(**kwargs)


def diffusers_steps(cls_name: str, nfe: int) -> int:
    return (nfe + 1) // 2 if cls_name == "HeunDiscreteScheduler" else nfe


def run_diffusers(sched, eps_model: Callable, noise: torch.Tensor, steps: int,
                  stochastic_seed: int | None = None) -> tuple[torch.Tensor, int]:
    sched.set_timesteps(steps)
    x = noise * sched.init_noise_sigma
    nfe = 0
    gen = None if stochastic_seed is None else torch.Generator().manual_seed(stochastic_seed)
    for t in sched.timesteps:
        xin = sched.scale_model_input(x, t)
        eps = eps_model(xin, t)
        nfe += 1
        kw = {"generator": gen} if gen is not None else {}
        x = sched.step(eps, t, x, **kw).prev_sample
    return x, nfe


def diffusers_eps_model(mixture: GaussianMixture, process: VPDiscrete):
    def eps_model(x: torch.Tensor, timestep) -> torch.Tensor:
        k = torch.as_tensor(timestep, dtype=torch.float64).reshape(-1)[:1]
        t = ((k + 1.0) / N_TRAIN).expand(x.shape[0])
        return mixture.x0_eps(x, t, process)[1].to(x.dtype)

    return eps_model


# --------------------------------------------------------------------------- metrics
def sliced_w2(a: torch.Tensor, b: torch.Tensor, n_proj: int = 256, seed: int = 0) -> float:
    """Sliced Wasserstein-2 distance between two equal-size samples (Rabin et al. 2011)."""
    g = torch.Generator().manual_seed(seed)
    d = a.shape[1]
    p = torch.randn(d, n_proj, generator=g, dtype=torch.float64)
    p = p / p.norm(dim=0, keepdim=True)
    pa, _ = (a.double() @ p).sort(0)
    pb, _ = (b.double() @ p).sort(0)
    return float((pa - pb).pow(2).mean().sqrt())


# --------------------------------------------------------------------------- overhead
def overhead(process: VPDiscrete, dim: int, batch: int, steps: int = 10,
             repeats: int = 3) -> dict[str, dict[str, float]]:
    """Per-step time of each sampler with a free model (returns a preallocated tensor)."""
    zeros = torch.zeros(batch, dim)

    def free(x, t):
        return zeros

    den = ModelDenoiser(free, process, "epsilon")
    noise = torch.randn(batch, dim, generator=torch.Generator().manual_seed(0))
    out: dict[str, dict[str, float]] = {"polydiff": {}, "diffusers": {}}

    def best(fn) -> float:
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return min(ts)

    for name, (reg, kw) in POLY_SOLVERS.items():
        spec = get_sampler(reg)
        n = spec.steps_for_nfe(steps)
        # grid construction is part of the sampler call cost in diffusers (set_timesteps)
        sec = best(lambda spec=spec, n=n, kw=kw: spec.fn(
            den, noise, default_grid(process, n, t_start=1.0), disable=True, **kw))
        out["polydiff"][name] = 1e6 * sec / n
    from polydiff.core.samplers.bespoke import BespokeSolver

    solver = BespokeSolver.from_sampler("unipc", process, default_grid(process, steps))
    sec = best(lambda: solver.sample(den, noise, disable=True))
    out["polydiff"]["bespoke"] = 1e6 * sec / steps
    for name, (cls_name, kw) in diffusers_configs().items():
        if "karras" in name or "lu" in name:
            continue
        sched = make_scheduler(cls_name, kw)
        n = diffusers_steps(cls_name, steps)
        sec = best(lambda sched=sched, n=n: run_diffusers(sched, free, noise, n))
        sched.set_timesteps(n)
        out["diffusers"][name] = 1e6 * sec / len(sched.timesteps)
    return out


# --------------------------------------------------------------------------- main
def evaluate_problem(prob: Problem, batch: int, n_cal: int, search: SolverSearch,
                     fit_nfes: tuple[int, ...], log) -> dict:
    process = VPDiscrete.linear(N_TRAIN)
    mix = prob.make()
    den: Denoiser = mix.denoiser(process)
    g = torch.Generator().manual_seed(1234)
    noise = torch.randn(batch, mix.dim, generator=g, dtype=torch.float64)
    cal = torch.randn(n_cal, mix.dim, generator=g, dtype=torch.float64)  # disjoint
    t0 = time.process_time()
    ref = reference_pf_ode(mix, process, noise, 1.0, rtol=1e-10, atol=1e-10)
    cal_ref = reference_pf_ode(mix, process, cal, 1.0, rtol=1e-9, atol=1e-9)
    out: dict = {"role": prob.role, "dim": mix.dim, "components": mix.n_components,
                 "kind": type(mix).__name__, "reference_cpu_s": time.process_time() - t0}
    eps_model = diffusers_eps_model(mix, process)
    noise32 = noise.float()
    for nfe in NFES:
        entry: dict = {"polydiff": {}, "diffusers": {}, "one_call": None}
        tc = time.process_time()
        grids = poly_grids(process, nfe)
        grids["gits"] = gits_grid(den, cal[: search.gits_samples], nfe, t_start=1.0,
                                  candidates=max(search.gits_candidates, nfe))
        entry["gits_cpu_s"] = time.process_time() - tc
        entry["gits_grid"] = grids["gits"].tolist()
        for sname, (reg, kw) in POLY_SOLVERS.items():
            spec = get_sampler(reg)
            for gname, ts in grids.items():
                if spec.evals_per_step > 1:
                    if gname == "gits":
                        continue
                    ts = poly_grids(process, spec.steps_for_nfe(nfe))[gname]
                x = spec.fn(den, noise, ts, disable=True, **kw)
                entry["polydiff"][f"{sname}/{gname}"] = rmse(x, ref)
        # the one call: fitted on calibration noise only, chosen on a held-out part of it
        tc = time.process_time()
        cfg = search if nfe in fit_nfes else SolverSearch(
            **{**search.__dict__, "fits": ()})
        solver = fit_best_solver(den, (mix.dim,), nfe, config=cfg, x_cal=cal, reference=cal_ref,
                                 t_start=1.0, generator=torch.Generator().manual_seed(nfe),
                                 disable=True)
        one = rmse(solver.sample(den, noise, disable=True), ref)
        entry["polydiff"]["one_call"] = one
        entry["one_call"] = {
            "rmse": one, "choice": solver.meta["choice"], "cpu_s": time.process_time() - tc,
            "bespoke_fitted": bool(cfg.fits), "best_generic": solver.meta["best_generic"],
            "held_out_rmse": {k: v for k, v in solver.meta["held_out_rmse"].items()
                              if k == solver.meta["choice"] or k.startswith("bespoke")
                              or k == solver.meta["best_generic"]},
            "grid": solver.grid.tolist()}
        for name, (cls_name, kw) in diffusers_configs().items():
            sched = make_scheduler(cls_name, kw)
            x, used = run_diffusers(sched, eps_model, noise32, diffusers_steps(cls_name, nfe))
            if used > nfe:
                raise RuntimeError(f"{name} used {used} > {nfe} evaluations")
            entry["diffusers"][name] = rmse(x, ref)
        pb = min(entry["polydiff"].items(), key=lambda kv: kv[1])
        gen = min(((k, v) for k, v in entry["polydiff"].items() if k != "one_call"),
                  key=lambda kv: kv[1])
        fixed = min(((k, v) for k, v in entry["polydiff"].items()
                     if k != "one_call" and not k.endswith("/gits")), key=lambda kv: kv[1])
        db = min(entry["diffusers"].items(), key=lambda kv: kv[1])
        entry["polydiff_best"] = {"sampler": pb[0], "rmse": pb[1]}
        entry["polydiff_best_training_free"] = {"sampler": gen[0], "rmse": gen[1]}
        entry["polydiff_best_fixed_grid"] = {"sampler": fixed[0], "rmse": fixed[1]}
        entry["diffusers_best"] = {"scheduler": db[0], "rmse": db[1]}
        entry["ratio"] = {"best": pb[1] / db[1], "generic": gen[1] / db[1],
                          "fixed_grid": fixed[1] / db[1], "one_call": one / db[1]}
        out[str(nfe)] = entry
        r = entry["ratio"]
        log(f"  NFE {nfe:>2}: diffusers {db[0]:<15} {db[1]:.3e} | best {pb[0]:<22} "
            f"{r['best']:.2f} | generic {gen[0]:<22} {r['generic']:.2f} | one call "
            f"{solver.meta['choice']:<26} {r['one_call']:.2f}")
    out["stochastic"] = stochastic(mix, process, den, eps_model, min(batch, 1024))
    return out


def _run_problem(name: str, batch: int, n_cal: int, search: SolverSearch,
                 fit_nfes: tuple[int, ...], quiet_stdout: bool) -> tuple[str, dict]:
    """One problem (in a worker process with ``--jobs``)."""
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    prob = {p.name: p for p in PROBLEMS}[name]

    def log(msg: str) -> None:
        print(f"[{name}] {msg.strip()}", file=sys.stderr if quiet_stdout else sys.stdout,
              flush=True)

    log(f"== {name} ({prob.role})")
    return name, evaluate_problem(prob, batch, n_cal, search, fit_nfes, log)


def stochastic(mix: GaussianMixture, process: VPDiscrete, den: Denoiser, eps_model,
               batch: int) -> dict:
    """Sliced W2 to fresh data samples for the stochastic samplers (NFE 10, 20, 50)."""
    g = torch.Generator().manual_seed(99)
    data = mix.sample(batch, generator=g)
    floor = sliced_w2(mix.sample(batch, generator=g), data)
    out: dict = {"metric": "sliced_w2", "data_vs_data": floor}
    for nfe in (10, 20, 50):
        noise = torch.randn(batch, mix.dim, generator=torch.Generator().manual_seed(nfe))
        row = {}
        for name in ("ddpm", "dpmpp_2m_sde"):
            spec = get_sampler(name)
            row[f"polydiff/{name}"] = sliced_w2(
                spec.run(den, noise, spec.grid(process, nfe), seed=1, disable=True), data)
        row["polydiff/ddim_eta1"] = sliced_w2(get_sampler("ddim").run(
            den, noise, time_grid(process, nfe, "uniform", final_zero=True), eta=1.0, seed=1,
            disable=True), data)
        for name, cls_name, kw in (
            ("diffusers/DDPM", "DDPMScheduler", {"timestep_spacing": "trailing"}),
            ("diffusers/SDE-DPM++2M", "DPMSolverMultistepScheduler",
             {"algorithm_type": "sde-dpmsolver++"}),
            ("diffusers/EulerAncestral", "EulerAncestralDiscreteScheduler", {}),
        ):
            sched = make_scheduler(cls_name, {"num_train_timesteps": N_TRAIN,
                                              "beta_schedule": "linear", **kw})
            x, _ = run_diffusers(sched, eps_model, noise, nfe, stochastic_seed=1)
            row[name] = sliced_w2(x, data)
        out[str(nfe)] = row
    return out


# --------------------------------------------------------------------------- grid study
GRID_PROCESSES = {
    "VPDiscrete.linear": lambda: VPDiscrete.linear(1000),
    "VPDiscrete.scaled_linear": lambda: VPDiscrete.scaled_linear(1000),
    "VPLinear": VPLinear, "VPCosine": VPCosine, "VE": VE, "EDM": EDM,
    "LinearInterpolant": LinearInterpolant, "TrigInterpolant": TrigInterpolant,
}


def grid_study(batch: int, log) -> dict:
    """Best RMSE of DPM-Solver++ 2M/3M and UniPC bh1/bh2 per grid kind, process family and
    step count on two tuning mixtures (seeds 101, 102): the evidence for ``default_grid``."""
    mixes = [GaussianMixture.random(8, 6, seed=101), GaussianMixture.random(16, 8, seed=102)]
    solvers = [("dpmpp_2m", {}), ("dpmpp_3m", {}), ("unipc", {}), ("unipc", {"variant": "bh1"})]
    out: dict = {}
    for fam, make in GRID_PROCESSES.items():
        p = make()
        z = p.t_zero is not None
        rows: dict[str, dict[str, list[float]]] = {}
        for mix in mixes:
            x = p.prior_sample((batch, mix.dim), generator=torch.Generator().manual_seed(0),
                               dtype=torch.float64)
            ref = reference_pf_ode(mix, p, x, p.t_max, None if z else p.t_min, rtol=1e-10,
                                   atol=1e-10)
            den = mix.denoiser(p)
            for n in (5, 10, 20):
                grids = {k + ("+zero" if z else ""): time_grid(p, n, k, final_zero=z)
                         for k in ("logsnr", "edm", "quadratic")}
                if z:
                    grids["uniform-to-zero"] = time_grid(p, n, "uniform", t_end=p.t_zero)
                else:
                    grids["uniform"] = time_grid(p, n, "uniform")
                grids["default (flow)"] = default_grid(p, n)
                for gk, ts in grids.items():
                    best = min(rmse(get_sampler(s).fn(den, x, ts, disable=True, **kw), ref)
                               for s, kw in solvers)
                    rows.setdefault(gk, {}).setdefault(str(n), []).append(best)
        geo = {gk: math.exp(sum(math.log(v) for vs in d.values() for v in vs)
                            / sum(len(vs) for vs in d.values())) for gk, d in rows.items()}
        out[fam] = {"rmse": rows, "geomean": geo}
        top = min(geo, key=geo.__getitem__)
        log(f"{fam:26s} " + "  ".join(f"{k} {v:.3f}" for k, v in geo.items()) + f"  -> {top}")
    return out


def machine() -> dict:
    return {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__,
            "note": "shared CPU machine (2 cores, other jobs running): wall times are "
                    "inflated; cpu_s is this process's CPU time"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--quick", action="store_true", help="2 problems, smaller batches")
    ap.add_argument("--grids", action="store_true",
                    help="measure grid kinds per process family instead")
    ap.add_argument("--problems", type=str, default=None,
                    help="comma-separated problem names (default: all)")
    ap.add_argument("--batch", type=int, default=None,
                    help="evaluation batch (default 2048; quick 512)")
    ap.add_argument("--cal", type=int, default=None,
                    help="calibration samples (default: SolverSearch's 2048; quick 768)")
    ap.add_argument("--iters", type=int, default=None,
                    help="Adam iterations per bespoke fit (default: SolverSearch's)")
    ap.add_argument("--out", type=str, default=None, help="also write the JSON to this file")
    ap.add_argument("--no-bespoke", action="store_true", help="training-free only")
    ap.add_argument("--jobs", type=int, default=1,
                    help="problems evaluated in parallel processes (default 1)")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr if args.json else sys.stdout, flush=True)

    t0, c0 = time.time(), time.process_time()
    if args.grids:
        res: dict = {"grid_study": grid_study(args.batch or 256, log)}
    else:
        search = SolverSearch()
        if args.quick:
            search = SolverSearch(calibration=1024, iters=150)
        if args.iters is not None:
            search = SolverSearch(**{**search.__dict__, "iters": args.iters})
        n_cal = args.cal or search.calibration
        batch = args.batch or (512 if args.quick else 2048)
        names = args.problems.split(",") if args.problems else \
            (QUICK if args.quick else [p.name for p in PROBLEMS])
        fit_nfes = () if args.no_bespoke else (5, 10)
        res = {"process": "VPDiscrete.linear(1000) (DDPM betas 1e-4..0.02)", "t_start": 1.0,
               "batch": batch, "calibration": n_cal, "nfes": list(NFES),
               "search": {k: list(v) if isinstance(v, tuple) else v
                          for k, v in search.__dict__.items()},
               "bespoke_nfes": list(fit_nfes), "problems": {}}
        jobs = [(name, batch, n_cal, search, fit_nfes, args.json) for name in names]
        if args.jobs > 1:
            import multiprocessing as mp

            with mp.get_context("spawn").Pool(min(args.jobs, len(jobs))) as pool:
                done = dict(pool.starmap(_run_problem, jobs))
        else:
            done = dict(_run_problem(*job) for job in jobs)
        res["problems"] = {name: done[name] for name in names}
        res["overhead_us_per_step"] = overhead(VPDiscrete.linear(N_TRAIN), 64, 256, repeats=5)
        targets: dict = {"nfe5_nfe10_at_most_0.5": {}, "nfe20_nfe50_at_most_1.0": {}}
        for pname, per in res["problems"].items():
            for nfe in ("5", "10", "20", "50"):
                key, bound = (("nfe5_nfe10_at_most_0.5", 0.5) if nfe in ("5", "10")
                              else ("nfe20_nfe50_at_most_1.0", 1.0))
                targets[key][f"{pname}/{nfe}"] = per[nfe]["ratio"]["best"] <= bound
        res["targets"] = {k: {"met": all(v.values()), "cases": v} for k, v in targets.items()}
        try:
            import diffusers

            res["diffusers"] = diffusers.__version__
        except ImportError:  # pragma: no cover
            pass
    import resource

    res["machine"] = machine()
    res["wall_s"] = time.time() - t0
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    res["cpu_s"] = time.process_time() - c0 + kids.ru_utime + kids.ru_stime
    text = json.dumps(res, indent=None if args.json else 1, default=float)
    if args.out:
        with open(args.out + ".tmp", "w") as fh:
            fh.write(text)
        os.replace(args.out + ".tmp", args.out)
    if args.json:
        print(text)
    elif not args.grids:
        for k, v in res["targets"].items():
            log(f"target {k}: {'met' if v['met'] else 'NOT met'} "
                f"({sum(v['cases'].values())}/{len(v['cases'])} cases)")
        log(f"{res['cpu_s'] / 60:.1f} CPU minutes, {res['wall_s'] / 60:.1f} wall minutes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
