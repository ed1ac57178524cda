"""The starter weights shipped with the app (package data under ``weights/``).

Three model folders trained on the captioned digits with the same text autoencoder, network
size, data, steps and batch: ``joint`` (UniDiffuser) and the dedicated baselines ``t2i`` and
``i2t``. Their network weights are stored in float16 (to stay small) and loaded as float32.
``weights/manifest.json`` says how they were made (the exact ``unidiffuser train`` commands,
the commit, device and wall time) and their held-out scores, which a test re-checks on a
slice of the held-out digits.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from polydiff.core.cli import read_starter_manifest

__all__ = ["WEIGHTS_DIR", "manifest", "starter_model", "starter_available"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
TASKS = ("joint", "t2i", "i2t")


def starter_available() -> bool:
    """Whether the starter weights are installed with the app."""
    return (WEIGHTS_DIR / "manifest.json").is_file() and all(
        (WEIGHTS_DIR / t / "unidiffuser.json").is_file() for t in TASKS)


@cache
def manifest() -> dict[str, Any]:
    """The manifest of the starter weights."""
    return read_starter_manifest(WEIGHTS_DIR, "polydiff-unidiffuser")


def starter_model(task: str = "joint") -> Any:
    """The starter model of ``task`` (``joint``, ``t2i`` or ``i2t``) as float32, eval mode."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    from polydiff.multimodal.unidiffuser import load_unidiffuser

    manifest()  # a clear error when the weights are missing
    model = load_unidiffuser(WEIGHTS_DIR / task)
    model.network.float()
    model.text.float()
    return model
