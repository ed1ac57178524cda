"""Sampler benchmark on exact test beds: polydiff's samplers against diffusers' schedulers.

For each problem (Gaussian mixtures and mixtures of low-rank Gaussians in several dimensions,
under DDPM's discrete linear-beta VP schedule, which every diffusers scheduler supports) and
each NFE in {5, 10, 20, 50}, every deterministic sampler starts from the same noise at the
same noise level (diffusers' first timestep 999, i.e. t = 1) and is scored by the RMS distance
of its output to the exact probability-flow ODE endpoint (``reference_pf_ode``, ~1e-9
accurate). Both libraries call the same exact denoiser. Stochastic samplers are scored by a
sliced Wasserstein-2 distance to fresh data samples, and every sampler's per-step overhead is
measured with a model that costs nothing.

    uv run python tools/bench/samplers.py            # table
    uv run python tools/bench/samplers.py --json     # one JSON object
    uv run python tools/bench/samplers.py --quick    # fewer problems, smaller batch

diffusers schedulers are run with their default configuration, the timestep spacing set so the
first step starts at t=999 where the default does not (DDIM: "trailing"), and again with
Karras sigmas / uniform-lambda steps where they offer them; ``diffusers_best`` is the best of
all of those. polydiff's entries include its samplers on the log-SNR, EDM and uniform grids
and bespoke solvers (:func:`polydiff.core.samplers.bespoke.fit_bespoke`) fitted on a
calibration batch of noise disjoint from the evaluation noise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

from polydiff.core.denoiser import Denoiser, ModelDenoiser
from polydiff.core.grids import time_grid
from polydiff.core.processes import VPDiscrete
from polydiff.core.samplers import (
    sample_ddim,
    sample_ddpm,
    sample_dpmpp_2m,
    sample_dpmpp_2m_sde,
    sample_dpmpp_3m,
    sample_euler,
    sample_heun,
    sample_unipc,
)
from polydiff.core.testbeds import GaussianMixture, LowRankMixture, reference_pf_ode

NFES = (5, 10, 20, 50)
N_TRAIN = 1000


# --------------------------------------------------------------------------- problems
def problems(quick: bool) -> dict[str, GaussianMixture]:
    out = {
        "gmm-d2-k8": GaussianMixture.random(2, 8, seed=1, cov="full"),
        "gmm-d16-k6": GaussianMixture.random(16, 6, seed=2, cov="full"),
        "lowrank-d64-r4-k5": LowRankMixture.random(64, rank=4, n_components=5, seed=3),
    }
    if not quick:
        out["gmm-d64-k10"] = GaussianMixture.random(64, 10, seed=4, cov="full")
        out["lowrank-d256-r8-k8"] = LowRankMixture.random(256, rank=8, n_components=8, seed=5)
    return out


def rmse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).pow(2).mean().sqrt())


# --------------------------------------------------------------------------- polydiff side
@dataclass
class PolySampler:
    name: str
    fn: Callable[..., torch.Tensor]
    steps_for_nfe: Callable[[int], int]
    kwargs: dict


def _n(nfe: int) -> int:
    return nfe


POLY_SAMPLERS = [
    PolySampler("ddim", sample_ddim, _n, {}),
    PolySampler("euler", sample_euler, _n, {}),
    PolySampler("heun", sample_heun, lambda nfe: (nfe + 1) // 2, {}),
    PolySampler("dpmpp_2m", sample_dpmpp_2m, _n, {}),
    PolySampler("dpmpp_3m", sample_dpmpp_3m, _n, {}),
    PolySampler("unipc_bh2_3", sample_unipc, _n, {"order": 3, "variant": "bh2"}),
    PolySampler("unipc_bh1_3", sample_unipc, _n, {"order": 3, "variant": "bh1"}),
]
GRIDS = ("logsnr", "edm", "uniform")


def poly_grid(process: VPDiscrete, steps: int, kind: str) -> torch.Tensor:
    return time_grid(process, steps, kind, t_start=1.0, t_end=process.t_min, final_zero=True)


# --------------------------------------------------------------------------- diffusers side
def diffusers_configs() -> dict[str, tuple[str, dict]]:
    base = {"num_train_timesteps": N_TRAIN, "beta_schedule": "linear",
            "beta_start": 1e-4, "beta_end": 0.02}
    cfg: dict[str, tuple[str, dict]] = {
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
    return cfg


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

    for s in POLY_SAMPLERS:
        n = s.steps_for_nfe(steps)
        grid = poly_grid(process, n, "logsnr")
        # grid construction is part of the sampler call cost in diffusers (set_timesteps)
        sec = best(lambda s=s, n=n: s.fn(den, noise, poly_grid(process, n, "logsnr"),
                                         disable=True, **s.kwargs))
        out["polydiff"][s.name] = 1e6 * sec / (grid.numel() - 1)
    # a bespoke solver's rollout (coefficients from a 1-iteration fit; cost does not depend on
    # their values)
    from polydiff.core.samplers.bespoke import fit_bespoke

    mix = GaussianMixture.random(dim, 2, seed=0)
    cal = torch.randn(8, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    solver = fit_bespoke(mix.denoiser(process), cal, steps, reference=cal, t_start=1.0, iters=1,
                         disable=True)
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
def evaluate(quick: bool, batch: int, log, bespoke_nfes: tuple[int, ...] = (5, 10),
             n_cal: int = 2048, bespoke_iters: int = 600) -> dict:
    process = VPDiscrete.linear(N_TRAIN)
    result: dict = {"process": "VPDiscrete.linear(1000) (DDPM betas 1e-4..0.02)",
                    "t_start": 1.0, "batch": batch, "nfes": list(NFES), "problems": {}}
    from polydiff.core.samplers.bespoke import fit_bespoke

    for pname, mix in problems(quick).items():
        log(f"== {pname}")
        den: Denoiser = mix.denoiser(process)
        g = torch.Generator().manual_seed(1234)
        noise = torch.randn(batch, mix.dim, generator=g)
        cal_noise = torch.randn(n_cal, mix.dim, generator=g)  # disjoint from `noise`
        ref = reference_pf_ode(mix, process, noise.double(), 1.0)
        cal_ref = reference_pf_ode(mix, process, cal_noise.double(), 1.0)
        eps_model = diffusers_eps_model(mix, process)
        per_nfe: dict = {}
        for nfe in NFES:
            entry: dict = {"polydiff": {}, "diffusers": {}}
            for s in POLY_SAMPLERS:
                steps = s.steps_for_nfe(nfe)
                for kind in GRIDS:
                    x = s.fn(den, noise, poly_grid(process, steps, kind), disable=True,
                             **s.kwargs)
                    entry["polydiff"][f"{s.name}/{kind}"] = rmse(x, ref)
            # bespoke solvers: fitted per model and NFE on the calibration noise only; the base
            # solver is chosen on a selection split of the calibration noise, never on `noise`
            if nfe in bespoke_nfes:
                t_fit = time.perf_counter()
                n_fit = (3 * n_cal) // 4
                fits = {}
                for base in ("dpmpp_2m", "unipc"):
                    solver = fit_bespoke(den, cal_noise[:n_fit].double(), nfe,
                                         reference=cal_ref[:n_fit], t_start=1.0, base=base,
                                         iters=bespoke_iters, lr=0.02, batch_size=512,
                                         generator=torch.Generator().manual_seed(nfe),
                                         disable=True)
                    sel = rmse(solver.sample(den, cal_noise[n_fit:].double(), disable=True),
                               cal_ref[n_fit:])
                    fits[base] = (sel, solver)
                base, (sel, solver) = min(fits.items(), key=lambda kv: kv[1][0])
                fit_s = time.perf_counter() - t_fit
                x = solver.sample(den, noise, disable=True)
                entry["polydiff"]["bespoke"] = rmse(x, ref)
                entry["bespoke_fit"] = {
                    "seconds": fit_s, "fit_samples": n_fit, "selection_samples": n_cal - n_fit,
                    "iters": bespoke_iters, "base": base,
                    "selection_rmse": {k: v[0] for k, v in fits.items()},
                    "grid": solver.grid.tolist()}
            for name, (cls_name, kw) in diffusers_configs().items():
                sched = make_scheduler(cls_name, kw)
                x, used = run_diffusers(sched, eps_model, noise, diffusers_steps(cls_name, nfe))
                if used > nfe:
                    raise RuntimeError(f"{name} used {used} > {nfe} evaluations")
                entry["diffusers"][name] = rmse(x, ref)
            pb = min(entry["polydiff"].items(), key=lambda kv: kv[1])
            db = min(entry["diffusers"].items(), key=lambda kv: kv[1])
            gen_best = min(((k, v) for k, v in entry["polydiff"].items() if k != "bespoke"),
                           key=lambda kv: kv[1])
            entry["polydiff_best"] = {"sampler": pb[0], "rmse": pb[1]}
            entry["polydiff_best_without_calibration"] = {"sampler": gen_best[0],
                                                          "rmse": gen_best[1]}
            entry["diffusers_best"] = {"scheduler": db[0], "rmse": db[1]}
            entry["ratio"] = pb[1] / db[1]
            per_nfe[str(nfe)] = entry
            log(f"  NFE {nfe:>2}: polydiff {pb[0]:<24} {pb[1]:.3e} | diffusers {db[0]:<16} "
                f"{db[1]:.3e} | ratio {pb[1] / db[1]:.2f}")
        per_nfe["stochastic"] = stochastic(mix, process, den, eps_model, batch)
        result["problems"][pname] = per_nfe
    return result


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
        grid = poly_grid(process, nfe, "logsnr")
        row["polydiff/ddpm"] = sliced_w2(sample_ddpm(den, noise, grid, seed=1, disable=True),
                                         data)
        row["polydiff/dpmpp_2m_sde"] = sliced_w2(
            sample_dpmpp_2m_sde(den, noise, grid, seed=1, disable=True), data)
        row["polydiff/ddim_eta1"] = sliced_w2(
            sample_ddim(den, noise, grid, eta=1.0, seed=1, disable=True), data)
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--quick", action="store_true", help="3 problems, smaller batches")
    ap.add_argument("--batch", type=int, default=None,
                    help="evaluation batch (default 1024; quick 256)")
    ap.add_argument("--out", type=str, default=None, help="also write the JSON to this file")
    ap.add_argument("--no-bespoke", action="store_true", help="skip fitting bespoke solvers")
    ap.add_argument("--cal", type=int, default=None,
                    help="calibration samples for bespoke solvers (default 2048; quick 1024)")
    ap.add_argument("--iters", type=int, default=None,
                    help="Adam iterations per bespoke fit (default 400; quick 200)")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    batch = args.batch or (256 if args.quick else 1024)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr if args.json else sys.stdout, flush=True)

    t0 = time.time()
    res = evaluate(args.quick, batch, log, () if args.no_bespoke else (5, 10),
                   args.cal or (1024 if args.quick else 2048),
                   args.iters or (200 if args.quick else 400))
    res["overhead_us_per_step"] = overhead(VPDiscrete.linear(N_TRAIN), 64, 256, repeats=5)
    ov = res["overhead_us_per_step"]
    log("per-step overhead (us, free model): polydiff "
        + ", ".join(f"{k} {v:.0f}" for k, v in ov["polydiff"].items()) + " | diffusers "
        + ", ".join(f"{k} {v:.0f}" for k, v in ov["diffusers"].items()))
    targets = {}
    for pname, per in res["problems"].items():
        for nfe in ("5", "10"):
            targets[f"{pname}/nfe{nfe}"] = per[nfe]["ratio"] <= 0.5
    res["target_half_error_at_nfe5_nfe10"] = {"met": all(targets.values()), "cases": targets}
    res["seconds"] = time.time() - t0
    res["torch"] = torch.__version__
    try:
        import diffusers

        res["diffusers"] = diffusers.__version__
    except ImportError:  # pragma: no cover
        pass
    text = json.dumps(res, indent=None if args.json else 1, default=float)
    if args.out:
        with open(args.out + ".tmp", "w") as fh:
            fh.write(text)
        os.replace(args.out + ".tmp", args.out)
    if args.json:
        print(text)
    else:
        log(f"target (polydiff best <= 0.5 x diffusers best at NFE 5 and 10): "
            f"{'met' if res['target_half_error_at_nfe5_nfe10']['met'] else 'NOT met'}; "
            f"{sum(targets.values())}/{len(targets)} cases; {res['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
