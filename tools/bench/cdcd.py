"""CDCD benchmark: contrastive discrete diffusion vs the vanilla variational objective.

Data: scikit-learn's real 8x8 digits quantised to 4 grey levels (64 tokens, class label as
the condition; ``polydiff.multimodal.cdcd.data``), split 60/20/20 (train / validation / test,
stratified, seed 0). Every method trains the same network (core's DiffusionTransformer over
one-hot tokens), on the same data, with the same optimizer steps, batch, seed and
mask-and-replace process (T = 50); only the loss differs:

* ``vanilla``: ``L_vb + aux L_x0`` (Gu et al. 2022), ``aux`` chosen on validation digits;
* ``step-inter`` / ``step-intra``: + the step-wise parallel contrastive term (negatives scored
  by the step's variational KL) with inter-sample (other classes in the batch) or
  intra-sample (the digit's own rows shuffled) negatives;
* ``sample-inter`` / ``sample-intra``: + the sample-wise auxiliary term (negatives scored by
  ``log p(x_0|x_t,c)``) with inter- or intra-sample negatives.

Scores on the held-out **test** digits (one generated digit per test label, 25 sampler
steps), at several points of training, over ``--seeds`` training seeds:

* correspondence: accuracy of an RBF SVM (trained on real training digits) on the generated
  digits against their class (real test digits: the ceiling; chance 0.1);
* quality: mean distance to the nearest real test digit of the same class (grey values in
  [0, 1]; lower is better) and the total-variation distance of the grey-level histograms;
* steps to reach vanilla's final correspondence: the first evaluation step at which a
  method's mean accuracy reaches the vanilla model's mean accuracy at the last step.

**Target** (issue 16): a contrastive variant beats vanilla beyond seed noise (mean difference
> 2 x the standard error of the difference) at equal or fewer training steps.

    python tools/bench/cdcd.py                   # table
    python tools/bench/cdcd.py --json --out tools/bench/results/cdcd_cpu.json
    # add methods to a saved run (same settings; its runs are kept, not rerun):
    python tools/bench/cdcd.py --methods step-intra sample-intra \\
        --merge tools/bench/results/cdcd_cpu.json --out tools/bench/results/cdcd_cpu.json
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

METHODS: dict[str, dict[str, Any]] = {
    "vanilla": {"variant": "vanilla"},
    "step-inter": {"variant": "step", "negatives": "inter"},
    "step-intra": {"variant": "step", "negatives": "intra"},
    "sample-inter": {"variant": "sample", "negatives": "inter"},
    "sample-intra": {"variant": "sample", "negatives": "intra"},
}
SAME = ("task", "steps", "evals", "sample_steps", "device")  # settings a merge must share


def run_method(name: str, seed: int, args: argparse.Namespace, splits: Any, judge: Any
               ) -> dict[str, Any]:
    from polydiff.multimodal.cdcd.contrastive import ContrastiveSettings
    from polydiff.multimodal.cdcd.evaluation import score_digits
    from polydiff.multimodal.cdcd.model import CDCDConfig, CDCDModel
    from polydiff.multimodal.cdcd.train import TrainSettings, train_cdcd

    if args.task == "music":
        cfg = CDCDConfig(num_tokens=splits.num_tokens, seq_len=32, num_labels=0, cond_vocab=3)
    else:
        cfg = CDCDConfig()
    s = TrainSettings(steps=args.steps, contrastive=ContrastiveSettings(**METHODS[name]))
    evals = sorted({int(round(args.steps * (i + 1) / args.evals)) for i in range(args.evals)})
    curve: list[dict[str, Any]] = []
    eval_cpu = [0.0]

    def callback(trainer: Any, rec: dict[str, Any]) -> None:
        if trainer.step not in evals:
            return
        c0 = time.process_time()
        net = copy.deepcopy(trainer.model)
        if trainer.ema is not None:
            trainer.ema.copy_to(net)
        model = CDCDModel(cfg, net).eval()
        if args.task == "music":
            curve.append({"step": trainer.step, **score_music(model, splits.test, args, seed)})
        else:
            sc = score_digits(model, splits.test, judge, steps=args.sample_steps,
                              seed=1000 + seed)
            curve.append({"step": trainer.step, **{k: sc[k] for k in
                                                   ("accuracy", "nn_distance", "level_tv")}})
        eval_cpu[0] += time.process_time() - c0

    c0 = time.process_time()
    with tempfile.TemporaryDirectory(prefix="cdcd-bench-") as tmp:
        train_cdcd(splits.train, tmp, cfg, s, seed=seed, resume=False, callbacks=[callback],
                   ckpt_every=args.steps, device=args.device)
    cpu = time.process_time() - c0 - eval_cpu[0]
    return {"method": name, "seed": seed, "curve": curve, "train_cpu_seconds": round(cpu, 2)}


def score_music(model: Any, test: Any, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """Beat hit / coverage of melodies written for the held-out rhythm tracks; ``accuracy``
    is the beat hit (the correspondence figure the summary compares)."""
    from polydiff.multimodal.cdcd.music import beat_scores, pitch_class_tv

    tokens = model.generate(len(test), cond=torch.as_tensor(test.cond),
                            steps=args.sample_steps, seed=1000 + seed).numpy()
    sc = beat_scores(tokens, test.cond)
    return {"accuracy": sc["beat_hit"], "beat_coverage": sc["beat_coverage"],
            "nn_distance": float("nan"), "level_tv": pitch_class_tv(tokens, test.tokens)}


def summarise(runs: list[dict[str, Any]], seeds: list[int]) -> dict[str, Any]:
    by: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        by.setdefault(r["method"], []).append(r)
    steps = [p["step"] for p in runs[0]["curve"]]
    out: dict[str, Any] = {}
    acc = {m: np.array([[p["accuracy"] for p in r["curve"]] for r in rs])
           for m, rs in by.items()}
    van_final = float(acc["vanilla"][:, -1].mean())
    van_by_seed = {r["seed"]: r["curve"][-1]["accuracy"] for r in by["vanilla"]}
    for m, rs in by.items():
        a = acc[m]
        # paired by seed (seeds that vanilla also ran; a partial merge may have fewer)
        d = np.array([r["curve"][-1]["accuracy"] - van_by_seed[r["seed"]] for r in rs
                      if r["seed"] in van_by_seed])
        se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
        reach = next((st for st, v in zip(steps, a.mean(0)) if v >= van_final), None)
        out[m] = {
            "accuracy_mean": a.mean(0).round(4).tolist(),
            "accuracy_std": a.std(0, ddof=1).round(4).tolist() if len(a) > 1 else None,
            "final_accuracy": float(a[:, -1].mean()),
            "final_accuracy_std": float(a[:, -1].std(ddof=1)) if len(a) > 1 else None,
            "diff_vs_vanilla": float(d.mean()), "diff_se": se,
            "beats_vanilla_beyond_noise": bool(m != "vanilla" and d.mean() > 2 * se),
            "steps_to_vanilla_final_accuracy": reach,
            "nn_distance": float(np.mean([r["curve"][-1]["nn_distance"] for r in rs])),
            "level_tv": float(np.mean([r["curve"][-1]["level_tv"] for r in rs])),
            "train_cpu_seconds": float(np.mean([r["train_cpu_seconds"] for r in rs])),
        }
    return {"eval_steps": steps, "methods": out}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", choices=("digits", "music"), default="digits",
                   help="music: rhythm -> melody, scored by beat hit (see README)")
    p.add_argument("--steps", type=int, default=400, help="training steps per run")
    p.add_argument("--evals", type=int, default=2, help="evaluation points per run")
    p.add_argument("--sample-steps", type=int, default=25, help="sampler steps")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=["vanilla", "step-inter", "sample-inter"],
                   choices=list(METHODS), help="default: vanilla step-inter sample-inter "
                   "(the intra variants were run later with --merge)")
    p.add_argument("--budget", choices=("cpu", "gpu"), default="cpu",
                   help="gpu: 1500 steps, 4 seeds, every method, on cuda (one device call; "
                   "flags given explicitly still win)")
    p.add_argument("--device", default=None, help="training device (default: cpu)")
    p.add_argument("--merge", type=Path, nargs="+", default=[],
                   help="earlier result files (same task/steps/evals/sample steps/device): "
                   "their runs are kept and only missing (method, seed) pairs are run")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--out", type=Path, help="also write the JSON here")
    args = p.parse_args(argv)
    if args.budget == "gpu":
        given = set(argv if argv is not None else sys.argv[1:])
        if "--steps" not in given:
            args.steps = 1500
        if "--evals" not in given:
            args.evals = 5
        if "--seeds" not in given:
            args.seeds = [0, 1, 2, 3]
        if "--methods" not in given:
            args.methods = list(METHODS)
    args.device = args.device or ("cuda" if args.budget == "gpu" else "cpu")
    old_runs, old_log = _load_merge(args, p)
    if "vanilla" not in args.methods and not any(r["method"] == "vanilla" for r in old_runs):
        p.error("the methods must include vanilla (the baseline)")
    torch.set_num_threads(1)
    from polydiff.multimodal.cdcd.data import load_digit_tokens
    from polydiff.multimodal.cdcd.evaluation import DigitJudge

    if args.task == "music":
        from polydiff.multimodal.cdcd.music import load_chorale_melodies

        splits, judge = load_chorale_melodies(), None
    else:
        splits = load_digit_tokens()
        judge = DigitJudge.fit(splits.train, splits.num_tokens)
    tic, c0 = time.perf_counter(), time.process_time()
    runs: list[dict[str, Any]] = list(old_runs)
    done = {(r["method"], r["seed"]) for r in old_runs}
    new: list[tuple[str, int]] = []
    result: dict[str, Any] = {}
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for i, seed in enumerate(args.seeds):
        for m in args.methods:
            if (m, seed) in done:
                continue
            runs.append(run_method(m, seed, args, splits, judge))
            new.append((m, seed))
            last = runs[-1]["curve"][-1]
            print(f"# {m} seed {seed}: accuracy {last['accuracy']:.3f} "
                  f"({runs[-1]['train_cpu_seconds']:.0f} s train CPU)", file=sys.stderr)
        result = _result(args, splits, judge, runs, tic, c0)
        complete = i == len(args.seeds) - 1
        entry = {"started_utc": started, "machine": result["machine"],
                 "methods": sorted({m for m, _ in new}), "seeds": sorted({s for _, s in new}),
                 "wall_seconds": result["wall_seconds"], "cpu_seconds": result["cpu_seconds"],
                 "complete": complete}
        result["run_log"] = old_log + ([entry] if new else [])
        result["wall_seconds"] = round(sum(e["wall_seconds"] for e in result["run_log"]), 1)
        result["cpu_seconds"] = round(sum(e["cpu_seconds"] for e in result["run_log"]), 1)
        per_method = {m: {r["seed"] for r in runs if r["method"] == m}
                      for m in result["settings"]["methods"]}
        result["complete"] = complete and all(v == set(result["seeds_done"])
                                              for v in per_method.values())
        if args.out:  # after every seed: a partial file says what it covers
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=2) + "\n")
    _report(result, args)
    return 0


def _load_merge(args: argparse.Namespace, p: argparse.ArgumentParser
                ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Runs and run log of the ``--merge`` files (first file wins on a repeated (method, seed));
    a file without a ``run_log`` is logged as one entry with its own totals."""
    runs: list[dict[str, Any]] = []
    log: list[dict[str, Any]] = []
    seen: set[tuple[str, int]] = set()
    for path in args.merge:
        old = json.loads(path.read_text())
        st = old["settings"]
        for k in SAME:
            mine = getattr(args, k)
            theirs = st.get(k, "cpu" if k == "device" else "digits" if k == "task" else None)
            if theirs != mine:
                p.error(f"--merge {path}: {k} is {theirs!r} there, {mine!r} here")
        fresh = [r for r in old["runs"] if (r["method"], r["seed"]) not in seen]
        seen |= {(r["method"], r["seed"]) for r in fresh}
        runs += fresh
        for e in old.get("run_log") or [{
                "started_utc": None, "machine": old["machine"],
                "methods": sorted({r["method"] for r in old["runs"]}),
                "seeds": old["seeds_done"], "wall_seconds": old["wall_seconds"],
                "cpu_seconds": old["cpu_seconds"], "complete": old.get("complete", True)}]:
            if e not in log:
                log.append(e)
    return runs, log


