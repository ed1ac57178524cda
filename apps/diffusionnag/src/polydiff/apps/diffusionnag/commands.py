"""The ``diffusionnag`` verbs (imported by :mod:`polydiff.apps.diffusionnag.main` when a command
runs). Every verb checks its input before it writes anything and writes files atomically, so
bad input leaves no partial output."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from polydiff.apps.diffusionnag import workflow as wf
from polydiff.core.cli import CLIError, emit
from polydiff.core.cli import require_at_least as _positive

__all__ = ["cmd_train", "cmd_generate", "cmd_search", "cmd_evaluate", "cmd_demo"]

PROPERTY_GUIDES = ("params", "depth")


def _out_dir(path: str) -> Path:
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise CLIError(f"output path '{out}' exists and is not a directory")
    return out


def _sampler(args: argparse.Namespace, space: str) -> Any:
    from polydiff.graphnas.model import SamplerConfig

    _positive("--steps", args.steps)
    if args.snr <= 0:
        raise CLIError(f"--snr must be positive, got {args.snr}")
    steps = args.steps or (40 if space == "mbv3" else 100)
    return SamplerConfig(sampler=args.sampler, steps=steps, snr=args.snr)


def _threads() -> None:
    """One intra-op thread: the graphs are tiny, so more threads only add synchronisation
    (several times slower on a busy machine)."""
    import torch

    torch.set_num_threads(1)


# ----------------------------------------------------------------------------- train
def cmd_train(args: argparse.Namespace) -> int:
    from polydiff.graphnas.benchmarks import NBG_DATASETS

    if args.target == "meta" and args.space != "nbgraph":
        raise CLIError("--target meta trains the NAS-Bench-Graph meta-predictor: use "
                       "--space nbgraph")
    if args.target in PROPERTY_GUIDES and args.space == "nbgraph":
        raise CLIError(f"--target {args.target} is for nb201 and mbv3 (NAS-Bench-Graph has "
                       "measured accuracies: use --target meta)")
    if args.heldout is not None and (args.target != "meta" or args.heldout not in NBG_DATASETS):
        raise CLIError(f"--heldout names a NAS-Bench-Graph dataset ({', '.join(NBG_DATASETS)}) "
                       "left out of --target meta")
    for name, v in (("--steps", args.steps), ("--batch-size", args.batch_size)):
        _positive(name, v)
    if args.lr is not None and args.lr <= 0:
        raise CLIError(f"--lr must be positive, got {args.lr}")
    base = dict(wf.DEFAULTS[(args.space, args.target)])
    s = wf.TrainSettings(space=args.space, target=args.target, heldout=args.heldout,
                         seed=args.seed, **base)
    for key in ("steps", "batch_size", "lr"):
        if getattr(args, key) is not None:
            setattr(s, key, getattr(args, key))
    out = _out_dir(args.output)
    _threads()
    tic = time.perf_counter()
    summary = wf.run_training(s, out, resume=args.resume, progress=not args.json)
    from polydiff.core.training.rundir import read_stats

    stats = read_stats(out)
    emit({"run": str(out), "model": str(out / "model"), **summary, "steps": s.steps,
          "final_loss": stats[-1]["loss"] if stats else None,
          "seconds": round(time.perf_counter() - tic, 2)}, args.json)
    return 0


# ----------------------------------------------------------------------------- generate
def _guide(args: argparse.Namespace) -> tuple[Any, Any, str | None, dict[str, Any]]:
    """``(predictor, task embedding, kind, scaling)`` of ``--guide``."""
    from polydiff.graphnas.benchmarks import NBG_DATASETS

    if args.guide is None:
        if args.dataset is not None:
            raise CLIError("--dataset conditions an accuracy predictor: add --guide accuracy")
        return None, None, None, {}
    task = None
    if args.guide == "accuracy":
        if args.space != "nbgraph":
            raise CLIError("--guide accuracy is the NAS-Bench-Graph meta-predictor: use "
                           "--space nbgraph")
        if args.dataset is None:
            raise CLIError("--guide accuracy needs --dataset (a NAS-Bench-Graph dataset)")
        path = wf.starter_path(f"meta-{args.dataset}" if args.dataset in NBG_DATASETS
                               else "meta-all")
    elif args.guide in PROPERTY_GUIDES:
        if args.space == "nbgraph":
            raise CLIError(f"no {args.guide} predictor for nbgraph: use --guide accuracy")
        path = wf.starter_path(f"{args.space}-{args.guide}")
    else:
        path = Path(args.guide)
    pred = wf.load_predictor(path)
    if pred.config.space != args.space:
        raise CLIError(f"{path} predicts for the {pred.config.space} space, not {args.space}")
    if pred.config.cond_dim:
        from polydiff.graphnas.tasks import task_features

        if args.dataset is None:
            raise CLIError(f"{path} is dataset-aware: pass --dataset")
        try:
            task = task_features(args.dataset)
        except ValueError as exc:
            raise CLIError(str(exc)) from None
    scaling_file = wf._model_dir(Path(path)) / "scaling.json"
    scaling = json.loads(scaling_file.read_text()) if scaling_file.is_file() else {}
    return pred, task, pred.config.target, scaling


def cmd_generate(args: argparse.Namespace) -> int:
    import numpy as np

    from polydiff.core.predictors import GuidanceSchedule
    from polydiff.core.utils import atomic_write
    from polydiff.graphnas.draw import draw_cells
    from polydiff.graphnas.metrics import generation_metrics

    _positive("--num", args.num)
    out = _out_dir(args.output)
    sampler = _sampler(args, args.space)
    pred, task, kind, scaling = _guide(args)
    model = wf.load_diffusion(args.model, args.space)
    scale = args.scale if args.scale is not None else (10.0 if kind == "valid" else 5.0)
    if pred is not None and scale < 0:
        raise CLIError(f"--scale must be >= 0 (use --minimize to lower a property), got {scale}")
    _threads()
    guide = None
    if pred is not None and scale > 0:
        sched = GuidanceSchedule(args.schedule)
        signed = -scale if args.minimize else scale

        def guide(den: Any, batch: int) -> Any:
            return pred.guide(den, batch, scale=signed, schedule=sched, task=task)

    tic = time.perf_counter()
    archs, _ = model.generate(args.num, sampler=sampler, guide=guide, seed=args.seed)
    seconds = time.perf_counter() - tic
    space = model.space
    train, _ = wf.training_archs(args.space)
    metrics = generation_metrics(space, archs, train)
    valid = [a for a in archs if a is not None]
    ranked = valid
    scores = None
    if pred is not None and valid:
        scores = pred.predict(valid, task)
        order = np.argsort(scores if args.minimize else -scores, kind="stable")
        ranked = [valid[i] for i in order]
        scores = scores[order]
    props = [space.properties(a) for a in ranked]
    summary: dict[str, Any] = {"space": args.space, "generated": len(archs),
                               **{k: metrics[k] for k in ("validity", "uniqueness",
                                                          "novelty")},
                               **_novelty_note(args.space),
                               "guide": args.guide, "dataset": args.dataset,
                               "scale": scale if pred is not None else 0.0,
                               "seconds": round(seconds, 2)}
    for key in (props[0] if props else {}):
        summary[f"mean_{key}"] = float(np.mean([p[key] for p in props]))
    if args.dataset is not None and args.space == "nbgraph" and ranked:
        summary.update(_bench_summary(args.dataset, ranked))
    lines = [space.format(a) for a in ranked]
    atomic_write(out / "archs.txt", "\n".join(lines) + ("\n" if lines else ""))
    rows = [{"arch": space.format(a), "hash": space.hash(a), **p,
             **({"predicted": float(s)} if scores is not None else {})}
            for a, p, s in zip(ranked, props, scores if scores is not None else [None] * len(
                ranked))]
    atomic_write(out / "generated.json", json.dumps({"summary": summary, "archs": rows},
                                                    indent=2) + "\n")
    if ranked:
        top = ranked[:6]
        titles = [_title(space, a, kind, s) for a, s in zip(
            top, scores[:6] if scores is not None else [None] * len(top))]
        summary["figure"] = str(draw_cells(space, top, out / "cells.png", titles=titles,
                                           columns=2 if args.space == "mbv3" else 3))
    summary["output"] = str(out)
    emit(summary, args.json)
    return 0


def _novelty_note(space: str) -> dict[str, str]:
    """What novelty is measured against, per space."""
    return {"novelty_against": {
        "nbgraph": "the whole space (the model learned every architecture: 0 by design)",
        "nb201": "the training half of the 15,625 cells",
        "mbv3": "the 20,000 training chains"}[space]}


def _title(space: Any, arch: Any, kind: str | None, score: Any) -> str:
    p = space.properties(arch)
    bits = [f"{k} {v:,.0f}" for k, v in p.items() if k in ("params", "depth")]
    if score is not None:
        bits.append(f"pred {score:+.2f}")
    return ", ".join(bits)


def _bench_summary(dataset: str, ranked: list[Any]) -> dict[str, Any]:
    from polydiff.graphnas.benchmarks import NASBenchGraph

    bench = NASBenchGraph(dataset)
    recs = [bench.lookup(a) for a in ranked[:10]]
    tests = [r.test for r in recs if r is not None]
    return {"best_test_of_first_10": max(tests) if tests else None,
            "space_top1pct_test": bench.quantile(0.99)}


# ----------------------------------------------------------------------------- search
def cmd_search(args: argparse.Namespace) -> int:
    from polydiff.core.utils import atomic_write
    from polydiff.graphnas import search as sr
    from polydiff.graphnas.benchmarks import NASBenchGraph, parse_benchmark

    try:
        _, dataset = parse_benchmark(args.benchmark)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    _positive("--budget", args.budget)
    _positive("--per-round", args.per_round)
    _positive("--generate", args.generate)
    out = _out_dir(args.output)
    bench = NASBenchGraph(dataset)
    if args.budget > len(bench):
        raise CLIError(f"--budget {args.budget} exceeds the {len(bench)} architectures of "
                       f"{dataset}")
    _threads()
    tic = time.perf_counter()
    if args.method == "random":
        trace = sr.random_search(bench, args.budget, args.seed)
    elif args.method == "evolution":
        trace = sr.regularized_evolution(bench, args.budget, args.seed)
    else:
        from polydiff.graphnas.tasks import task_features

        sampler = _sampler(args, "nbgraph")
        model = wf.load_diffusion(args.model, "nbgraph")
        pred = wf.load_predictor(args.predictor or wf.starter_path(f"meta-{dataset}"))
        if pred.config.space != "nbgraph" or not pred.config.cond_dim:
            raise CLIError("--predictor must be a NAS-Bench-Graph meta-predictor "
                           "('diffusionnag train --space nbgraph --target meta')")
        scale = 10.0 if args.scale is None else args.scale
        if scale < 0:
            raise CLIError(f"--scale must be >= 0, got {scale}")
        g = sr.GuidanceConfig(scale=scale, schedule=args.schedule, n_generate=args.generate,
                              sampler=sampler)
        trace = sr.diffusionnag_search(bench, model, pred, args.budget, args.seed,
                                       task=task_features(dataset), guidance=g,
                                       per_round=args.per_round,
                                       guided=args.method == "diffusionnag")
    seconds = time.perf_counter() - tic
    thr = bench.quantile(0.99)
    best = int(max(range(trace.queries), key=lambda i: trace.valid[i]))
    summary = {"benchmark": args.benchmark, "method": args.method, "budget": args.budget,
               "queries": trace.queries, "best_arch": bench.space.format(trace.archs[best]),
               "best_valid": trace.valid[best], "best_valid_test": trace.test[best],
               "best_test_seen": max(trace.test), "space_top1pct_test": thr,
               "queries_to_top1pct": trace.hitting_time(thr), "seconds": round(seconds, 2)}
    rows = ["query,arch,valid,test"] + [f"{i},{bench.space.format(a)},{v:.6f},{t:.6f}"
                                        for i, (a, v, t) in enumerate(
                                            zip(trace.archs, trace.valid, trace.test), 1)]
    atomic_write(out / "trace.csv", "\n".join(rows) + "\n")
    atomic_write(out / "search.json", json.dumps(summary, indent=2) + "\n")
    summary["figure"] = str(_curve(out / "curve.png", trace, thr, dataset))
    summary["output"] = str(out)
    emit(summary, args.json)
    return 0


def _curve(path: Path, trace: Any, thr: float, dataset: str) -> Path:
    import numpy as np

    from polydiff.core.plots import line_plot

    q = np.arange(1, trace.queries + 1)
    return line_plot(path, {"best test accuracy queried": (q, np.asarray(trace.best_so_far())),
                            "test acc. of best-by-validation": (q, np.asarray(
                                trace.incumbent_test())),
                            "top-1% of the space": (q, np.full(q.shape, thr))},
                     xlabel="benchmark queries", ylabel="test accuracy",
                     title=f"{trace.method} on NAS-Bench-Graph {dataset}")


# ----------------------------------------------------------------------------- evaluate
def _read_archs(space: Any, path: Path) -> list[Any]:
    from polydiff.graphnas.spaces import InvalidArchitecture

    if not path.is_file():
        raise CLIError(f"no such file: {path}")
    archs = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            archs.append(space.parse(text))
        except InvalidArchitecture as exc:
            raise CLIError(f"{path}:{n}: {exc}") from None
    if not archs:
        raise CLIError(f"{path} holds no architectures")
    return archs


def cmd_evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    from polydiff.graphnas.metrics import generation_metrics
    from polydiff.graphnas.spaces import get_space

    bench = None
    if args.benchmark is not None:
        from polydiff.graphnas.benchmarks import NASBenchGraph, parse_benchmark

        if args.space != "nbgraph":
            raise CLIError("--benchmark (NAS-Bench-Graph) needs --space nbgraph")
        try:
            bench = NASBenchGraph(parse_benchmark(args.benchmark)[1])
        except ValueError as exc:
            raise CLIError(str(exc)) from None
    space = get_space(args.space)
    _positive("--num", args.num)
    if args.archs is not None:
        archs: list[Any] = _read_archs(space, Path(args.archs))
        source = args.archs
    else:
        sampler = _sampler(args, args.space)
        _threads()
        model = wf.load_diffusion(args.model, args.space)
        archs = model.generate(args.num, sampler=sampler, seed=args.seed)[0]
        source = f"{args.num} samples of {args.model}"
    train, _ = wf.training_archs(args.space)
    m = generation_metrics(space, archs, train)
    valid = [a for a in archs if a is not None]
    res: dict[str, Any] = {"space": args.space, "source": source, "architectures": len(archs),
                           "validity": m["validity"], "uniqueness": m["uniqueness"],
                           "novelty": m["novelty"]}
    res.update(_novelty_note(args.space))
    props = [space.properties(a) for a in valid]
    for key in (props[0] if props else {}):
        vals = [p[key] for p in props]
        res[f"{key}_mean"], res[f"{key}_min"], res[f"{key}_max"] = (
            float(np.mean(vals)), float(np.min(vals)), float(np.max(vals)))
    if bench is not None:
        recs = [bench.lookup(a) for a in valid]
        found = [r for r in recs if r is not None]
        res["in_benchmark"] = len(found)
        if found:
            tests = np.array([r.test for r in found])
            res.update({"test_mean": float(tests.mean()), "test_best": float(tests.max()),
                        "test_best_percentile": float(np.mean(
                            [r.test < tests.max() for r in bench.records]) * 100),
                        "valid_best": float(max(r.valid for r in found))})
    emit(res, args.json)
    return 0


# ----------------------------------------------------------------------------- demo
def cmd_demo(args: argparse.Namespace) -> int:
    from polydiff.apps.diffusionnag.demo import DEMO

    rep = DEMO.demo(Path(args.output), quick=args.quick)
    if args.json:
        emit({"title": rep.title, **rep.metrics,
              "figures": [str(f) for f in rep.figures]}, True)
    else:
        print(rep.title)
        print(rep.text)
        emit(rep.metrics, False)
    return 0
