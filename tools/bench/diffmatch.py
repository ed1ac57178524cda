"""DiffMatch dense-matching benchmark on held-out data, against the baselines a user would pick.

Test sets (nothing here is seen in training; the photographs are split by source image):

* ``warps``: ``--pairs`` homography / affine / thin-plate-spline warps (128x128) of the test
  photographs (scikit-image's ``chelsea``, ``coffee``, ``rocket``), exact flow;
* ``middlebury``: the Middlebury 2014 motorcycle stereo pair (741x500, real), flow
  ``(-disparity, 0)`` scored where the disparity is known.

Each set is scored clean and under ``--corruptions`` (Gaussian noise, Gaussian blur, JPEG,
contrast at ``--severity``; both images corrupted, fixed per-pair noise).

Methods: ``diffmatch`` (full pipeline: 5-step DDIM, 4 hypotheses averaged, x2 flow
super-resolution), ``diffmatch_coarse`` (before super-resolution), ``regressor`` (the same
coarse network trained as a direct regressor for the same steps), ``argmax`` (the cost-volume
argmax with sub-cell refinement, DiffMatch's initial flow), ``argmax_daisy`` (the same on
DAISY descriptors), and OpenCV's ``dis`` (DIS, medium preset) and ``farneback``. DiffMatch
samples are stochastic: it runs with ``--seeds`` noise seeds and the mean (and spread) is
reported. Metrics: AEPE (pixels; lower is better), PCK-1/3/5 (fraction within 1/3/5 px;
higher is better), seconds per pair.

Target (issue): DiffMatch has a lower AEPE than every baseline on the held-out warps, clean
and under every corruption.

The model: ``--model DIR`` (a ``diffmatch train`` folder), default the starter weights shipped
with the app (their manifest, with the train command and wall time, is copied into the
JSON); ``--train-steps F,C,S`` trains a fresh model in the bench first (feature, coarse and
regressor, super-resolution steps; ``--budget gpu`` picks a larger setting for one GPU).

    python tools/bench/diffmatch.py                       # table
    python tools/bench/diffmatch.py --json --out tools/bench/results/diffmatch_cpu.json
    python tools/bench/diffmatch.py --budget gpu --json --out diffmatch_gpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from polydiff.apps.diffmatch import workflow as wf
from polydiff.dense.diffmatch.evaluate import (
    METRICS,
    heldout_pairs,
    methods,
    middlebury_pairs,
    score_methods,
)

TARGET_BASELINES = ("regressor", "argmax", "argmax_daisy", "dis", "farneback")
GPU_STEPS = (200, 400, 200)


def _machine() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return (f"{platform.machine()} CPU ({platform.processor() or 'unknown'}), "
            f"{torch.get_num_threads()} torch thread(s), torch {torch.__version__}")


def _train(steps: tuple[int, int, int], out: Path, batch: int | None) -> Path:
    from polydiff.dense.diffmatch import TrainSettings

    s = TrainSettings(feature_steps=steps[0], coarse_steps=steps[1], sr_steps=steps[2])
    if batch:
        s.batch_size = batch
    cmd = (f"diffmatch train -o OUT --feature-steps {steps[0]} --coarse-steps {steps[1]} "
           f"--sr-steps {steps[2]} --batch-size {s.batch_size}")
    wf.train_model(s, out, resume=True, rescore_pairs=8, command=cmd,
                   log=lambda m: print(m, file=sys.stderr))
    return out / "model"


def _seeded(pipe: Any, seeds: list[int], **kw: Any) -> dict[str, Any]:
    return {f"seed{s}": methods(pipe, opencv=False, seed=s, **kw) for s in seeds}


def run(args: argparse.Namespace) -> dict[str, Any]:
    tic = time.perf_counter()
    model = args.model
    if args.train_steps:
        model = _train(args.train_steps, Path(args.workdir), args.batch_size)
    pipe, model_dir = wf.load_model(model)
    manifest = wf.load_manifest(model_dir)
    seeds = list(range(args.seeds))
    per_seed = _seeded(pipe, seeds)
    base = methods(pipe, opencv=not args.no_opencv)
    stochastic = [k for k in ("diffmatch", "diffmatch_coarse") if k in base]
    sets: dict[str, Any] = {"warps": heldout_pairs(args.pairs)}
    if not args.no_middlebury:
        sets["middlebury"] = middlebury_pairs()
    corruptions = ["clean"] + [c for c in args.corruptions.split(",") if c and c != "clean"]
    results: dict[str, Any] = {}
    for set_name, pairs in sets.items():
        results[set_name] = {}
        for c in corruptions:
            row = score_methods({k: v for k, v in base.items() if k not in stochastic},
                                pairs, c, args.severity)
            runs = [score_methods({k: per_seed[f"seed{s}"][k] for k in stochastic}, pairs, c,
                                  args.severity) for s in seeds]
            for name in stochastic:
                m = {k: float(np.mean([r[name][k] for r in runs])) for k in runs[0][name]}
                m.update({f"{k}_std": float(np.std([r[name][k] for r in runs]))
                          for k in METRICS})
                m["seeds"] = len(seeds)
                row[name] = m
            for name, m in row.items():
                print(f"{set_name:>10} {c:>8} {name:>17}: AEPE {m['aepe']:7.3f}  PCK-1 "
                      f"{m['pck1']:.3f}  PCK-3 {m['pck3']:.3f}  PCK-5 {m['pck5']:.3f}  "
                      f"{m['seconds']:.3f} s/pair", file=sys.stderr, flush=True)
            results[set_name][c] = row
    target = {}
    for c, row in results["warps"].items():
        if "diffmatch" not in row:
            continue
        others = {k: row[k]["aepe"] for k in TARGET_BASELINES if k in row}
        best = min(others, key=lambda k: others[k]) if others else None
        target[c] = {"diffmatch_aepe": row["diffmatch"]["aepe"], "best_baseline": best,
                     "best_baseline_aepe": others.get(best) if best else None,
                     "met": bool(others) and row["diffmatch"]["aepe"] < min(others.values())}
    return {
        "bench": "diffmatch", "machine": _machine(), "date": time.strftime("%Y-%m-%d"),
        "model": str(model_dir), "manifest": manifest,
        "settings": {"pairs": args.pairs, "severity": args.severity, "seeds": args.seeds,
                     "corruptions": corruptions, "pipeline": vars(pipe.config)},
        "results": results, "target": {"by_corruption": target,
                                       "met": bool(target) and all(v["met"] for v in
                                                                   target.values())},
        "seconds": round(time.perf_counter() - tic, 1),
    }


def _table(res: dict[str, Any]) -> None:
    for set_name, by_c in res["results"].items():
        for c, row in by_c.items():
            print(f"\n{set_name} ({c})")
            print(f"  {'method':<17} {'AEPE px':>9} {'PCK-1':>7} {'PCK-3':>7} {'PCK-5':>7} "
                  f"{'s/pair':>8}")
            for name, m in sorted(row.items(), key=lambda kv: kv[1]["aepe"]):
                spread = f" +-{m['aepe_std']:.3f}" if "aepe_std" in m else ""
                print(f"  {name:<17} {m['aepe']:>9.3f} {m['pck1']:>7.3f} {m['pck3']:>7.3f} "
                      f"{m['pck5']:>7.3f} {m['seconds']:>8.3f}{spread}")
    t = res["target"]
    print(f"\ntarget (DiffMatch AEPE below every baseline on held-out warps, clean and "
          f"corrupted): {'met' if t['met'] else 'NOT met'}")
    for c, v in t["by_corruption"].items():
        print(f"  {c:>8}: diffmatch {v['diffmatch_aepe']:.3f} vs best baseline "
              f"{v['best_baseline']} {v['best_baseline_aepe']:.3f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="model folder (default: the starter weights)")
    p.add_argument("--pairs", type=int, default=16, help="held-out warped pairs")
    p.add_argument("--corruptions", default="noise,blur,jpeg,contrast")
    p.add_argument("--severity", type=int, default=3)
    p.add_argument("--seeds", type=int, default=2, help="DiffMatch noise seeds")
    p.add_argument("--no-middlebury", action="store_true")
    p.add_argument("--no-opencv", action="store_true")
    p.add_argument("--budget", choices=("cpu", "gpu"), default="cpu",
                   help="gpu: train a larger model on the device first (GPU_STEPS)")
    p.add_argument("--train-steps", type=lambda v: tuple(int(x) for x in v.split(",")),
                   help="train a fresh model first: FEATURE,COARSE,SR steps")
    p.add_argument("--batch-size", type=int, help="training batch (with --train-steps)")
    p.add_argument("--workdir", default="diffmatch-bench-run", help="training folder")
    p.add_argument("--threads", type=int, default=1, help="torch threads on CPU")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        torch.set_num_threads(args.threads)
    if args.budget == "gpu" and not args.train_steps:
        args.train_steps = GPU_STEPS
        args.batch_size = args.batch_size or 32
    res = run(args)
    text = json.dumps(res, indent=1)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    if args.json:
        print(text)
    else:
        _table(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
