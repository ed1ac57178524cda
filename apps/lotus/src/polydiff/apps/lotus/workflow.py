"""What the ``lotus`` verbs and the demo share: model folders (the shipped starter weights or a
``lotus train`` output), prediction on an image of any size, training with a manifest,
re-scoring on held-out scenes, and figures.

A model folder holds one network (``config.json`` + ``model.safetensors``, core's
``save_pretrained``) and ``lotus.json`` (``task``, ``variant`` and the training settings).
The starter weights are two such folders, ``starter/depth`` and ``starter/normal``, next to
``starter/manifest.json`` (the train commands, commit, device, CPU time and held-out
metrics).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from polydiff.core.cli import read_starter_manifest
from polydiff.core.utils import atomic_dir, atomic_write
from polydiff.dense.images import resize_image, to_rgb
from polydiff.dense.lotus.evaluate import (
    EvalSet,
    facing_normal,
    method_of,
    middlebury_set,
    ramp_depth,
    scene_set,
    score,
)
from polydiff.dense.lotus.model import TASKS, LotusNet, decode, predict
from polydiff.dense.lotus.train import LotusSettings, train_predictor, train_prior

__all__ = ["STARTER_DIR", "MODEL_FILE", "LotusModel", "load_model", "load_manifest",
           "predict_image", "rescore", "train_model", "colorize_depth", "normal_to_rgb",
           "RESCORE_SCENES", "trivial_method"]

STARTER_DIR = Path(__file__).resolve().parent / "starter"
MODEL_FILE = "lotus.json"
DIST = "polydiff-lotus"
#: Held-out test scenes the manifest's ``rescore`` metrics (and the starter test) use.
RESCORE_SCENES = 8


@dataclasses.dataclass
class LotusModel:
    """A loaded model folder: the network, its task and variant, its training settings."""

    net: LotusNet
    task: str
    variant: str
    settings: dict[str, Any]
    path: Path

    def method(self, seed: int = 0) -> Callable[[torch.Tensor], torch.Tensor]:
        return method_of(self.net, self.variant, self.task, seed=seed)


def load_manifest(directory: Path | None = None) -> dict[str, Any]:
    """The starter weights' manifest (or a trained folder's ``manifest.json``)."""
    return read_starter_manifest(Path(directory or STARTER_DIR), DIST)


def load_model(task: str, model: str | Path | None = None) -> LotusModel:
    """The model folder ``model`` (default: the starter weights of ``task``)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    folder = Path(model) if model is not None else STARTER_DIR / task
    meta_path = folder / MODEL_FILE
    if not meta_path.is_file():
        if model is None:
            raise FileNotFoundError(f"the starter weights are missing ({folder}); reinstall "
                                    f"{DIST} or pass --model")
        raise ValueError(f"{folder}: not a lotus model folder (no {MODEL_FILE})")
    meta = json.loads(meta_path.read_text())
    if meta["task"] != task:
        raise ValueError(f"{folder} predicts {meta['task']}, not {task} (pass --task "
                         f"{meta['task']} or another --model)")
    net = LotusNet.from_pretrained(folder)
    net.eval()
    return LotusModel(net, meta["task"], meta["variant"], meta.get("settings", {}), folder)


def working_size(height: int, width: int, max_side: int, multiple: int) -> tuple[int, int]:
    """The aspect ratio kept, the longer side ``max_side``, both sides multiples of
    ``multiple``."""
    f = max_side / max(height, width)
    return (max(multiple, round(height * f / multiple) * multiple),
            max(multiple, round(width * f / multiple) * multiple))


def predict_image(m: LotusModel, image: np.ndarray, *, max_side: int = 96, seed: int = 0
                  ) -> np.ndarray:
    """Prediction for an image ``(H, W)`` or ``(H, W, 3)`` in [0, 1] at its own size: depth
    -> affine-invariant disparity ``(H, W)`` (larger is nearer); normal -> unit normals
    ``(H, W, 3)`` (x right, y up, z towards the camera)."""
    rgb = to_rgb(image)
    h, w = rgb.shape[:2]
    hh, ww = working_size(h, w, max_side, m.net.padding_multiple)
    x = torch.from_numpy(resize_image(rgb, hh, ww)).permute(2, 0, 1)[None] * 2 - 1
    with torch.no_grad():
        out = decode(predict(m.net, m.variant, x, seed=seed), m.task)
        out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)
        if m.task == "normal":
            out = F.normalize(out, dim=1)
    arr = out[0].numpy()
    return arr[0] if m.task == "depth" else np.moveaxis(arr, 0, -1)