def _result(args: argparse.Namespace, splits: Any, judge: Any, runs: list[dict[str, Any]],
            tic: float, c0: float) -> dict[str, Any]:
    seeds = sorted({r["seed"] for r in runs})
    return {
        "benchmark": "cdcd", "task": "class-conditional 8x8 digit tokens (4 grey levels)",
        "machine": ("2-core shared CPU, no GPU" if args.device == "cpu"
                    else torch.cuda.get_device_name() if torch.cuda.is_available()
                    else args.device), "python": platform.python_version(),
        "torch": torch.__version__, "settings": {
            **{k: (str(v) if isinstance(v, Path) else [str(x) for x in v]
                   if k == "merge" else v) for k, v in vars(args).items()},
            "methods": list(dict.fromkeys(r["method"] for r in runs)), "seeds": seeds},
        "test_samples": len(splits.test),
        **(_digit_reference(splits, judge) if args.task == "digits" else
           {"task": "rhythm-conditioned melodies (Bach chorale sopranos, music21), 32 "
            "eighth-note steps; 'accuracy' = beat hit, 'level_tv' = pitch-class TV"}),
        "seeds_done": seeds, "summary": summarise(runs, seeds), "runs": runs,
        "wall_seconds": round(time.perf_counter() - tic, 1),
        "cpu_seconds": round(time.process_time() - c0, 1),
    }


