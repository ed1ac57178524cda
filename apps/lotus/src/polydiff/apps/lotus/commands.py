"""The ``lotus`` verbs (imported by :mod:`polydiff.apps.lotus.main` when a command runs).

Every verb checks its input before it writes anything, computes everything, then writes its
files atomically, so bad input leaves no partial output.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from polydiff.core.cli import (
    CLIError,
    emit,
    load_config,
    require_at_least,
    run_demo,
    save_config,
)

__all__ = ["cmd_train", "cmd_predict", "cmd_evaluate", "cmd_demo", "train_command"]

SETTINGS_NAME = "train.toml"
_OUTPUTS = ("model", "runs", SETTINGS_NAME)


@contextlib.contextmanager
def _run_folder(out: Path, resume: bool, overwrite: bool) -> Iterator[Path | None]:
    """Start, resume (``--resume``: yields the saved settings) or restart (``--overwrite``)
    the run in ``out`` through the engine's :func:`polydiff.core.training.start_run`."""
    from polydiff.core.training import start_run

    with start_run(out, resume=resume, overwrite=overwrite, settings_name=SETTINGS_NAME,
                   outputs=_OUTPUTS) as run:
        if resume and run.saved_settings is None:
            raise CLIError(f"{out}: no run to continue (no {SETTINGS_NAME})")
        yield run.saved_settings


# ----------------------------------------------------------------------------- train
def _train_settings(args: argparse.Namespace, saved: Path | None) -> Any:
    from polydiff.dense.lotus.train import LotusSettings

    s = load_config(LotusSettings, args.config or saved, args.set)
    s.task = args.task
    for key in ("variant", "steps", "prior_steps", "batch_size", "seed"):
        value = getattr(args, key, None)
        if value is not None:
            setattr(s, key, value)
    if args.no_detail_preserver:
        s.detail_preserver = False
    for key in ("steps", "batch_size"):
        require_at_least(f"--{key.replace('_', '-')}", getattr(s, key))
    require_at_least("--prior-steps", s.prior_steps, 0)
    return LotusSettings.from_dict(s.to_dict())   # re-validated


def train_command(s: Any) -> str:
    """The ``lotus train`` command line that reproduces settings ``s``."""
    from polydiff.dense.lotus.train import LotusSettings

    default = LotusSettings()
    parts = [f"lotus train --task {s.task}"]
    for key in ("variant", "steps", "prior_steps", "batch_size", "seed"):
        if getattr(s, key) != getattr(default, key):
            parts.append(f"--{key.replace('_', '-')} {getattr(s, key)}")
    if not s.detail_preserver:
        parts.append("--no-detail-preserver")
    return " ".join(parts + ["-o OUT"])


def cmd_train(args: argparse.Namespace) -> int:
    from polydiff.apps.lotus import workflow as wf

    out = Path(args.output)
    with _run_folder(out, args.resume, args.overwrite) as saved:
        s = _train_settings(args, saved)
        save_config(s, out / SETTINGS_NAME)
        manifest = wf.train_model(s, out, resume=args.resume, command=train_command(s),
                                  log=lambda m: print(m, file=sys.stderr))
    if args.json:
        emit(manifest, True)
    else:
        emit({"model": str(out / "model"), "cpu_seconds": round(manifest["cpu_seconds"], 1),
              "heldout": manifest["rescore"]}, False)
    return 0


# ----------------------------------------------------------------------------- predict
def cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from polydiff.apps.lotus import workflow as wf
    from polydiff.core.utils import atomic_path
    from polydiff.dense.images import read_image, write_png

    require_at_least("--max-side", args.max_side, 16)
    out = Path(args.output)
    if out.suffix.lower() != ".png":
        raise CLIError(f"{out}: the output must be a .png file")
    if out.is_dir():
        raise CLIError(f"{out}: is a folder")
    image = read_image(args.image)
    if min(image.shape[:2]) < 8:
        raise CLIError(f"{args.image}: image too small ({image.shape[1]}x{image.shape[0]})")
    m = wf.load_model(args.task, args.model)
    tic = time.perf_counter()
    pred = wf.predict_image(m, image, max_side=args.max_side, seed=args.seed)
    secs = time.perf_counter() - tic
    picture = wf.colorize_depth(pred) if m.task == "depth" else wf.normal_to_rgb(pred)
    raw = out.with_suffix(".npy")
    buf = io.BytesIO()
    np.save(buf, pred.astype(np.float32))
    with atomic_path(raw) as tmp:
        tmp.write_bytes(buf.getvalue())
    write_png(out, picture)
    emit({"files": [str(out), str(raw)], "task": m.task, "variant": m.variant,
          "size": f"{image.shape[1]}x{image.shape[0]}", "model": str(m.path),
          "seconds": round(secs, 3)}, args.json)
    return 0


# ----------------------------------------------------------------------------- evaluate
def cmd_evaluate(args: argparse.Namespace) -> int:
    from polydiff.apps.lotus import workflow as wf
    from polydiff.dense.lotus.evaluate import middlebury_set, scene_set, score

    require_at_least("--scenes", args.scenes)
    m = wf.load_model(args.task, args.model)
    size = int(m.settings.get("size", 64))
    sets = {"test scenes": scene_set("test", args.scenes, size)}
    if m.task == "depth":
        sets["middlebury"] = middlebury_set()
    res: dict[str, Any] = {}
    for name, es in sets.items():
        res[name] = {"lotus": score(m.method(), es, m.task),
                     "trivial": score(wf.trivial_method(m.task), es, m.task)}
    if args.json:
        emit({"model": str(m.path), "task": m.task, "variant": m.variant, "results": res},
             True)
        return 0
    for name, by_m in res.items():
        rows = [{"method": k, **{mk: round(mv, 4) for mk, mv in v.items()}}
                for k, v in by_m.items()]
        emit({f"{m.task} / {name}": rows}, False)
    return 0


# ----------------------------------------------------------------------------- demo
def cmd_demo(args: argparse.Namespace) -> int:
    from polydiff.apps.lotus.demo import DEMO

    run_demo(DEMO, args.output, quick=args.quick, as_json=args.json)
    return 0