def colorize_depth(disparity: np.ndarray) -> np.ndarray:
    """An ``(H, W, 3)`` colour image of a disparity map (min-max normalised; bright = near;
    matplotlib's ``inferno``)."""
    from matplotlib import colormaps

    d = np.asarray(disparity, np.float64)
    ok = np.isfinite(d)
    lo, hi = (float(d[ok].min()), float(d[ok].max())) if ok.any() else (0.0, 1.0)
    v = np.where(ok, (d - lo) / max(hi - lo, 1e-12), 0.0)
    rgb = colormaps["inferno"](v)[..., :3]
    out: np.ndarray = np.where(ok[..., None], rgb, 0.0).astype(np.float32)
    return out


def normal_to_rgb(normal: np.ndarray) -> np.ndarray:
    """Unit normals ``(H, W, 3)`` as colours ``(n + 1) / 2``."""
    out: np.ndarray = np.clip((np.asarray(normal, np.float32) + 1) / 2, 0, 1)
    return out


def trivial_method(task: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The trivial baseline of a task: the floor ramp (depth), normals facing the camera."""
    return ramp_depth if task == "depth" else facing_normal


def rescore(m: LotusModel, scenes: int = RESCORE_SCENES, *, middlebury: bool = True
            ) -> dict[str, float]:
    """Metrics of the model and of the trivial baseline on the first ``scenes`` held-out
    test scenes (and, for depth, the Middlebury motorcycle)."""
    size = int(m.settings.get("size", 64))
    sets: dict[str, EvalSet] = {"test": scene_set("test", scenes, size)}
    if m.task == "depth" and middlebury:
        sets["middlebury"] = middlebury_set()
    out: dict[str, float] = {}
    for name, es in sets.items():
        for method, fn in (("lotus", m.method()), ("trivial", trivial_method(m.task))):
            for k, v in score(fn, es, m.task).items():
                if k not in ("seconds_per_image", "images"):
                    out[f"{name}/{method}/{k}"] = v
    return out


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10, cwd=Path(__file__).parent
                              ).stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def save_model(net: LotusNet, s: LotusSettings, folder: Path) -> Path:
    """Write a model folder atomically."""
    with atomic_dir(folder) as tmp:
        net.save_pretrained(tmp)
        meta = {"task": s.task, "variant": s.variant, "settings": s.to_dict()}
        (Path(tmp) / MODEL_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return folder


def train_model(s: LotusSettings, out: Path, *, resume: bool, command: str,
                log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train the prior and the predictor of ``s`` into ``out/runs``, write the model folder
    ``out/model`` and ``out/model/manifest.json``; returns the manifest."""
    cpu = time.process_time()
    tic = time.perf_counter()
    prior = None
    if s.uses_prior:
        prior, summ = train_prior(s, out / "runs" / "prior", resume=resume)
        if log:
            log(f"prior: step {summ['step']}, loss {summ['loss']}")
    net, summ = train_predictor(s, out / "runs" / "predictor", prior, resume=resume)
    if log:
        log(f"predictor: step {summ['step']}, loss {summ['loss']}")
    folder = save_model(net, s, out / "model")
    m = LotusModel(net, s.task, s.variant, s.to_dict(), folder)
    manifest = {"train_command": command, "commit": _commit(),
                "device": "cuda" if torch.cuda.is_available() else "cpu",
                "cpu_seconds": time.process_time() - cpu,
                "wall_seconds": time.perf_counter() - tic,
                "settings": s.to_dict(), "rescore_scenes": RESCORE_SCENES,
                "rescore": rescore(m)}
    atomic_write(folder / "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())
    return manifest