def _digit_reference(splits: Any, judge: Any) -> dict[str, Any]:
    from polydiff.multimodal.cdcd.evaluation import nn_distance

    return {"real_test_accuracy": judge.accuracy(splits.test.tokens, splits.test.labels),
            "real_train_nn_distance": nn_distance(splits.train.tokens, splits.train.labels,
                                                  splits.test, splits.num_tokens)}


def _report(result: dict[str, Any], args: argparse.Namespace) -> None:
    text = json.dumps(result, indent=2)
    if args.json:
        print(text)
    else:
        summ = result["summary"]
        print(f"{'method':14s} " + " ".join(f"acc@{s:<5d}" for s in summ["eval_steps"])
              + "  diff±se   reach  nn_dist  cpu_s")
        for m, v in summ["methods"].items():
            print(f"{m:14s} " + " ".join(f"{a:9.3f}" for a in v["accuracy_mean"])
                  + f"  {v['diff_vs_vanilla']:+.3f}±{v['diff_se']:.3f} "
                  f"{v['steps_to_vanilla_final_accuracy']!s:>6} {v['nn_distance']:.3f} "
                  f"{v['train_cpu_seconds']:6.0f}")
        if "real_test_accuracy" in result:
            print(f"real test digits: accuracy {result['real_test_accuracy']:.3f}, "
                  f"nn distance {result['real_train_nn_distance']:.3f}")


if __name__ == "__main__":
    sys.exit(main())
