"""The ``unidiffuser`` verbs (imported by :mod:`polydiff.apps.unidiffuser.main` when a command
runs).

Every verb checks its input before it writes anything and writes its files atomically, so bad
input leaves no partial output; ``train`` holds its run folder (a second process training
into it is refused) and resumes with ``--resume``.
"""

from __future__ import annotations

import argparse
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polydiff.core.cli import CLIError, emit, load_config, run_demo, save_config
from polydiff.core.cli import require_at_least as _positive
from polydiff.core.cli import require_output_dir as _output_dir

__all__ = ["TrainSettings", "cmd_train", "cmd_sample", "cmd_evaluate", "cmd_demo",
           "load_model"]


@dataclass
class TrainSettings:
    """``unidiffuser train`` settings (TOML via ``--config``, ``--set key=value``; flags win)."""

    data: str = "digits"
    task: str = "joint"
    steps: int = 4000
    batch_size: int = 128
    lr: float = 2e-3
    text_steps: int = 800
    text_encoder: str = "gru"
    latent_tokens: int = 4
    latent_dim: int = 8
    hidden_size: int = 64
    depth: int = 4
    num_heads: int = 4
    patch_size: int = 4
    prediction: str = "sample"
    clean_prob: float = 0.25
    noise_prob: float = 0.1
    one_clean_prob: float = 0.0
    guidance_dropout: float = 0.1
    image_size: int = 8
    channels: int = 1
    limit: int = 0
    grammar_captions: int = 20000
    device: str = "auto"
    seed: int = 0


# ----------------------------------------------------------------------------- models
def load_model(path: str | None) -> Any:
    """The model at ``path`` (a model folder or a ``train`` run folder holding ``model/``),
    or the starter weights when ``path`` is None."""
    from polydiff.multimodal.unidiffuser import load_unidiffuser

    if path is None:
        from polydiff.apps.unidiffuser.starter import starter_model

        return starter_model("joint")
    p = Path(path)
    if not p.exists():
        raise CLIError(f"model folder '{p}' does not exist")
    if (p / "model").is_dir() and not (p / "unidiffuser.json").exists():
        p = p / "model"
    return load_unidiffuser(p)


def _guidance(args: argparse.Namespace, model: Any, mode: str) -> float:
    if args.guidance is not None:
        if not math.isfinite(args.guidance) or args.guidance < 0:
            raise CLIError(f"--guidance must be a finite number >= 0, got {args.guidance}")
        return float(args.guidance)
    return float(model.meta.get("guidance", {}).get(mode, 0.0))


# ----------------------------------------------------------------------------- train
def _train_settings(args: argparse.Namespace) -> TrainSettings:
    s = load_config(TrainSettings, args.config, args.set)
    flags = {"data": args.data, "task": args.task, "steps": args.steps,
             "batch_size": args.batch_size, "text_steps": args.text_steps,
             "text_encoder": args.text_encoder, "image_size": args.image_size,
             "channels": args.channels, "limit": args.limit, "seed": args.seed}
    for key, value in flags.items():
        if value is not None:
            setattr(s, key, value)
    if s.task not in ("joint", "t2i", "i2t"):
        raise CLIError(f"task must be joint, t2i or i2t, got {s.task!r}")
    if s.prediction not in ("epsilon", "v_prediction", "sample"):
        raise CLIError(f"prediction must be epsilon, v_prediction or sample, got "
                       f"{s.prediction!r}")
    if s.text_encoder not in ("gru", "minilm"):
        raise CLIError(f"text_encoder must be gru or minilm, got {s.text_encoder!r}")
    for name in ("steps", "batch_size", "text_steps", "latent_tokens", "latent_dim",
                 "hidden_size", "depth", "num_heads", "patch_size"):
        _positive(name.replace("_", "-"), getattr(s, name))
    _positive("image-size", s.image_size, 2)
    _positive("limit", s.limit, 0)
    for name in ("clean_prob", "noise_prob", "one_clean_prob", "guidance_dropout"):
        v = getattr(s, name)
        if not 0.0 <= v <= 1.0:
            raise CLIError(f"{name} must lie in [0, 1], got {v}")
    if s.clean_prob + s.noise_prob > 1.0:
        raise CLIError("clean_prob + noise_prob must not exceed 1")
    if s.lr <= 0:
        raise CLIError(f"lr must be > 0, got {s.lr}")
    return s


