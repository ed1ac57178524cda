"""Atomic, pickle-free training checkpoints.

A checkpoint of step ``N`` is two files in ``<run>/checkpoints/``:

* ``ckpt-NNNNNNNN.safetensors``: the weights, ``model/<name>`` and ``ema/<name>`` tensors, with
  the JSON config and step in the safetensors metadata (:func:`load_weights` reads one half,
  e.g. the EMA weights for inference);
* ``ckpt-NNNNNNNN.pt``: the training state (optimizer, grad scaler, step, data position,
  RNG states, counters), only tensors and plain containers, so it loads with
  ``torch.load(weights_only=True)``.

* ``ckpt-NNNNNNNN.json``: the manifest, the size and SHA-256 of the two files above.

Every file is written to a temporary file in the same directory, flushed and ``fsync``-ed,
then moved into place with ``os.replace`` (atomic on POSIX) and the directory is synced. The
text file ``latest`` names the newest complete checkpoint and is replaced *last*, so a crash
at any point leaves ``latest`` pointing at a complete, loadable checkpoint. Older
checkpoints beyond ``keep_last`` are deleted after ``latest`` moves.

Verification. A file can still be damaged after it was written (a full disk during a copy,
a truncated transfer, bit rot). :func:`verify_checkpoint` compares both files with the
manifest (checkpoints written before manifests existed get a structural check: the
safetensors header must account for the file's size and the ``.pt`` archive's CRCs must
match); :func:`find_checkpoint` returns the newest checkpoint that passes, starting from
the one ``latest`` names, with the reasons the newer ones were skipped, and raises
:class:`CheckpointError` (one line) when checkpoints exist but none is usable.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import struct
import zipfile
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
    "prune_checkpoints", "checkpoint_name", "checkpoint_metadata", "verify_checkpoint",
    "find_checkpoint", "CheckpointError",
]

LATEST = "latest"
MANIFEST_FORMAT = "polydiff-ckpt-manifest-1"
_NAME = re.compile(r"^ckpt-(\d{8})$")


class CheckpointError(ValueError):
    """A checkpoint cannot be used (damaged, incomplete, or none usable in a directory). A
    ``ValueError``: apps report it on one line (exit code 2)."""


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
    files = {p.name: {"size": p.stat().st_size, "sha256": _sha256(p)}
             for p in (weights, directory / f"{name}.pt")}
    manifest = {"format": MANIFEST_FORMAT, "step": int(step), "files": files}
    atomic_write(directory / f"{name}.json", json.dumps(manifest, indent=1) + "\n")
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


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _structural_problem(weights: Path, train: Path) -> str | None:
    """Checks of a checkpoint without a manifest: the safetensors header accounts for the
    file's size, the ``.pt`` zip archive (``torch.save``'s format) passes its CRC checks."""
    size = weights.stat().st_size
    try:
        with open(weights, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size - 8:
                return f"{weights.name} is truncated ({size} bytes, header says more)"
            header = json.loads(f.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"),
                  default=0)
    except (struct.error, ValueError, KeyError, TypeError, IndexError):
        return f"{weights.name} has no valid safetensors header"
    if size != 8 + n + end:
        return f"{weights.name} has {size} bytes, its header describes {8 + n + end}"
    try:
        with zipfile.ZipFile(train) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        return f"{train.name} is not a readable archive ({e})"
    if bad is not None:
        return f"{train.name}: {bad} fails its CRC check"
    return None


def verify_checkpoint(path: str | Path) -> str | None:
    """``None`` when the checkpoint whose weights file is ``path`` is intact, else a short
    reason: a file is missing, or its size or SHA-256 differs from the manifest
    (``ckpt-N.json``); without a manifest, the structural checks of the module docstring."""
    weights = Path(path)
    train, manifest = weights.with_suffix(".pt"), weights.with_suffix(".json")
    for p in (weights, train):
        if not p.is_file():
            return f"{p.name} is missing"
    if not manifest.is_file():
        return _structural_problem(weights, train)
    try:
        files = json.loads(manifest.read_text())["files"]
        expected = [(p, files[p.name]) for p in (weights, train)]
    except (ValueError, KeyError, TypeError):
        return f"{manifest.name} is not a valid manifest"
    for p, want in expected:
        size = p.stat().st_size
        if size != want.get("size"):
            return f"{p.name} has {size} bytes, {want.get('size')} recorded"
    for p, want in expected:
        if _sha256(p) != want.get("sha256"):
            return f"{p.name} does not match its recorded SHA-256"
    return None


def find_checkpoint(directory: str | Path) -> tuple[Path | None, list[str]]:
    """The newest intact checkpoint of ``directory`` and the problems of the ones skipped.

    The candidates are the checkpoint ``latest`` names, then every other one on disk, newest
    first. Returns ``(weights path, problems)``, ``(None, [])`` when there is no checkpoint
    at all; raises :class:`CheckpointError` (one line) when there are checkpoints but none is
    intact."""
    directory = Path(directory)
    named: str | None = None
    problems: list[str] = []
    pointer = directory / LATEST
    if pointer.is_file():
        named = pointer.read_text().strip()
        if not _NAME.match(named):
            problems.append(f"{pointer.name} names {named[:40]!r}, not a checkpoint")
            named = None
    order = ([named] if named else []) + [checkpoint_name(s) for s in
                                          reversed(_steps_on_disk(directory))]
    seen: set[str] = set()
    for name in order:
        if name in seen:
            continue
        seen.add(name)
        path = directory / f"{name}.safetensors"
        problem = verify_checkpoint(path)
        if problem is None:
            if not pointer.is_file():
                problems.append(f"no {LATEST} pointer")
            return path, problems
        problems.append(f"{name}: {problem}")
    if problems:
        raise CheckpointError(f"no usable checkpoint in {directory}: " + "; ".join(problems))
    return None, []


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


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu", *,
                    verify: bool = True
                    ) -> tuple[dict[str, Tensor], dict[str, Tensor] | None, dict[str, Any]]:
    """``(model_state, ema_state or None, train_state)`` of the checkpoint whose weights file
    is ``path`` (e.g. :func:`find_checkpoint`). With ``verify`` the files are checked first
    (:func:`verify_checkpoint`); a damaged checkpoint raises :class:`CheckpointError`. The
    training state is read with ``torch.load(weights_only=True)``."""
    path = Path(path)
    if verify and (problem := verify_checkpoint(path)) is not None:
        raise CheckpointError(f"checkpoint {path.stem} in {path.parent} is damaged: {problem}")
    model = load_weights(path, "model", device)
    try:
        ema: dict[str, Tensor] | None = load_weights(path, "ema", device)
    except KeyError:
        ema = None
    state = torch.load(path.with_suffix(".pt"), map_location="cpu", weights_only=True)
    return model, ema, state
