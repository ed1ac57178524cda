"""FSDP2 helpers for the :class:`~polydiff.core.training.loop.Trainer`: sharding a model with
``torch.distributed.fsdp.fully_shard`` and moving state between sharded (``DTensor``) and
full (single-process) form.

Fully Sharded Data Parallel shards parameters, gradients and optimizer state across the
data-parallel ranks and all-gathers each unit's parameters just for its forward and backward
(Zhao et al. 2023, "PyTorch FSDP: Experiences on Scaling Fully Sharded Data Parallel"). FSDP2
represents a sharded parameter as a ``DTensor`` sharded on dim 0.

Checkpoints stay in the single-process format: full tensors keyed by the model's state-dict
names, and the optimizer state keyed by parameter index (``optimizer.state_dict()``'s form),
so a checkpoint written under FSDP loads in one process, under DDP, or under FSDP with another
world size, and vice versa. The conversions live here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

if dist.is_available():
    from torch.distributed.tensor import DTensor, distribute_tensor
else:  # pragma: no cover - torch built without distributed: nothing is ever sharded
    DTensor = type("DTensor", (), {})  # type: ignore[assignment,misc]

__all__ = [
    "default_fsdp_units", "shard_module", "full_tensors", "to_local_layout",
    "optimizer_state_by_index", "optimizer_state_by_name", "gather_model_state",
    "gather_optimizer_state", "load_full_state",
]

UnitsFn = Callable[[nn.Module], Iterable[nn.Module]]


def _runs_forward(module: nn.Module) -> bool:
    """Whether ``module`` defines its own ``forward`` (a plain container such as a U-Net
    level, whose children its parent calls directly, does not: it is never called)."""
    return type(module).forward is not nn.Module.forward


def default_fsdp_units(model: nn.Module) -> list[nn.Module]:
    """The default FSDP units of ``model``: every child of every ``nn.ModuleList`` (the
    repeated blocks of transformers, U-Nets, WaveNets) whose ``forward`` runs, deepest first.

    A unit's parameters are all-gathered by hooks around its *own* ``forward``, so a child
    that is only a container (a U-Net level holding ResNet blocks and a downsampler, called
    one by one by the U-Net) cannot be a unit: its place is taken by its children, down to
    modules that define ``forward`` (a container's direct parameters, if any, stay with the
    enclosing unit). Parameters outside every unit belong to the root unit (the whole
    objective), gathered for the whole forward."""
    chosen: set[int] = set()

    def add(module: nn.Module) -> None:
        if isinstance(module, nn.ModuleList | nn.ModuleDict) or not _runs_forward(module):
            for child in module.children():
                add(child)
        else:
            chosen.add(id(module))

    for m in model.modules():
        if isinstance(m, nn.ModuleList):
            for child in m:
                add(child)
    # reversed pre-order: fully_shard goes bottom-up, nested units before their parents
    return [m for m in model.modules() if id(m) in chosen][::-1]


def shard_module(root: nn.Module, model: nn.Module, mesh: Any,
                 units: UnitsFn | None = None, **kwargs: Any) -> nn.Module:
    """Apply ``fully_shard`` to ``units(model)`` (default :func:`default_fsdp_units`), in
    that order, then to ``root`` (a module holding ``model``); ``kwargs`` (e.g. ``mp_policy``,
    ``reshard_after_forward``) go to every call. In place; returns ``root``."""
    from torch.distributed.fsdp import fully_shard

    chosen = list((units or default_fsdp_units)(model))
    inside = {id(m) for m in model.modules()}
    for unit in chosen:
        if id(unit) not in inside:
            raise ValueError(f"FSDP unit {type(unit).__name__} is not a submodule of the model")
        if not _runs_forward(unit):
            raise ValueError(f"FSDP unit {type(unit).__name__} has no forward of its own, so "
                             "its parameters would never be gathered: choose its children")
        fully_shard(unit, mesh=mesh, **kwargs)
    fully_shard(root, mesh=mesh, **kwargs)
    return root


def full_tensors(state: Mapping[str, Tensor], keep: bool = True) -> dict[str, Tensor]:
    """Full, detached CPU copies of ``state``'s tensors: ``DTensor`` shards are all-gathered
    (a collective: every rank must call it, with the same keys), one tensor at a time. With
    ``keep=False`` the gathered tensors are dropped and ``{}`` is returned (ranks that take
    part in the gather but do not write)."""
    out: dict[str, Tensor] = {}
    for k, v in state.items():
        v = v.detach()
        if isinstance(v, DTensor):
            v = v.full_tensor()
        if keep:
            out[k] = v.to("cpu", copy=True)
    return out


def to_local_layout(full: Tensor, like: Tensor) -> Tensor:
    """``full`` laid out like ``like``: for a ``DTensor`` its shard of ``full`` (cut locally,
    no communication: every rank holds ``full``), else ``full`` on ``like``'s device."""
    full = full.detach().to(like.device, like.dtype)
    if isinstance(like, DTensor):
        return distribute_tensor(full, like.device_mesh, like.placements, src_data_rank=None)
    return full


