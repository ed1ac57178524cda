"""The ``diffmatch`` verbs (imported by :mod:`polydiff.apps.diffmatch.main` when a command
runs).

Every verb checks its input before it writes anything, computes everything, then writes its
files atomically, so bad input leaves no partial output.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from polydiff.core.cli import CLIError, emit, load_config, save_config

__all__ = ["cmd_train", "cmd_match", "cmd_evaluate", "cmd_demo"]

SETTINGS_NAME = "train.toml"
_OUTPUTS = ("model", "runs", SETTINGS_NAME)


def _note(msg: str) -> None:
    print(f"diffmatch: note: {msg}", file=sys.stderr)


def _positive(name: str, value: int | None, minimum: int = 1) -> None:
    if value is not None and value < minimum:
        raise CLIError(f"{name} must be >= {minimum}, got {value}")


@contextlib.contextmanager
def _run_folder(out: Path, resume: bool, overwrite: bool) -> Iterator[Path | None]:
    """Decide how training starts in ``out`` with the engine's one rule
    (:func:`polydiff.core.training.start_run`, which locks the folder for the whole block):
    a new run, ``--resume`` (continue; yields the saved settings file) or ``--overwrite``
    (delete the run's files first). ``--resume`` of a folder without this app's saved
    settings is refused: there is no run to continue, and training the default settings
    instead would be a surprise."""
    from polydiff.core.training import start_run

    with start_run(out, resume=resume, overwrite=overwrite, settings_name=SETTINGS_NAME,
                   outputs=_OUTPUTS) as run:
        if resume and run.saved_settings is None:
            raise CLIError(f"{out}: no run to continue (no {SETTINGS_NAME})")
        yield run.saved_settings


# ----------------------------------------------------------------------------- train
def _train_settings(args: argparse.Namespace, saved: Path | None) -> Any:
    from polydiff.dense.diffmatch import TrainSettings

    s = load_config(TrainSettings, args.config or saved, args.set)
    for flag, key in (("feature_steps", "feature_steps"), ("coarse_steps", "coarse_steps"),
                      ("sr_steps", "sr_steps"), ("batch_size", "batch_size"),
                      ("seed", "seed")):
        value = getattr(args, flag, None)
        if value is not None:
            setattr(s, key, value)
    if args.features is not None:
        s.pipeline.features = args.features
    for name in ("feature_steps", "coarse_steps", "sr_steps", "batch_size"):
        _positive(f"--{name.replace('_', '-')}", getattr(s, name))
    _positive("--rescore-pairs", args.rescore_pairs)
    return s


def _command_line(args: argparse.Namespace, s: Any) -> str:
    from polydiff.dense.diffmatch import TrainSettings

    default = TrainSettings()
    parts = ["diffmatch train -o OUT"]
    for key in ("feature_steps", "coarse_steps", "sr_steps", "batch_size", "seed"):
        if getattr(s, key) != getattr(default, key):
            parts.append(f"--{key.replace('_', '-')} {getattr(s, key)}")
    if s.pipeline.features != default.pipeline.features:
        parts.append(f"--features {s.pipeline.features}")
    for key, value in vars(s.pipeline).items():   # other pipeline settings (--set)
        if key != "features" and value != getattr(default.pipeline, key):
            text = str(value).lower() if isinstance(value, bool) else value
            parts.append(f"--set pipeline.{key}={text}")
    for key in ("lr", "size", "base_channels", "sr_channels", "ema_decay"):
        if getattr(s, key) != getattr(default, key):
            parts.append(f"--set {key}={getattr(s, key)}")
    if args.rescore_pairs != 16:
        parts.append(f"--rescore-pairs {args.rescore_pairs}")
    return " ".join(parts)


def cmd_train(args: argparse.Namespace) -> int:
    from polydiff.apps.diffmatch import workflow as wf

    out = Path(args.output)
    with _run_folder(out, args.resume, args.overwrite) as saved:
        s = _train_settings(args, saved)
        save_config(s, out / SETTINGS_NAME)
        manifest = wf.train_model(s, out, resume=args.resume,
                                  rescore_pairs=args.rescore_pairs,
                                  command=_command_line(args, s),
                                  log=lambda m: print(m, file=sys.stderr))
    if args.json:
        emit(manifest, True)
    else:
        emit({"model": str(out / "model"), "train_seconds": manifest["train_seconds"],
              "heldout": manifest["heldout_metrics"]}, False)
    return 0


# ----------------------------------------------------------------------------- match
def _check_sampling(args: argparse.Namespace) -> None:
    _positive("--hypotheses", args.hypotheses)
    _positive("--steps", args.steps)


def _read_pair(path_a: str, path_b: str) -> tuple[Any, Any, list[str]]:
    from polydiff.dense.images import read_image, same_size

    a, b = read_image(path_a), read_image(path_b)
    notes = []
    if (a.ndim == 3) != (b.ndim == 3):
        notes.append("one image is grey and the other colour: both are matched on their "
                     "luminance")
    b, note = same_size(a, b)
    if note:
        notes.append(note)
    if min(a.shape[:2]) < 16:
        raise CLIError(f"{path_a}: image too small ({a.shape[1]}x{a.shape[0]}; need at least "
                       "16 pixels per side)")
    return a, b, notes


def cmd_match(args: argparse.Namespace) -> int:
    import numpy as np

    from polydiff.apps.diffmatch import workflow as wf
    from polydiff.dense.flow import flow_to_color, warp_image, write_flo
    from polydiff.dense.images import write_png

    _check_sampling(args)
    out = Path(args.output)
    if out.suffix.lower() != ".flo":
        raise CLIError(f"{out}: the output must be a .flo file")
    if out.is_dir():
        raise CLIError(f"{out}: is a folder")
    a, b, notes = _read_pair(args.image_a, args.image_b)
    pipe, model_dir = wf.load_model(args.model)
    for n in notes:
        _note(n)
    tic = time.perf_counter()
    res = pipe.match(a, b, seed=args.seed, hypotheses=args.hypotheses, steps=args.steps,
                     use_sr=not args.no_sr)
    secs = time.perf_counter() - tic
    flow = res["flow"]
    stem = out.with_suffix("")
    color = flow_to_color(flow)
    warped = warp_image(b, flow)
    unc = res["uncertainty"]
    unc_img = np.clip(unc / max(float(np.percentile(unc, 99)), 1e-6), 0, 1)
    write_flo(out, flow)
    files = [str(out), str(write_png(stem.with_name(stem.name + ".png"), color)),
             str(write_png(stem.with_name(stem.name + "-warped.png"), warped)),
             str(write_png(stem.with_name(stem.name + "-uncertainty.png"), unc_img))]
    mag = np.hypot(flow[0], flow[1])
    emit({"files": files, "size": f"{a.shape[1]}x{a.shape[0]}", "model": str(model_dir),
          "seconds": round(secs, 3), "mean_flow_px": round(float(mag.mean()), 3),
          "max_flow_px": round(float(mag.max()), 3),
          "mean_uncertainty_px": round(float(unc.mean()), 3), "notes": notes}, args.json)
    return 0


# ----------------------------------------------------------------------------- evaluate
def cmd_evaluate(args: argparse.Namespace) -> int:
    from polydiff.apps.diffmatch import workflow as wf
    from polydiff.dense.corruptions import CORRUPTIONS
    from polydiff.dense.diffmatch.evaluate import (
        evaluate,
        heldout_pairs,
        methods,
        middlebury_pairs,
    )

    _check_sampling(args)
    _positive("--pairs", args.pairs)
    corruptions = [c.strip() for c in args.corruptions.split(",") if c.strip()]
    bad = [c for c in corruptions if c != "clean" and c not in CORRUPTIONS]
    if bad or not corruptions:
        raise CLIError(f"unknown corruption(s) {', '.join(bad) or '(none given)'}; expected "
                       f"clean, {', '.join(sorted(CORRUPTIONS))}")
    pipe, model_dir = wf.load_model(args.model)
    if args.steps is not None:
        pipe.config.steps = args.steps
    fns = methods(pipe, opencv=not args.no_opencv, seed=args.seed, hypotheses=args.hypotheses)
    if args.no_sr:
        fns.pop("diffmatch", None)
    sets: dict[str, Any] = {"warps": heldout_pairs(args.pairs)}
    if not args.no_middlebury:
        sets["middlebury"] = middlebury_pairs()
    res = evaluate(fns, sets, corruptions, severity=args.severity, seed=args.seed,
                   log=None if args.json else (lambda m: print(m, file=sys.stderr)))
    if args.json:
        emit({"model": str(model_dir), "results": res}, True)
        return 0
    for set_name, by_c in res.items():
        for c, by_m in by_c.items():
            rows = [{"method": name, "AEPE px": round(m["aepe"], 3),
                     "PCK-1": round(m["pck1"], 3), "PCK-3": round(m["pck3"], 3),
                     "PCK-5": round(m["pck5"], 3), "s/pair": round(m["seconds"], 3)}
                    for name, m in by_m.items()]
            emit({f"{set_name} ({c})": rows}, False)
    return 0


# ----------------------------------------------------------------------------- demo
def cmd_demo(args: argparse.Namespace) -> int:
    from polydiff.apps.diffmatch.demo import DEMO

    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise CLIError(f"{out}: exists and is not a folder")
    report = DEMO.demo(out, quick=args.quick)
    emit({"title": report.title, "metrics": report.metrics,
          "figures": [str(p) for p in report.figures]}, args.json)
    if not args.json:
        print(report.text)
    return 0
