"""Distributed setup for ``torchrun`` launches, and single-process no-ops otherwise.

``torchrun`` (``python -m torch.distributed.run``) starts one process per worker and sets
``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``.
:func:`init_distributed` reads them, picks the backend (NCCL when the process's device is
CUDA, Gloo otherwise), binds each process to ``cuda:LOCAL_RANK`` on GPUs and initialises the
default process group with ``init_method="env://"``. Without those variables it initialises
nothing and reports a one-process world, and every helper here (``barrier``,
``all_reduce_mean``, ``rank_zero_print``, ...) degrades to the single-process behaviour, so
training code needs no branches.

Teardown. :func:`destroy` must be able to free the process group while the interpreter is
fully alive: a Gloo group owns two worker threads and a TCP loop thread, joined only when the
group object dies. ``torch.distributed.nn.functional`` takes ``group.WORLD`` as a default
argument value when it is *imported*; imported after the group exists (DDP's first use
imports it, through ``torch._dynamo`` and ``torch.distributed._shard``), it keeps the group
alive after ``destroy_process_group()``, so those threads ran on into interpreter shutdown,
where a rank aborted now and then ("terminate called without an active exception", seen under
load). :func:`init_distributed` therefore imports that module *before* it creates the group
(its defaults are then ``None``), and :func:`destroy` frees the group and joins its threads.
"""

from __future__ import annotations

import builtins
import functools
import gc
import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import torch
import torch.distributed as dist

from polydiff.gpu.device import select_device

__all__ = [
    "DistInfo",
    "all_reduce_mean",
    "barrier",
    "destroy",
    "init_distributed",
    "is_distributed",
    "is_main",
    "local_rank",
    "rank",
    "rank_zero_only",
    "rank_zero_print",
    "world_size",
]

P = ParamSpec("P")
R = TypeVar("R")
_REQUIRED_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job, and the device it should use."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """True for global rank 0."""
        return self.rank == 0


def is_distributed() -> bool:
    """True when a default process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """Global rank (0 in a single process)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes (1 in a single process)."""
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    """Rank within this machine, from ``$LOCAL_RANK`` (0 when unset)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """True on global rank 0, and always in a single process."""
    return rank() == 0


def _env_int(name: str) -> int:
    value = os.environ[name]
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"${name} must be an integer, got {value!r}") from None


def init_distributed(backend: str | None = None) -> DistInfo:
    """Join the ``torchrun`` job described by the environment, or report a single process.

    Args:
        backend: ``"nccl"``, ``"gloo"``, ... ; ``None`` picks NCCL for CUDA devices and Gloo
            otherwise. The device follows :func:`polydiff.gpu.select_device` (so
            ``POLYDIFF_DEVICE=cpu`` forces a CPU/Gloo run on a GPU machine), with CUDA
            processes bound to ``cuda:LOCAL_RANK``.

    Calling it again once the group exists returns the current :class:`DistInfo`. Raises
    ``ValueError`` when only some of the torchrun variables are set.
    """
    present = [name for name in _REQUIRED_ENV if name in os.environ]
    device = select_device()
    if not present and not is_distributed():
        return DistInfo(rank=0, local_rank=0, world_size=1, device=device)
    if not is_distributed():
        missing = [name for name in _REQUIRED_ENV if name not in os.environ]
        if missing:
            raise ValueError(
                f"incomplete torchrun environment: {', '.join(missing)} unset "
                f"({', '.join(present)} set); launch with torchrun or unset them"
            )
    lrank = local_rank()
    if device.type == "cuda":
        if lrank >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK={lrank} but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
        device = torch.device("cuda", lrank)
        torch.cuda.set_device(device)
    if not is_distributed():
        chosen = backend or ("nccl" if device.type == "cuda" else "gloo")
        # before the group exists: imported later, it would pin the group (module docstring)
        importlib.import_module("torch.distributed.nn.functional")

        dist.init_process_group(
            backend=chosen,
            init_method="env://",
            rank=_env_int("RANK"),
            world_size=_env_int("WORLD_SIZE"),
        )
    return DistInfo(rank=rank(), local_rank=lrank, world_size=world_size(), device=device)


def barrier() -> None:
    """Wait for every process (a no-op in a single process)."""
    if not is_distributed():
        return
    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Replace ``tensor`` in place by its mean over all processes and return it.

    A no-op in a single process. The tensor must be floating point (a mean of integers is
    not an integer) and on a device the backend supports (CPU for Gloo, CUDA for NCCL).
    """
    if not (tensor.is_floating_point() or tensor.is_complex()):
        raise TypeError(f"all_reduce_mean needs a floating-point tensor, got {tensor.dtype}")
    if not is_distributed():
        return tensor
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    tensor.div_(dist.get_world_size())
    return tensor


def rank_zero_only(fn: Callable[P, R]) -> Callable[P, R | None]:
    """Decorator: run ``fn`` on global rank 0 only; other ranks get ``None``."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | None:
        return fn(*args, **kwargs) if is_main() else None

    return wrapper


def rank_zero_print(*args: Any, **kwargs: Any) -> None:
    """``print`` on global rank 0 only (``flush=True`` by default)."""
    if is_main():
        kwargs.setdefault("flush", True)
        builtins.print(*args, **kwargs)


def destroy() -> None:
    """Tear down the default process group if one exists, after a barrier: a rank that
    destroys its group while a peer is still inside a collective can make that peer's
    backend threads abort the process at exit (seen with gloo: "terminate called without
    an active exception")."""
    if is_distributed():
        barrier()
        dist.destroy_process_group()
        gc.collect()  # objects in reference cycles that still hold the group
