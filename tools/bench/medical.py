"""Diffusion priors for medical imaging: reconstruction, active subsampling and anomaly
detection against the baselines a practitioner would pick, on held-out data.

Data (offline, real): held-out axial slices of the MNI152 T1 template (nilearn; never trained
on, never tuned on), the real MR slices (``MR_small.dcm``, ``examples_overlay.dcm``) and CT
slices (``CT_small.dcm`` and two head CTs) bundled with pydicom. Hyper-parameters are chosen on
the template's validation slices only. Measurements are SIMULATED from the images:
magnitude-only, single-coil Cartesian MRI (4x and 8x line masks, 8% centre lines, random
outer lines) and parallel-beam CT (30 and 60 views over 180 degrees), with Gaussian noise; the
numbers are not comparable with fastMRI or raw-data results.

Reported:

* reconstruction PSNR/SSIM for every solver (diffusion: DPS, RED-Diff, data-consistency
  sampling; baselines: zero-filled / FBP, total-variation CS, a supervised U-Net trained on the
  same slices) on ``template``, ``real-mr`` (MRI) and ``real-ct`` (CT), over ``--seeds`` (mask,
  noise and sampler seeds); target: the best diffusion solver beats zero-filled and TV on
  every set;
* Active Diffusion Subsampling against random and equispaced masks at the same budget (8x),
  same sampler and particles; target: ADS beats random;
* anomaly AUROC (image and pixel level) of partial diffusion against the nearest-training-slice
  and blur baselines, on held-out slices with and without synthetic lesions;
* minority guidance: minority score and novelty of guided against unguided samples.

    python tools/bench/medical.py                    # table
    python tools/bench/medical.py --json --out tools/bench/results/medical_cpu.json
    python tools/bench/medical.py --budget gpu --model runs/prior-gpu --json

The prior is the app's starter prior unless ``--model`` names another. Supervised baselines are
trained here (core's Trainer) and cached under ``$POLYDIFF_CACHE/medical-bench``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from dataclasses import asdict
from typing import Any

import torch

from polydiff.apps.medical.commands import load_prior
from polydiff.core.utils import atomic_write, cache_dir
from polydiff.medical.data import VAL_SLICES, split_indices, template_slices
from polydiff.medical.evaluate import (
    evaluate_ads,
    evaluate_anomaly,
    evaluate_minority,
    evaluate_reconstruction,
    summarise,
    test_sets,
)
from polydiff.medical.recon import DEFAULTS, acquisition_for, reconstruct, simulate

BUDGETS: dict[str, dict[str, Any]] = {
    # cpu: one seed (the 2-core shared machine; two seeds did not fit the time left)
    "cpu": {"seeds": (0,), "dps_steps": 100, "red_steps": 300, "dc_steps": 50,
            "dc_particles": 4, "supervised_steps": 400, "ads_images": 4, "ads_particles": 4,
            "ads_steps": 60, "ads_seeds": (0,), "minority_n": 6},
    "gpu": {"seeds": (0, 1, 2), "dps_steps": 500, "red_steps": 500, "dc_steps": 100,
            "dc_particles": 8, "supervised_steps": 3000, "ads_images": 8, "ads_particles": 8,
            "ads_steps": 200, "ads_seeds": (0, 1), "minority_n": 16},
}

#: Validation grids (the first setting of each modality, two validation slices, seed 0).
GRIDS: dict[str, list[dict[str, float]]] = {
    # TV's iteration count is tuned too: 300 Chambolle-Pock iterations are not converged
    "tv": [{"lam": v, "iters": it} for v in (3e-4, 1e-3, 3e-3, 1e-2, 3e-2) for it in (300, 1000)],
    "dc": [{"lam": lam, "eta": eta} for lam in (0.0, 0.1) for eta in (0.5, 1.0)],
    "dps": [{"scale": v} for v in (0.5, 1.0, 2.0)],
    "red_diff": [{"lam": lam, "lr": lr} for lam in (0.02, 0.05, 0.25) for lr in (0.1, 0.2)],
}
CT_TV_SCALE = 10.0  # CT's data term is larger (line integrals): its TV grid is shifted up


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def tune(prior: Any, args: argparse.Namespace, fixed: dict[str, dict[str, int]]
         ) -> dict[str, Any]:
    """Per modality and method, the grid point with the best mean PSNR on validation slices
    (the solvers at half their ``steps``, with the budget's other ``fixed`` settings)."""
    from polydiff.medical.metrics import psnr

    val = template_slices(VAL_SLICES[:: max(1, len(VAL_SLICES) // 2)][:2], prior.size)
    chosen: dict[str, Any] = {}
    for mod, setting in (("mri", 8.0), ("ct", 30)):
        acq = acquisition_for(mod, setting, prior.size, **({"seed": 99} if mod == "mri" else {}))
        y = simulate(acq, val, seed=99)
        for method in args.methods:
            if method not in GRIDS:
                continue
            scores = []
            for point in GRIDS[method]:
                kw = dict(point)
                if method == "tv" and mod == "ct":
                    kw["lam"] = kw["lam"] * CT_TV_SCALE
                if method in fixed:
                    kw.update(fixed[method])
                    kw["steps"] = max(10, fixed[method]["steps"] // 2)
                r = reconstruct(method, acq, y, prior, seed=99, **kw)
                scores.append((float(psnr(r, val).mean()), kw))
            best = max(scores, key=lambda s: s[0])[1]
            best = {k: v for k, v in best.items() if k not in fixed.get(method, {})}
            chosen[f"{mod}/{method}"] = best
            log(f"tuned {mod}/{method}: {best} (val PSNR "
                f"{max(s[0] for s in scores):.2f} dB over {len(scores)} points)")
    return chosen


def supervised_nets(args: argparse.Namespace, size: int, steps: int) -> dict[str, Any]:
    from polydiff.medical.prior import PriorConfig
    from polydiff.medical.supervised import (
        SupervisedConfig,
        load_supervised,
        supervised_reconstruct,
        train_supervised,
    )

    out = {}
    for mod, settings in (("mri", (4.0, 8.0)), ("ct", (30.0, 60.0))):
        cfg = SupervisedConfig(modality=mod, settings=settings, steps=steps, device=args.device,
                               arch=PriorConfig(size=size))
        key = hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True, default=str)
                             .encode()).hexdigest()[:12]
        run = cache_dir("medical-bench", f"supervised-{mod}-{key}")
        tic = time.perf_counter()
        if (run / "model" / "model.safetensors").is_file():
            net = load_supervised(run / "model")
        else:
            net = train_supervised(run, cfg)
        net = net.to(args.device)
        log(f"supervised {mod}: {steps} steps ({time.perf_counter() - tic:.0f} s, cached: {run})")
        out[mod] = (lambda n: (lambda z: supervised_reconstruct(n, z.to(args.device))))(net)
    return out


def table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'modality':8s} {'setting':>7s} {'set':9s} {'method':12s} {'PSNR dB':>8s} "
             f"{'SSIM':>6s} {'n':>3s}"]
    for r in rows:
        lines.append(f"{r['modality']:8s} {r['setting']:7g} {r['set']:9s} {r['method']:12s} "
                     f"{r['psnr_db']:8.2f} {r['ssim']:6.3f} {r['images']:3d}")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--out", help="also write the JSON here")
    p.add_argument("--budget", choices=tuple(BUDGETS), default="cpu")
    p.add_argument("--model", help="a trained prior (default: the app's starter prior)")
    p.add_argument("--methods", default="zero_filled,tv,supervised,dc,red_diff,dps")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-tune", action="store_true", help="use the package defaults")
    p.add_argument("--seeds", help="comma list of reconstruction seeds (default: the budget's)")
    p.add_argument("--skip", default="", help="comma list of parts to skip: recon, ads, "
                   "anomaly, minority")
    p.add_argument("--machine", default=platform.node() or "unknown",
                   help="machine name recorded in the JSON")
    args = p.parse_args()
    args.methods = [m for m in args.methods.split(",") if m]
    skip = set(filter(None, args.skip.split(",")))
    b = dict(BUDGETS[args.budget])
    if args.seeds:
        b["seeds"] = tuple(int(v) for v in args.seeds.split(","))
    t0, c0 = time.perf_counter(), time.process_time()
    torch.manual_seed(0)
    prior = load_prior(args.model).to(args.device)
    fixed = {"dps": {"steps": b["dps_steps"]}, "red_diff": {"steps": b["red_steps"]},
             "dc": {"steps": b["dc_steps"], "particles": b["dc_particles"]}}
    result: dict[str, Any] = {
        "benchmark": "medical", "budget": args.budget, "machine": args.machine,
        "device": args.device, "torch_threads": torch.get_num_threads(),
        "model": args.model or "starter", "prior": asdict(prior.config),
        "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in b.items()},
        "note": "measurements simulated (magnitude-only, single-coil, Gaussian noise); "
                "not comparable with fastMRI/raw-data numbers"}
    if "recon" not in skip:
        chosen = {} if args.no_tune else tune(prior, args, fixed)
        overrides = {f"{m}/{k}": {**fixed.get(k, {}),
                                  **chosen.get(f"{m}/{k}", {})}
                     for m in ("mri", "ct") for k in ("tv", "dps", "red_diff", "dc")}
        result["hyperparameters"] = {k: {**DEFAULTS[k.split("/")[0]].get(k.split("/")[1], {}),
                                         **v} for k, v in overrides.items()}
        sup = supervised_nets(args, prior.size, b["supervised_steps"]) \
            if "supervised" in args.methods else None
        sets = test_sets(prior.size)
        result["sets"] = {k: v[1] for k, v in sets.items()}
        rows = evaluate_reconstruction(prior, sets, {"mri": (4.0, 8.0), "ct": (30.0, 60.0)},
                                       args.methods, seeds=b["seeds"], supervised=sup,
                                       overrides=overrides, log=log)
        result["reconstruction"] = [r.as_dict() for r in rows]
        result["targets"] = {"reconstruction": summarise(rows)}
        checkpoint(args, result, "recon")
    if "ads" not in skip:
        imgs = template_slices(test_sets_template_subset(b["ads_images"]), prior.size)
        ads = evaluate_ads(prior, imgs, acceleration=8.0, particles=b["ads_particles"],
                           steps=b["ads_steps"], seeds=b["ads_seeds"], log=log)
        result["ads"] = ads
        result.setdefault("targets", {})["ads_beats_random"] = ads["ads_minus_random_db"] > 0
        log(f"ADS {ads['ads']} random {ads['random']} equispaced {ads['equispaced']}")
        checkpoint(args, result, "ads")
    atlas = template_slices(split_indices("train"), prior.size)
    if "anomaly" not in skip:
        from polydiff.medical.data import TEST_SLICES

        result["anomaly"] = evaluate_anomaly(prior, template_slices(TEST_SLICES, prior.size),
                                             atlas)
        log(f"anomaly {result['anomaly']}")
        checkpoint(args, result, "anomaly")
    if "minority" not in skip:
        result["minority"] = evaluate_minority(prior, atlas, n=b["minority_n"])
        log(f"minority {result['minority']}")
    result["wall_seconds"] = round(time.perf_counter() - t0, 1)
    result["cpu_seconds"] = round(time.process_time() - c0, 1)
    result.pop("partial", None)
    if args.out:
        atomic_write(args.out, json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps(result, indent=2))
    elif "reconstruction" in result:
        print(table(result["reconstruction"]))
        print(json.dumps(result["targets"], indent=2))
    return 0


def checkpoint(args: argparse.Namespace, result: dict[str, Any], done: str) -> None:
    """Write what is finished so far to ``--out`` (marked ``partial``), so that a run stopped
    early still leaves its finished parts."""
    if args.out:
        result["partial"] = f"finished up to {done}"
        result["cpu_seconds"] = round(time.process_time(), 1)
        atomic_write(args.out, json.dumps(result, indent=2) + "\n")


def test_sets_template_subset(n: int) -> tuple[int, ...]:
    from polydiff.medical.data import TEST_SLICES

    step = max(1, len(TEST_SLICES) // n)
    return TEST_SLICES[::step][:n]


if __name__ == "__main__":
    os.environ.setdefault("CI", "true")
    sys.exit(main())