def optimizer_state_by_index(state: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """A name-keyed optimizer state (``get_optimizer_state_dict``'s form) re-keyed by
    parameter index, as ``optimizer.state_dict()`` of one process gives it; ``names`` are the
    optimized parameters' names in the optimizer's order."""
    index = {n: i for i, n in enumerate(names)}
    groups = [dict(g, params=[index[n] for n in g["params"]]) for g in state["param_groups"]]
    return {"state": {index[n]: s for n, s in state["state"].items()}, "param_groups": groups}


def optimizer_state_by_name(state: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """The inverse of :func:`optimizer_state_by_index` (for ``set_optimizer_state_dict``)."""
    if len({i for g in state["param_groups"] for i in g["params"]}) != len(names):
        raise ValueError("optimizer state does not match the model's trainable parameters")
    groups = [dict(g, params=[names[i] for i in g["params"]]) for g in state["param_groups"]]
    return {"state": {names[int(i)]: s for i, s in state["state"].items()},
            "param_groups": groups}



def gather_model_state(model: nn.Module, rank0_only: bool) -> dict[str, Tensor]:
    """Full CPU copies of a sharded ``model``'s state dict (collective); with ``rank0_only``
    only rank 0 receives them (gathered tensors are offloaded one at a time) and the others
    get ``{}``."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    opts = StateDictOptions(full_state_dict=True, cpu_offload=rank0_only)
    out: dict[str, Tensor] = {}
    for k, v in get_model_state_dict(model, options=opts).items():
        assert isinstance(v, Tensor)  # a full model state dict holds plain tensors
        out[k] = v.detach().to("cpu", copy=True)
    return out


def gather_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer,
                           names: list[str]) -> dict[str, Any]:
    """The full optimizer state of a sharded ``model`` on rank 0's CPU, index-keyed as one
    process writes it (:func:`optimizer_state_by_index`); ``{}`` on other ranks
    (collective)."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_optimizer_state_dict,
    )

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = get_optimizer_state_dict(model, optimizer, options=opts)
    return optimizer_state_by_index(state, names) if state.get("param_groups") else {}


def load_full_state(model: nn.Module, optimizer: torch.optim.Optimizer,
                    model_state: dict[str, Tensor], optim_state: dict[str, Any],
                    names: list[str]) -> None:
    """Load full (single-process form) model and optimizer states, held by every rank, into
    a sharded ``model`` and its ``optimizer``: each rank keeps its shards."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    opts = StateDictOptions(full_state_dict=True)
    # torch types the state as the invariant dict[str, ValueType], of which Tensor is one
    set_model_state_dict(model, model_state, options=opts)  # type: ignore[arg-type]
    set_optimizer_state_dict(model, optimizer, optimizer_state_by_name(optim_state, names),
                             options=opts)
    # hyperparameters as saved (the name-keyed round trip turns tuples such as betas to lists)
    for group, saved in zip(optimizer.param_groups, optim_state["param_groups"], strict=True):
        group.update((k, v) for k, v in saved.items() if k != "params")
