"""Seeding, deterministic execution, and RNG state that survives ``torch.load(weights_only=True)``.

:func:`rng_state` returns only tensors, ints, floats, strings, ``None``, lists and dicts,
so a checkpoint that stores it can be loaded without unpickling arbitrary objects:
Python's Mersenne-Twister state becomes an int64 tensor, NumPy's legacy global state (when
NumPy is installed) its key array as an int64 tensor plus plain numbers, and the torch
CPU/CUDA/MPS generator states are the byte tensors torch already uses.

Determinism (:func:`deterministic`) follows PyTorch's reproducibility notes:
``torch.use_deterministic_algorithms``, ``cudnn.deterministic = True``,
``cudnn.benchmark = False`` and, for cuBLAS on CUDA >= 10.2,
``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (set only if the user has not chosen a value; cuBLAS
reads it when its workspace is created, so set it early, before the first matmul).
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from typing import Any

import torch

from polydiff.gpu.device import mps_available

__all__ = ["deterministic", "rng_state", "seed_everything", "set_deterministic", "set_rng_state"]

_CUBLAS_ENV = "CUBLAS_WORKSPACE_CONFIG"
_CUBLAS_DEFAULT = ":4096:8"


def _numpy() -> Any:
    try:
        import numpy
    except ImportError:
        return None
    return numpy


def seed_everything(seed: int) -> int:
    """Seed Python's ``random``, NumPy's global RNG (if installed) and torch (CPU, CUDA, MPS).

    NumPy takes ``seed % 2**32``. Returns ``seed``. Raises ``ValueError`` for a negative seed
    or one of 2**64 or more.
    """
    seed = int(seed)
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    random.seed(seed)
    np = _numpy()
    if np is not None:
        np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device (lazily) and MPS
    return seed


def set_deterministic(enabled: bool = True, *, warn_only: bool = False) -> dict[str, Any]:
    """Switch deterministic algorithms on or off for the process; returns the old settings.

    :func:`deterministic` is the scoped form, restoring the returned settings on exit. With
    ``warn_only=True`` an op without a deterministic implementation warns instead of raising.
    """
    previous = {
        "algorithms": torch.are_deterministic_algorithms_enabled(),
        "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cublas": os.environ.get(_CUBLAS_ENV),
    }
    torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
    torch.backends.cudnn.deterministic = enabled
    if enabled:
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault(_CUBLAS_ENV, _CUBLAS_DEFAULT)
    return previous


def _restore(previous: dict[str, Any]) -> None:
    torch.use_deterministic_algorithms(previous["algorithms"], warn_only=previous["warn_only"])
    torch.backends.cudnn.deterministic = previous["cudnn_deterministic"]
    torch.backends.cudnn.benchmark = previous["cudnn_benchmark"]
    if previous["cublas"] is None:
        os.environ.pop(_CUBLAS_ENV, None)
    else:
        os.environ[_CUBLAS_ENV] = previous["cublas"]


@contextlib.contextmanager
def deterministic(enabled: bool = True, *, warn_only: bool = False) -> Iterator[None]:
    """Run a block with deterministic algorithms on (or off); restores every setting after."""
    previous = set_deterministic(enabled, warn_only=warn_only)
    try:
        yield
    finally:
        _restore(previous)


def rng_state() -> dict[str, Any]:
    """Every global RNG state as plain types and tensors (safe for ``weights_only`` loads).

    Keys: ``"python"``, ``"torch"``, and where present ``"numpy"``, ``"cuda"`` (one state
    per device), ``"mps"``.
    """
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "python": {
            "version": int(version),
            "internal": torch.tensor(internal, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
        "torch": torch.get_rng_state(),
    }
    np = _numpy()
    if np is not None:
        kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
        state["numpy"] = {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64).copy()),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        }
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    if mps_available():
        state["mps"] = torch.mps.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the RNG states saved by :func:`rng_state`.

    Parts missing from ``state`` (or absent on this machine) are left alone; with a
    different number of CUDA devices the common ones are restored.
    """
    if "python" in state:
        py = state["python"]
        internal = tuple(int(v) for v in torch.as_tensor(py["internal"]).tolist())
        random.setstate((int(py["version"]), internal, py["gauss_next"]))
    if "torch" in state:
        torch.set_rng_state(torch.as_tensor(state["torch"], dtype=torch.uint8).cpu())
    np = _numpy()
    if np is not None and "numpy" in state:
        nst = state["numpy"]
        keys = np.asarray(torch.as_tensor(nst["keys"]).cpu().numpy(), dtype=np.uint32)
        np.random.set_state(
            (nst["kind"], keys, int(nst["pos"]), int(nst["has_gauss"]),
             float(nst["cached_gaussian"]))
        )
    if "cuda" in state and torch.cuda.is_available():
        for index, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(torch.as_tensor(cuda_state, dtype=torch.uint8).cpu(), index)
    if "mps" in state and mps_available():
        torch.mps.set_rng_state(torch.as_tensor(state["mps"], dtype=torch.uint8).cpu())
