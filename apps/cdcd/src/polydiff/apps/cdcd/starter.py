"""The starter weights shipped with the app (package data under ``weights/``).

Two model folders trained by ``cdcd train`` on the digit tokens with the same network, data,
optimizer steps, batch and seed: ``cdcd`` (the sample-wise auxiliary contrastive term with
inter-sample negatives) and ``vanilla`` (the plain variational objective), the baseline the
demo shows next to it. ``weights/manifest.json`` says how they were made (the exact
``cdcd train`` commands, the commit, device and wall time) and their held-out scores, which a
test re-checks on the test digits.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from polydiff.core.cli import read_starter_manifest

__all__ = ["WEIGHTS_DIR", "MODELS", "manifest", "starter_model", "starter_available"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MODELS = ("cdcd", "vanilla")


def starter_available() -> bool:
    """Whether the starter weights are installed with the app."""
    return (WEIGHTS_DIR / "manifest.json").is_file() and all(
        (WEIGHTS_DIR / m / "cdcd.json").is_file() for m in MODELS)


@cache
def manifest() -> dict[str, Any]:
    """The manifest of the starter weights."""
    return read_starter_manifest(WEIGHTS_DIR, "polydiff-cdcd")


def starter_model(name: str = "cdcd") -> Any:
    """The starter model ``name`` (``cdcd`` or ``vanilla``), float32, eval mode."""
    if name not in MODELS:
        raise ValueError(f"name must be one of {MODELS}, got {name!r}")
    from polydiff.multimodal.cdcd import load_cdcd

    manifest()  # a clear error when the weights are missing
    return load_cdcd(WEIGHTS_DIR / name)
