"""Lotus (single-step diffusion dense prediction) benchmark: depth and surface normals.

Trains, in one run and for equal optimizer steps, every variant of the same network on the
same rendered training scenes (:mod:`polydiff.dense.lotus.train`), all diffusion variants
starting from one image prior pretrained here on the training photographs:

* ``eps`` / ``eps+dp``: noise prediction over all times, 50 DDIM steps (the standard recipe);
* ``x0`` / ``x0+dp``: x0 prediction over all times, 50 DDIM steps;
* ``g`` / ``g+dp``: Lotus-G, x0 prediction at ``t = T`` from noise, one step;
* ``d`` / ``d+dp``: Lotus-D, x0 prediction at ``t = T`` from a zero input, one step;
* ``regression``: the ``d`` recipe from random weights (no prior, no detail preserver);
* trivial baselines: ``ramp`` (depth: disparity linear in the row) and ``facing`` (normals:
  every normal faces the camera).

``+dp`` = with the detail preserver (the input reconstruction task trained on every batch).
Held-out data: ``--test-scenes`` rendered scenes textured with the test photographs, and
(depth) the Middlebury 2014 motorcycle left view (real; depth from its disparity and
calibration). Depth: AbsRel and delta1 after least-squares scale and shift alignment of the
disparity; normals: mean / median angular error (degrees) and the fractions within 11.25,
22.5 and 30 degrees; seconds per image (wall, batches of 16, shared machine) and network
evaluations per image. The single-step variant shipped as the app's starter weights is chosen
on ``--val-scenes`` validation scenes (training photographs, seeds no training scene uses).

Target (issue): the single-step x0 model is the most accurate diffusion variant and at least
20x faster than the 50-step noise-prediction one.

    python tools/bench/lotus.py --json --out tools/bench/results/lotus_cpu.json \
        --export apps/lotus/src/polydiff/apps/lotus/starter
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

VARIANTS = ("eps", "eps+dp", "x0", "x0+dp", "g", "g+dp", "d", "d+dp", "regression")
SINGLE = ("g", "g+dp", "d", "d+dp")
DEPTH_KEYS = ("absrel", "delta1")
NORMAL_KEYS = ("mean", "median", "a11", "a22", "a30")


def _settings(args: argparse.Namespace, task: str, name: str) -> Any:
    from polydiff.dense.lotus.train import LotusSettings

    variant, dp = name.split("+")[0], name.endswith("+dp")
    return LotusSettings(task=task, variant=variant, detail_preserver=dp, steps=args.steps,
                         batch_size=args.batch_size, prior_steps=args.prior_steps,
                         size=args.size, seed=args.seed)


def _prior(args: argparse.Namespace) -> Any:
    from polydiff.dense.lotus.train import train_prior

    net, summary = train_prior(_settings(args, "depth", "d"), Path(args.work) / "prior")
    net.save_pretrained(Path(args.work) / "nets" / "prior")
    return net, summary


def _run_task(args: argparse.Namespace, task: str) -> dict[str, Any]:
    """Train and score every variant of one task (runs in its own process)."""
    torch.set_num_threads(1)
    from polydiff.dense.lotus.evaluate import (
        facing_normal,
        method_of,
        middlebury_set,
        ramp_depth,
        scene_set,
        score,
    )
    from polydiff.dense.lotus.model import LotusNet, nfe
    from polydiff.dense.lotus.train import train_predictor

    prior = LotusNet.from_pretrained(Path(args.work) / "nets" / "prior")
    sets = {"test": scene_set("test", args.test_scenes, args.size)}
    if task == "depth":
        sets["middlebury"] = middlebury_set()
    val = scene_set("val", args.val_scenes, args.size)
    out: dict[str, Any] = {"variants": {}, "val": {}, "train": {}}
    trivial = ramp_depth if task == "depth" else facing_normal
    out["variants"]["ramp" if task == "depth" else "facing"] = {
        k: score(trivial, es, task) for k, es in sets.items()}
    for name in VARIANTS:
        s = _settings(args, task, name)
        net, summ = train_predictor(s, Path(args.work) / f"{task}-{name}", prior)
        out["train"][name] = {"loss": summ.get("loss"), "cpu_seconds": summ["cpu_seconds"],
                              "seconds": summ["seconds"], "step": summ["step"]}
        steps = args.sample_steps if s.variant in ("eps", "x0") else 1
        fn = method_of(net, s.variant, task, steps=steps, seed=args.seed)
        res = {k: score(fn, es, task) for k, es in sets.items()}
        for r in res.values():
            r["nfe"] = float(nfe(s.variant, steps))
        out["variants"][name] = res
        if name in SINGLE:
            out["val"][name] = score(fn, val, task)
        net.save_pretrained(Path(args.work) / "nets" / f"{task}-{name}")
        print(f"[{task}] {name}: {json.dumps(res['test'])}", file=sys.stderr, flush=True)
    key, better = ("absrel", min) if task == "depth" else ("mean", min)
    chosen = better(SINGLE, key=lambda n: out["val"][n][key])
    out["chosen"] = {"variant": chosen, "by": f"validation {key}",
                     "settings": dataclasses.asdict(_settings(args, task, chosen))}
    return out


def _task_job(argv: list[str], task: str) -> dict[str, Any]:
    args = _parser().parse_args(argv)
    return _run_task(args, task)


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def _table(results: dict[str, Any]) -> str:
    lines = []
    for task, res in results["tasks"].items():
        keys = DEPTH_KEYS if task == "depth" else NORMAL_KEYS
        for set_name in ("test", "middlebury"):
            rows = {n: r[set_name] for n, r in res["variants"].items() if set_name in r}
            if not rows:
                continue
            lines.append(f"\n{task} / {set_name}")
            lines.append(f"{'method':<12}" + "".join(f"{k:>10}" for k in keys)
                         + f"{'s/image':>10}{'NFE':>6}")
            for n, r in rows.items():
                lines.append(f"{n:<12}" + "".join(f"{r[k]:>10.4f}" for k in keys)
                             + f"{r['seconds_per_image']:>10.4f}{int(r.get('nfe', 0)):>6}")
    return "\n".join(lines)


def _verdict(task: str, res: dict[str, Any]) -> dict[str, Any]:
    key, sign = ("absrel", 1) if task == "depth" else ("mean", 1)
    test = {n: r["test"] for n, r in res["variants"].items() if n in VARIANTS[:8]}
    best = min(test, key=lambda n: sign * test[n][key])
    single = min(SINGLE, key=lambda n: test[n][key])
    speed = test["eps"]["seconds_per_image"] / test[single]["seconds_per_image"]
    return {"best_diffusion_variant": best, "best_single_step": single,
            "single_step_is_most_accurate": best in SINGLE,
            "speedup_vs_eps50": speed, "speedup_met": speed >= 20,
            "met": best in SINGLE and speed >= 20}


def _export(results: dict[str, Any], args: argparse.Namespace) -> None:
    import shutil

    dest = Path(args.export)
    dest.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {"commit": results["commit"], "device": results["machine"],
                                "tasks": {}}
    for task, res in results["tasks"].items():
        chosen = res["chosen"]["variant"]
        s = res["chosen"]["settings"]
        shutil.copytree(Path(args.work) / "nets" / f"{task}-{chosen}", dest / task,
                        dirs_exist_ok=True)
        flags = (f"--variant {s['variant']}" + ("" if s["detail_preserver"] else
                                                 " --no-detail-preserver"))
        manifest["tasks"][task] = {
            "variant": chosen, "settings": s, "chosen_by": res["chosen"]["by"],
            "train_command": (f"lotus train --task {task} {flags} --steps {s['steps']} "
                              f"--prior-steps {s['prior_steps']} --batch-size "
                              f"{s['batch_size']} --seed {s['seed']} -o OUT"),
            "cpu_seconds": res["train"][chosen]["cpu_seconds"] + results["prior_cpu_seconds"],
            "heldout": {k: v for k, v in res["variants"][chosen].items()},
            "validation": res["val"][chosen],
        }
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    _finalize(dest)


def _finalize(dest: Path) -> None:
    """Make the exported networks app model folders (``lotus.json``) and record their
    re-score on the app's held-out slice (what the app's starter test re-computes)."""
    from polydiff.apps.lotus import workflow as wf

    manifest = json.loads((dest / "manifest.json").read_text())
    for task, m in manifest["tasks"].items():
        meta = {"task": task, "variant": m["settings"]["variant"], "settings": m["settings"]}
        (dest / task / wf.MODEL_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        m["rescore_scenes"] = wf.RESCORE_SCENES
        m["rescore"] = wf.rescore(wf.load_model(task, dest / task))
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=300, help="predictor steps, every variant")
    p.add_argument("--prior-steps", type=int, default=400, help="image prior steps")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sample-steps", type=int, default=50, help="DDIM steps (eps, x0)")
    p.add_argument("--test-scenes", type=int, default=24)
    p.add_argument("--val-scenes", type=int, default=16)
    p.add_argument("--tasks", default="depth,normal")
    p.add_argument("--jobs", type=int, default=2, help="tasks trained in parallel")
    p.add_argument("--work", default="lotus-bench-work", help="run folders and networks")
    p.add_argument("--export", default=None, help="write the chosen networks + manifest here")
    p.add_argument("--finalize", default=None, metavar="DIR",
                   help="only add lotus.json and the re-score to an exported folder")
    p.add_argument("--machine", default="2-core shared CPU, no GPU")
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", default=None)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    torch.set_num_threads(1)
    if args.finalize:
        _finalize(Path(args.finalize))
        return 0
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    tic = time.perf_counter()
    cpu0 = time.process_time()
    commit = _commit()   # the code the run starts with
    _, prior_summary = _prior(args)
    if args.jobs > 1 and len(tasks) > 1:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(min(args.jobs, len(tasks))) as pool:
            outs = pool.starmap(_task_job, [(argv, t) for t in tasks])
    else:
        outs = [_run_task(args, t) for t in tasks]
    results: dict[str, Any] = {
        "benchmark": "lotus", "machine": args.machine, "python": platform.python_version(),
        "torch": torch.__version__, "commit": commit, "settings": vars(args),
        "prior_cpu_seconds": prior_summary["cpu_seconds"],
        "tasks": dict(zip(tasks, outs)),
        "wall_seconds": time.perf_counter() - tic,
        "main_process_cpu_seconds": time.process_time() - cpu0,
    }
    results["verdict"] = {t: _verdict(t, r) for t, r in results["tasks"].items()}
    if args.export:
        _export(results, args)
    text = json.dumps(results, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text if args.json else _table(results))
    if args.json:
        print(_table(results), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
