"""Atomic, pickle-free training checkpoints.

A checkpoint of step ``N`` is two files in ``<run>/checkpoints/``:

* ``ckpt-NNNNNNNN.safetensors``: the weights, ``model/<name>`` and ``ema/<name>`` tensors, with
  the JSON config and step in the safetensors metadata (:func:`load_weights` reads one half,
  e.g. the EMA weights for inference);
* ``ckpt-NNNNNNNN.pt``: the training state (optimizer, grad scaler, step, data position,
  RNG states, counters), only tensors and plain containers, so it loads with
  ``torch.load(weights_only=True)``.

Every file is written to a temporary file in the same directory, flushed and ``fsync``-ed,
then moved into place with ``os.replace`` (atomic on POSIX) and the directory is synced. The
text file ``latest`` names the newest complete checkpoint and is replaced *last*, so a crash
at any point leaves ``latest`` pointing at a complete, loadable checkpoint. Older
checkpoints beyond ``keep_last`` are deleted after ``latest`` moves.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from polydiff.core.utils import atomic_path, atomic_write

__all__ = [
    "save_checkpoint", "latest_checkpoint", "load_checkpoint", "load_weights",
    "prune_checkpoints", "checkpoint_name", "checkpoint_metadata",
]

LATEST = "latest"
_NAME = re.compile(r"^ckpt-(\d{8})$")


def checkpoint_name(step: int) -> str:
    """``ckpt-NNNNNNNN`` for ``step``."""
    return f"ckpt-{int(step):08d}"


def _plain_tensors(prefix: str, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Detached, contiguous CPU tensors; storages shared between entries (tied weights) are
    cloned so safetensors accepts them."""
    out: dict[str, Tensor] = {}
    seen: set[int] = set()
    for k, v in state.items():
        v = v.detach().to("cpu").contiguous()
        ptr = v.untyped_storage().data_ptr()
        if ptr in seen and v.numel() > 0:
            v = v.clone()
        seen.add(ptr)
        out[prefix + k] = v
    return out


def save_checkpoint(directory: str | Path, step: int, model_state: Mapping[str, Tensor],
                    train_state: dict[str, Any], *,
                    ema_state: Mapping[str, Tensor] | None = None,
                    metadata: Mapping[str, str] | None = None, keep_last: int | None = None
                    ) -> Path:
    """Write the checkpoint of ``step`` atomically and point ``latest`` at it.

    ``train_state`` must hold only tensors, numbers, strings, ``None`` and lists/tuples/dicts
    of them (it is checked by re-reading with ``weights_only=True`` semantics at load time).
    Returns the path of the weights file.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    name = checkpoint_name(step)
    tensors = _plain_tensors("model/", model_state)
    if ema_state is not None:
        tensors.update(_plain_tensors("ema/", ema_state))
    meta = {"format": "polydiff-train-1", "step": str(int(step))}
    meta.update(metadata or {})
    weights = directory / f"{name}.safetensors"
    with atomic_path(weights) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    state = dict(train_state, step=int(step))
    with atomic_path(directory / f"{name}.pt") as tmp:
        torch.save(state, tmp)
    atomic_write(directory / LATEST, name + "\n")  # the commit point
    if keep_last is not None:
        prune_checkpoints(directory, keep_last)
    return weights


def _steps_on_disk(directory: Path) -> list[int]:
    steps = set()
    for p in directory.glob("ckpt-*"):
        m = _NAME.match(p.name.split(".", 1)[0])
        if m:
            steps.add(int(m.group(1)))
    return sorted(steps)


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The weights path of the checkpoint ``latest`` names, or ``None`` if there is none."""
    directory = Path(directory)
    pointer = directory / LATEST
    if not pointer.is_file():
        return None
    name = pointer.read_text().strip()
    if not _NAME.match(name):
        raise ValueError(f"corrupt checkpoint pointer {pointer}: {name!r}")
    weights = directory / f"{name}.safetensors"
    if not weights.is_file() or not weights.with_suffix(".pt").is_file():
        raise FileNotFoundError(f"{pointer} names {name}, which is incomplete")
    return weights


def prune_checkpoints(directory: str | Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` checkpoints (never the one ``latest`` names)
    and temporary files that crashed writers left behind (one writer per directory)."""
    directory = Path(directory)
    current = latest_checkpoint(directory)
    keep = {current.stem} if current is not None else set()
    steps = _steps_on_disk(directory)
    keep.update(checkpoint_name(s) for s in steps[-max(keep_last, 1):])
    for p in directory.glob("ckpt-*"):
        if p.name.split(".", 1)[0] not in keep:
            with contextlib.suppress(OSError):
                p.unlink()
    for p in directory.glob(".*.tmp"):
        with contextlib.suppress(OSError):
            p.unlink()


def load_weights(path: str | Path, which: str = "model",
                 device: str | torch.device = "cpu") -> dict[str, Tensor]:
    """One half of a checkpoint's weights (``which``: ``"model"`` or ``"ema"``) as a state
    dict."""
    if which not in ("model", "ema"):
        raise ValueError("which must be 'model' or 'ema'")
    prefix = which + "/"
    out: dict[str, Tensor] = {}
    with safe_open(str(path), framework="pt", device=str(device)) as f:
        for key in f.keys():  # safe_open is not a mapping
            if key.startswith(prefix):
                out[key[len(prefix):]] = f.get_tensor(key)
    if not out:
        raise KeyError(f"{path} holds no {which!r} weights")
    return out


def checkpoint_metadata(path: str | Path) -> dict[str, Any]:
    """The safetensors metadata of a weights file (``config`` decoded from JSON)."""
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
    if "config" in meta:
        meta["config"] = json.loads(meta["config"])
    return meta


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu"
                    ) -> tuple[dict[str, Tensor], dict[str, Tensor] | None, dict[str, Any]]:
    """``(model_state, ema_state or None, train_state)`` of the checkpoint whose weights file
    is ``path`` (e.g. :func:`latest_checkpoint`). The training state is read with
    ``torch.load(weights_only=True)``."""
    path = Path(path)
    model = load_weights(path, "model", device)
    try:
        ema: dict[str, Tensor] | None = load_weights(path, "ema", device)
    except KeyError:
        ema = None
    state = torch.load(path.with_suffix(".pt"), map_location="cpu", weights_only=True)
    return model, ema, state