def _train_data(s: TrainSettings) -> tuple[Any, dict[str, Any], list[str]]:
    """(training pairs, metadata, extra text-only captions)."""
    from polydiff.multimodal.data import load_caption_folder, load_captioned_digits
    from polydiff.multimodal.unidiffuser.train import grammar_captions

    if s.data == "digits":
        splits = load_captioned_digits(seed=s.seed)
        meta = {"data": "digits", "split_seed": s.seed,
                "attributes": splits.attributes.to_dict()}
        return splits.train, meta, grammar_captions(s.grammar_captions, s.seed + 1)
    data = load_caption_folder(s.data, size=s.image_size, channels=s.channels,
                               limit=s.limit or None)
    return data, {"data": str(s.data), "images": len(data)}, []


def cmd_train(args: argparse.Namespace) -> int:
    s = _train_settings(args)
    out = Path(args.output)
    _output_dir(out)
    if s.data != "digits" and not Path(s.data).is_dir():
        raise CLIError(f"--data must be 'digits' or an existing folder, got '{s.data}'")
    text_model = Path(args.text_model) if args.text_model else None
    if text_model is not None and not (text_model / "model.safetensors").is_file():
        raise CLIError(f"--text-model '{text_model}' holds no trained text autoencoder")
    from polydiff.core.training.lock import RunLock, RunLockedError

    try:
        with RunLock(out):
            return _train(args, s, out, text_model)
    except RunLockedError as exc:
        raise CLIError(str(exc)) from None


def _train(args: argparse.Namespace, s: TrainSettings, out: Path, text_model: Path | None
           ) -> int:
    import torch

    from polydiff.multimodal.text import TextAutoencoder
    from polydiff.multimodal.unidiffuser.train import (
        DiffusionSettings,
        TextSettings,
        captions_for_text_training,
        train_text_autoencoder,
        train_unidiffuser,
    )

    data, meta, extra = _train_data(s)
    if not args.resume:  # a fresh run: never continue a differently configured one
        for name in ("model", "text", "diffusion", "train.toml", "loss.png"):
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)
    progress = not args.json
    tic = time.perf_counter()
    if text_model is not None:
        text = TextAutoencoder.from_pretrained(text_model)
    else:
        ts = TextSettings(encoder=s.text_encoder, latent_tokens=s.latent_tokens,  # type: ignore[arg-type]
                          latent_dim=s.latent_dim, steps=s.text_steps,
                          max_len=14 if s.data == "digits" else 24)
        text = train_text_autoencoder(captions_for_text_training(data, extra), out / "text",
                                      ts, seed=s.seed, progress=progress, resume=args.resume,
                                      device=s.device)
    ds = DiffusionSettings(task=s.task, steps=s.steps, batch_size=s.batch_size,  # type: ignore[arg-type]
                           lr=s.lr, clean_prob=s.clean_prob, noise_prob=s.noise_prob,
                           one_clean_prob=s.one_clean_prob,
                           guidance_dropout=s.guidance_dropout, hidden_size=s.hidden_size,
                           depth=s.depth, num_heads=s.num_heads, patch_size=s.patch_size,
                           prediction=s.prediction)  # type: ignore[arg-type]
    try:
        model = train_unidiffuser(data, out / "diffusion", ds, text, seed=s.seed,
                                  progress=progress, resume=args.resume, meta=meta,
                                  device=s.device)
    except ValueError as exc:
        raise CLIError(f"cannot train on this data: {exc}") from None
    model.save(out / "model")
    save_config(s, out / "train.toml")
    figures = _loss_curve(out)
    emit({"run": str(out), "model": str(out / "model"), "task": s.task, "data": s.data,
          "pairs": model.meta["train"]["pairs"], "steps": s.steps,
          "parameters": model.parameters_count(),
          "vocabulary": len(model.text.vocab) - 4,
          "final_loss": model.meta["train"].get("final_loss"),
          "seconds": round(time.perf_counter() - tic, 2),
          "torch_threads": torch.get_num_threads(),
          "figures": [str(f) for f in figures]}, args.json)
    return 0


