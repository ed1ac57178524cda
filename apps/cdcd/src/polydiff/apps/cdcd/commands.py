"""The ``cdcd`` verbs (imported by :mod:`polydiff.apps.cdcd.main` when a command runs).

Every verb checks its input before it writes anything and writes its files atomically, so bad
input leaves no partial output; ``train`` holds its run folder through the engine's
:func:`~polydiff.core.training.start_run` (refused when not empty unless ``--resume`` or
``--overwrite``) and resumes from the newest intact checkpoint.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polydiff.core.cli import CLIError, emit, load_config, run_demo, save_config
from polydiff.core.cli import require_at_least as _positive
from polydiff.core.cli import require_output_dir as _output_dir

__all__ = ["TrainSettings", "cmd_train", "cmd_sample", "cmd_evaluate", "cmd_demo",
           "load_model"]

TRAIN_FILE = "train.toml"


@dataclass
class TrainSettings:
    """``cdcd train`` settings (TOML via ``--config``, ``--set key=value``; flags win)."""

    task: str = "digits"
    variant: str = "sample"
    negatives: str = "inter"
    num_negatives: int = 2
    contrastive_weight: float = 0.1
    temperature: float = 1.0
    chunks: int = 8
    steps: int = 600
    batch_size: int = 32
    lr: float = 2e-3
    aux_weight: float = 1.0
    ema_decay: float = 0.99
    levels: int = 4
    chorales: int = 120
    num_steps: int = 50
    hidden_size: int = 32
    depth: int = 2
    num_heads: int = 2
    device: str = "auto"
    seed: int = 0


def load_model(path: str | None) -> Any:
    """The model at ``path`` (a model folder or a ``train`` run folder holding ``model/``),
    or the starter CDCD weights when ``path`` is None."""
    from polydiff.multimodal.cdcd import load_cdcd

    if path is None:
        from polydiff.apps.cdcd.starter import starter_model

        return starter_model("cdcd")
    p = Path(path)
    if not p.exists():
        raise CLIError(f"model folder '{p}' does not exist")
    if (p / "model").is_dir() and not (p / "cdcd.json").exists():
        p = p / "model"
    try:
        return load_cdcd(p)
    except (FileNotFoundError, ValueError) as exc:
        raise CLIError(str(exc)) from None


# ----------------------------------------------------------------------------- train
def _train_settings(args: argparse.Namespace) -> TrainSettings:
    s = load_config(TrainSettings, args.config, args.set)
    flags = {"task": args.task, "variant": args.variant, "negatives": args.negatives,
             "steps": args.steps, "batch_size": args.batch_size, "seed": args.seed}
    for key, value in flags.items():
        if value is not None:
            setattr(s, key, value)
    if s.task not in ("digits", "music"):
        raise CLIError(f"task must be digits or music, got {s.task!r}")
    for name in ("steps", "batch_size", "num_negatives", "num_steps", "hidden_size", "depth",
                 "num_heads"):
        _positive(name.replace("_", "-"), getattr(s, name))
    _positive("levels", s.levels, 2)
    _positive("chorales", s.chorales, 3)
    _positive("chunks", s.chunks, 2)
    length = 64 if s.task == "digits" else 32
    if length % s.chunks:
        raise CLIError(f"chunks must divide the {length} tokens of a {s.task} sample, got "
                       f"{s.chunks}")
    if s.hidden_size % s.num_heads:
        raise CLIError("hidden_size must be divisible by num_heads")
    for name in ("lr", "temperature"):
        if not getattr(s, name) > 0:
            raise CLIError(f"{name} must be > 0, got {getattr(s, name)}")
    for name in ("aux_weight", "contrastive_weight"):
        if not getattr(s, name) >= 0:
            raise CLIError(f"{name} must be >= 0, got {getattr(s, name)}")
    if not 0.0 <= s.ema_decay < 1.0:
        raise CLIError(f"ema_decay must lie in [0, 1), got {s.ema_decay}")
    try:
        _contrastive(s)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    return s


def _contrastive(s: TrainSettings) -> Any:
    from polydiff.multimodal.cdcd import ContrastiveSettings

    return ContrastiveSettings(variant=s.variant, negatives=s.negatives,
                               num_negatives=s.num_negatives, weight=s.contrastive_weight,
                               temperature=s.temperature, chunks=s.chunks)


def train_command(s: TrainSettings) -> str:
    """The ``cdcd train`` command line that reproduces ``s`` (starter manifest)."""
    return (f"cdcd train --task {s.task} --variant {s.variant} --negatives {s.negatives} "
            f"--steps {s.steps} --batch-size {s.batch_size} --seed {s.seed} -o RUN")


def cmd_train(args: argparse.Namespace) -> int:
    if args.resume and args.overwrite:
        raise CLIError("--resume and --overwrite exclude each other")
    s0 = _train_settings(args)  # bad settings: nothing created
    _output_dir(Path(args.output))
    from polydiff.core.training.runs import start_run

    try:
        with start_run(args.output, resume=args.resume, overwrite=args.overwrite,
                       settings_name=TRAIN_FILE, outputs=("model", "loss.png")) as run:
            s = s0
            if run.saved_settings is not None and args.config is None:
                args.config = str(run.saved_settings)
                s = _train_settings(args)
            return _train(args, s, Path(args.output))
    except ValueError as exc:
        raise CLIError(str(exc)) from None


def _train(args: argparse.Namespace, s: TrainSettings, out: Path) -> int:
    import torch

    from polydiff.multimodal.cdcd import CDCDConfig, load_digit_tokens, train_cdcd
    from polydiff.multimodal.cdcd import TrainSettings as LibSettings

    if s.task == "music":
        from polydiff.multimodal.cdcd.music import load_chorale_melodies

        splits = load_chorale_melodies(limit=s.chorales)
        cfg = CDCDConfig(num_tokens=splits.num_tokens, seq_len=32, num_labels=0, cond_vocab=3,
                         num_steps=s.num_steps, hidden_size=s.hidden_size, depth=s.depth,
                         num_heads=s.num_heads)
    else:
        splits = load_digit_tokens(levels=s.levels)
        cfg = CDCDConfig(num_tokens=s.levels, seq_len=64, num_labels=10,
                         num_steps=s.num_steps, hidden_size=s.hidden_size, depth=s.depth,
                         num_heads=s.num_heads)
    ls = LibSettings(steps=s.steps, batch_size=s.batch_size, lr=s.lr, aux_weight=s.aux_weight,
                     ema_decay=s.ema_decay or None, contrastive=_contrastive(s))
    save_config(s, out / TRAIN_FILE)  # before training: what --resume of a killed run reads
    tic = time.perf_counter()
    model = train_cdcd(splits.train, out, cfg, ls, seed=s.seed, progress=not args.json,
                       resume=args.resume, device=s.device,
                       meta={"task": s.task, "levels": s.levels, "split_seed": 0,
                             "chorales": s.chorales,
                             "variant": s.variant, "negatives": s.negatives})
    model.save(out / "model")
    figures = _loss_curve(out)
    emit({"run": str(out), "model": str(out / "model"), "task": s.task,
          "variant": s.variant, "negatives": s.negatives, "steps": s.steps,
          "parameters": model.parameters_count(),
          "final_loss": model.meta["train"].get("final_loss"),
          "seconds": round(time.perf_counter() - tic, 2),
          "torch_threads": torch.get_num_threads(),
          "figures": [str(f) for f in figures]}, args.json)
    return 0


def _loss_curve(run: Path) -> list[Path]:
    from polydiff.core.plots import line_plot, plots_available
    from polydiff.core.training.rundir import read_stats

    recs = read_stats(run)
    if len(recs) < 2 or not plots_available():
        return []
    return [line_plot(run / "loss.png", {"training loss": ([r["step"] for r in recs],
                                                          [r["loss"] for r in recs])},
                      xlabel="step", ylabel="loss (nats)", title="CDCD training")]


# ----------------------------------------------------------------------------- sample
def _sample_steps(args: argparse.Namespace, model: Any) -> int:
    _positive("--sample-steps", args.sample_steps)
    t = model.config.num_steps
    if args.sample_steps > t:
        raise CLIError(f"--sample-steps must be <= the model's T = {t}, got {args.sample_steps}")
    return int(args.sample_steps)


def cmd_sample(args: argparse.Namespace) -> int:
    _positive("--num", args.num)
    _positive("--sample-steps", args.sample_steps)
    digits = args.digit if args.digit else list(range(10))
    bad = [d for d in digits if not 0 <= d <= 9]
    if bad:
        raise CLIError(f"--digit must lie in 0..9, got {bad[0]}")
    out = Path(args.output)
    _output_dir(out)
    model = load_model(args.model)
    steps = _sample_steps(args, model)
    if model.meta.get("task") == "music":
        if args.digit:
            raise CLIError("--digit is for digit models; a music model writes melodies for "
                           "held-out rhythm tracks")
        return _sample_music(args, model, steps, out)
    import numpy as np
    import torch

    labels = torch.tensor([d for d in digits for _ in range(args.num)])
    tic = time.perf_counter()
    tokens = model.generate(len(labels), labels=labels, steps=steps, seed=args.seed).numpy()
    seconds = time.perf_counter() - tic
    files = _write_samples(out, tokens, labels.numpy(), model, args.num)
    emit({"output": str(out), "digits": digits, "num": args.num, "sample_steps": steps,
          "seconds": round(seconds, 2), "files": [str(f) for f in files],
          "mean_grey": float(np.mean(tokens))}, args.json)
    return 0


def _write_samples(out: Path, tokens: Any, labels: Any, model: Any, per: int) -> list[Path]:
    import numpy as np
    from PIL import Image

    from polydiff.core.plots import image_grid, plots_available
    from polydiff.core.utils import atomic_path, atomic_write
    from polydiff.multimodal.cdcd import dequantise_digits

    out.mkdir(parents=True, exist_ok=True)
    grey = dequantise_digits(tokens, model.config.num_tokens).reshape(-1, 8, 8)
    files: list[Path] = []
    for i, img in enumerate(grey):
        arr = np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)
        im = Image.fromarray(arr, mode="L").resize((64, 64), Image.Resampling.NEAREST)
        path = out / f"digit{int(labels[i])}_{i:03d}.png"
        with atomic_path(path) as tmp:
            im.save(tmp, format="PNG")
        files.append(path)
    record = {"samples": [{"digit": int(d), "image": f.name, "tokens": t.tolist()}
                          for d, f, t in zip(labels, files, tokens)]}
    files.append(atomic_write(out / "samples.json", json.dumps(record) + "\n"))
    if plots_available():
        rows = len(grey) // per
        files.append(image_grid(out / "samples.png", grey, nrow=rows,
                                row_labels=[str(int(labels[r * per])) for r in range(rows)],
                                vmin=0.0, vmax=1.0, title="CDCD samples"))
    return files


def _sample_music(args: argparse.Namespace, model: Any, steps: int, out: Path) -> int:
    import numpy as np
    import torch

    from polydiff.core.utils import atomic_write
    from polydiff.multimodal.cdcd.music import beat_scores, load_chorale_melodies, write_midi

    test = load_chorale_melodies(limit=int(model.meta.get("chorales", 120))).test
    assert test.cond is not None  # melodies carry their rhythm track
    n = min(args.num, len(test))
    rhythm = torch.as_tensor(test.cond[:n])
    tic = time.perf_counter()
    tokens = model.generate(n, cond=rhythm, steps=steps, seed=args.seed).numpy()
    seconds = time.perf_counter() - tic
    out.mkdir(parents=True, exist_ok=True)
    files = [write_midi(t, out / f"melody_{i:03d}.mid") for i, t in enumerate(tokens)]
    record = {"samples": [{"midi": f.name, "tokens": t.tolist(), "rhythm": r.tolist()}
                          for f, t, r in zip(files, tokens, test.cond[:n])]}
    files.append(atomic_write(out / "samples.json", json.dumps(record) + "\n"))
    emit({"output": str(out), "task": "music", "num": n, "sample_steps": steps,
          "seconds": round(seconds, 2), "files": [str(f) for f in files],
          **beat_scores(tokens, np.asarray(test.cond[:n]))}, args.json)
    return 0


# ----------------------------------------------------------------------------- evaluate
def _evaluate_music(args: argparse.Namespace, model: Any, steps: int) -> int:
    import numpy as np
    import torch

    from polydiff.multimodal.cdcd.music import beat_scores, load_chorale_melodies, pitch_class_tv

    data = getattr(load_chorale_melodies(limit=int(model.meta.get("chorales", 120))),
                   args.split)
    if args.limit:
        data = data.subset(np.arange(min(args.limit, len(data))))
    tic = time.perf_counter()
    tokens = model.generate(len(data), cond=torch.as_tensor(data.cond), steps=steps,
                            seed=args.seed).numpy()
    scores = beat_scores(tokens, data.cond) | {
        "pitch_class_tv": pitch_class_tv(tokens, data.tokens), "melodies": len(data),
        "steps": steps}
    emit({"split": args.split, "task": "music", "variant": model.meta.get("variant"),
          "scores": scores, "seconds": round(time.perf_counter() - tic, 2)}, args.json)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    _positive("--limit", args.limit)
    _positive("--sample-steps", args.sample_steps)
    model = load_model(args.model)
    steps = _sample_steps(args, model)
    if model.meta.get("task") == "music":
        return _evaluate_music(args, model, steps)
    import numpy as np

    from polydiff.multimodal.cdcd import DigitJudge, load_digit_tokens, score_digits

    splits = load_digit_tokens(levels=model.config.num_tokens)
    data = getattr(splits, args.split)
    if args.limit:
        data = data.subset(np.arange(min(args.limit, len(data))))
    judge = DigitJudge.fit(splits.train, model.config.num_tokens)
    tic = time.perf_counter()
    scores = score_digits(model, data, judge, steps=steps, seed=args.seed)
    emit({"split": args.split, "variant": model.meta.get("variant"), "scores": scores,
          "classifier_accuracy_on_real_digits": judge.accuracy(data.tokens, data.labels),
          "seconds": round(time.perf_counter() - tic, 2)}, args.json)
    return 0


# ----------------------------------------------------------------------------- demo
def cmd_demo(args: argparse.Namespace) -> int:
    from polydiff.apps.cdcd.demo import DEMO

    run_demo(DEMO, args.output, quick=args.quick, as_json=args.json)
    return 0
