"""What the ``diffmatch`` verbs, the demo and ``tools/bench/diffmatch.py`` share: the starter
weights, training a model folder with its manifest, re-scoring, and the figures.

A model folder is what :meth:`polydiff.dense.diffmatch.DiffMatch.save` writes (one
sub-folder per network plus ``diffmatch.json``) and ``manifest.json``: the exact train
command, commit, device, wall time per stage and held-out metrics (:func:`rescore`).
"""

from __future__ import annotations

import json
import platform
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from polydiff.dense.diffmatch import DiffMatch, TrainSettings

__all__ = ["STARTER_DIR", "MANIFEST", "TRAIN_COMMAND", "load_model", "load_manifest",
           "train_model", "rescore", "flow_panel", "RESCORE_METHODS"]

STARTER_DIR = Path(__file__).resolve().parent / "starter"
MANIFEST = "manifest.json"
#: the command the shipped starter weights were trained with (their manifest says how, where
#: and how long: a small CPU run on a shared 2-core machine; the defaults train longer).
TRAIN_COMMAND = ("diffmatch train -o OUT --feature-steps 800 --coarse-steps 2000 "
                 "--sr-steps 1500 --rescore-pairs 8")
#: what :func:`rescore` measures (the learned methods and the argmax they start from).
RESCORE_METHODS = ("diffmatch", "diffmatch_coarse", "regressor", "argmax")


def load_manifest(directory: Path) -> dict[str, Any]:
    """The ``manifest.json`` of a model folder (``{}`` when it has none)."""
    p = Path(directory) / MANIFEST
    return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else {}


def load_model(directory: str | Path | None = None) -> tuple[DiffMatch, Path]:
    """The model in ``directory`` (a model folder, or a run folder holding ``model/``), or
    the shipped starter weights; a ``ValueError`` line when there is none."""
    import torch

    from polydiff.dense.diffmatch import DiffMatch
    from polydiff.dense.diffmatch.model import PIPELINE_FILE

    d = Path(directory) if directory is not None else STARTER_DIR
    if (d / "model" / PIPELINE_FILE).is_file():
        d = d / "model"
    if not (d / PIPELINE_FILE).is_file():
        where = "the package ships no starter weights" if directory is None else \
            f"{d}: not a DiffMatch model folder (no {PIPELINE_FILE})"
        raise ValueError(where)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return DiffMatch.load(d, map_location=device), d


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        out = ""
    return out or "unknown"


def _device() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)})"
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} thread(s))"


def train_model(s: TrainSettings, out: Path, *, resume: bool = False, rescore_pairs: int = 16,
                command: str = TRAIN_COMMAND, log: Any = None) -> dict[str, Any]:
    """Train every stage into ``out/runs`` and write ``out/model`` (networks, config and
    manifest). Returns the manifest."""
    import torch

    from polydiff.dense.diffmatch import train_pipeline

    tic = time.perf_counter()
    pipe, summaries = train_pipeline(s, out, resume=resume, log=log)
    wall = time.perf_counter() - tic
    manifest: dict[str, Any] = {
        "model": "DiffMatch (feature CNN, coarse denoiser, x2 super-resolution denoiser) and "
                 "the same coarse network trained as a direct regressor",
        "train_command": command, "commit": _commit(), "device": _device(),
        "torch": torch.__version__, "train_seconds": round(wall, 1),
        "stage_seconds": {k: round(float(v.get("seconds", 0.0)), 1)
                          for k, v in summaries.items()},
        "stage_steps": {k: int(v["step"]) for k, v in summaries.items()},
        "settings": s.to_dict(),
        "parameters": {k: int(sum(p.numel() for p in n.parameters()))
                       for k, n in pipe.networks().items()},
        "rescore_pairs": rescore_pairs,
    }
    manifest["heldout_metrics"] = rescore(pipe, n_pairs=rescore_pairs)
    pipe.save(out / "model", extra={"train_command": command})
    (out / "model" / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n",
                                          encoding="utf-8")
    return manifest


def rescore(pipe: DiffMatch, n_pairs: int = 16) -> dict[str, float]:
    """Held-out metrics of a model on ``n_pairs`` warped test pairs (clean, fixed seeds):
    ``<method>/<metric>`` for :data:`RESCORE_METHODS` (AEPE in pixels, PCK fractions)."""
    from polydiff.dense.diffmatch.evaluate import heldout_pairs, methods, score_method

    pairs = heldout_pairs(n_pairs)
    fns = methods(pipe, opencv=False)
    out: dict[str, float] = {}
    for name in RESCORE_METHODS:
        if name in fns:
            m = score_method(fns[name], pairs)
            out.update({f"{name}/{k}": round(v, 6) for k, v in m.items() if k != "seconds"})
    return out


def flow_panel(rows: list[list[np.ndarray]], scale: int = 1, gap: int = 4) -> np.ndarray:
    """Tile images (grey ``(H, W)`` or RGB ``(H, W, 3)`` in [0, 1]; every tile of a row the
    same height) into one RGB image on a white background."""
    import numpy as np

    from polydiff.dense.images import to_rgb

    tiles = [[to_rgb(t) for t in row] for row in rows]
    if scale > 1:
        tiles = [[np.kron(t, np.ones((scale, scale, 1), np.float32)) for t in row]
                 for row in tiles]
    widths = [sum(t.shape[1] for t in row) + gap * (len(row) - 1) for row in tiles]
    heights = [max(t.shape[0] for t in row) for row in tiles]
    out = np.ones((sum(heights) + gap * (len(rows) + 1), max(widths) + 2 * gap, 3),
                  np.float32)
    y = gap
    for row, h in zip(tiles, heights):
        x = gap
        for t in row:
            out[y:y + t.shape[0], x:x + t.shape[1]] = t
            x += t.shape[1] + gap
        y += h + gap
    return out