def _loss_curve(run: Path) -> list[Path]:
    from polydiff.core.plots import line_plot, plots_available
    from polydiff.core.training.rundir import read_stats

    curves = {}
    for name, label in (("diffusion", "joint noise MSE"), ("text", "text cross-entropy")):
        recs = read_stats(run / name)
        if len(recs) >= 2:
            curves[label] = ([r["step"] for r in recs], [r["loss"] for r in recs])
    if not curves or not plots_available():
        return []
    return [line_plot(run / "loss.png", curves, xlabel="step", ylabel="training loss",
                      title="UniDiffuser training", logy=True)]


# ----------------------------------------------------------------------------- sample
def _read_images(paths: list[str], model: Any) -> Any:
    import numpy as np

    from polydiff.multimodal.data import read_image

    c = model.config
    imgs = []
    for p in paths:
        if not Path(p).is_file():
            raise CLIError(f"image '{p}' does not exist")
        imgs.append(read_image(Path(p), c.image_size, c.image_channels))
    return np.stack(imgs)


def _to_unit(images: Any) -> Any:
    import numpy as np

    x = (np.asarray(images) + 1.0) / 2.0
    return x[:, 0] if x.shape[1] == 1 else x.transpose(0, 2, 3, 1)


def _save_pngs(images: Any, out: Path, stem: str) -> list[Path]:
    import numpy as np
    from PIL import Image

    from polydiff.core.utils import atomic_path

    paths = []
    for i, img in enumerate(_to_unit(images)):
        arr = np.clip(np.rint(np.asarray(img) * 255), 0, 255).astype(np.uint8)
        im = Image.fromarray(arr, mode="L" if arr.ndim == 2 else "RGB")
        scale = max(1, 64 // max(arr.shape[:2]))
        im = im.resize((arr.shape[1] * scale, arr.shape[0] * scale), Image.Resampling.NEAREST)
        path = out / f"{stem}_{i:03d}.png"
        with atomic_path(path) as tmp:
            im.save(tmp, format="PNG")
        paths.append(path)
    return paths


def cmd_sample(args: argparse.Namespace) -> int:
    mode = args.mode
    _positive("--steps", args.steps)
    _positive("--num", args.num)
    prompts, images = args.prompt or [], args.image or []
    if mode in ("t2i", "t2i2t") and not prompts:
        raise CLIError(f"--mode {mode} needs --prompt TEXT")
    if mode in ("i2t", "i2t2i") and not images:
        raise CLIError(f"--mode {mode} needs --image FILE")
    if prompts and mode not in ("t2i", "t2i2t"):
        raise CLIError(f"--prompt is for --mode t2i or t2i2t, not {mode}")
    if images and mode not in ("i2t", "i2t2i"):
        raise CLIError(f"--image is for --mode i2t or i2t2i, not {mode}")
    out = Path(args.output)
    _output_dir(out)
    model = load_model(args.model)
    from polydiff.multimodal.unidiffuser.sampling import TASK_MODES, sample

    if mode not in TASK_MODES[model.config.task]:
        raise CLIError(f"this model was trained for {model.config.task!r} only; it samples "
                       f"{', '.join(TASK_MODES[model.config.task])}")
    guidance = _guidance(args, model, "i2t" if mode.startswith("i2t") else "t2i")
    pixels = _read_images(images, model) if images else None
    if prompts:
        bad = {w for p in prompts for w in model.text.vocab.unknown(p)}
        if bad and model.text.config.encoder == "gru":
            raise CLIError(f"unknown word(s) in --prompt: {', '.join(sorted(bad)[:6])}; the "
                           f"model knows {len(model.text.vocab) - 4} words, e.g. "
                           f"{', '.join(model.text.vocab.words[4:14])}")
        prompts = [p for p in prompts for _ in range(args.num)]
    tic = time.perf_counter()
    res = sample(model, mode, prompts=prompts or None, images=pixels, n=args.num,
                 guidance=guidance, steps=args.steps, seed=args.seed)
    seconds = time.perf_counter() - tic
    files = _write_samples(out, mode, res, prompts, images, pixels)
    emit({"mode": mode, "output": str(out), "guidance": guidance, "steps": args.steps,
          "captions": res.captions or [], "prompts": prompts,
          "seconds": round(seconds, 2), "files": [str(f) for f in files]}, args.json)
    return 0


def _write_samples(out: Path, mode: str, res: Any, prompts: list[str], images: list[str],
                   pixels: Any) -> list[Path]:
    import json

    from polydiff.core.plots import image_grid, plots_available
    from polydiff.core.utils import atomic_write

    out.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    record: dict[str, Any] = {"mode": mode}
    if res.images is not None:
        files += _save_pngs(res.images, out, "image")
    if mode in ("t2i",):
        record["samples"] = [{"prompt": p, "image": f.name} for p, f in zip(prompts, files)]
        grid, labels = res.images, prompts
    elif mode in ("i2t", "i2t2i"):
        record["samples"] = [{"image": i, "caption": c} for i, c in zip(images, res.captions)]
        if mode == "i2t2i":
            for rec, f in zip(record["samples"], files):
                rec["regenerated"] = f.name
        grid, labels = pixels, res.captions
    elif mode == "t2i2t":
        record["samples"] = [{"prompt": p, "image": f.name, "caption": c}
                             for p, f, c in zip(prompts, files, res.captions)]
        grid, labels = res.images, [f"{p} -> {c}" for p, c in zip(prompts, res.captions)]
    elif mode == "joint":
        record["samples"] = [{"image": f.name, "caption": c}
                             for f, c in zip(files, res.captions)]
        grid, labels = res.images, res.captions
    elif mode == "image":
        record["samples"] = [{"image": f.name} for f in files]
        grid, labels = res.images, None
    else:
        record["samples"] = [{"caption": c} for c in res.captions]
        grid, labels = None, None
    files.append(atomic_write(out / "samples.json", json.dumps(record, indent=2) + "\n"))
    if grid is not None and plots_available():
        n = len(grid)
        nrow = n if labels is not None else max(1, int(n**0.5))
        files.append(image_grid(out / "samples.png", _to_unit(grid), nrow=nrow,
                                row_labels=labels, vmin=0.0, vmax=1.0,
                                title=f"UniDiffuser, mode {mode}"))
    return files


# ----------------------------------------------------------------------------- evaluate
def cmd_evaluate(args: argparse.Namespace) -> int:
    _positive("--steps", args.steps)
    _positive("--limit", args.limit)
    model = load_model(args.model)
    if model.meta.get("data") != "digits":
        raise CLIError("evaluate scores models trained on the captioned digits (--data "
                       "digits); this one was trained on " + str(model.meta.get("data")))
    import numpy as np

    from polydiff.multimodal.data import DigitAttributes, load_captioned_digits
    from polydiff.multimodal.unidiffuser.evaluation import evaluate_model
    from polydiff.multimodal.unidiffuser.metrics import DigitJudge

    splits = load_captioned_digits(seed=int(model.meta.get("split_seed", 0)))
    attrs = DigitAttributes.from_dict(model.meta["attributes"]) \
        if "attributes" in model.meta else splits.attributes
    data = getattr(splits, args.split)
    if args.limit:
        data = data.subset(np.arange(min(args.limit, len(data))))
    assert splits.train.labels is not None  # the digits are labelled
    judge = DigitJudge.fit(splits.train.images, splits.train.labels, attrs)
    guidance = {m: _guidance(args, model, m) for m in ("t2i", "i2t")}
    tic = time.perf_counter()
    scores = evaluate_model(model, data, judge, guidance=guidance | {"joint": 0.0},
                            steps=args.steps, seed=args.seed)
    real = float(np.mean(judge.classify(data.images) == data.labels))
    emit({"task": model.config.task, "split": args.split, "digits": len(data),
          "guidance": guidance, "steps": args.steps,
          "classifier_accuracy_on_real_digits": real, "scores": scores,
          "seconds": round(time.perf_counter() - tic, 2)}, args.json)
    return 0


# ----------------------------------------------------------------------------- demo
def cmd_demo(args: argparse.Namespace) -> int:
    from polydiff.apps.unidiffuser.demo import DEMO

    run_demo(DEMO, args.output, quick=args.quick, as_json=args.json)
    return 0
