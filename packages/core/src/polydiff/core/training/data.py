"""Training data read at global sample positions, so the data order is a function of
``(seed, step)`` and a resumed run continues exactly where it stopped.

A step ``s`` with global batch ``B`` reads positions ``[s B, (s + 1) B)`` of an endless
stream (split across accumulation micro-batches and ranks by the
:class:`~polydiff.core.training.loop.Trainer`). Sources:

* :class:`IndexedData`: in-memory tensors or a map-style dataset, one seeded permutation per
  epoch (the usual "shuffle every epoch" without a sampler whose state must be saved);
* :class:`SampledData`: batches computed from the positions (synthetic data);
* :class:`StreamData`: any iterable (a ``DataLoader``), replayed up to the saved position on
  resume.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import default_collate

__all__ = ["IndexedData", "StreamData", "SampledData", "as_data_source", "mix_seed"]


def mix_seed(*values: int) -> int:
    """A 63-bit seed mixed from integers (NumPy's ``SeedSequence`` hashing)."""
    entropy = [int(v) % 2**64 for v in values]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0]) & (2**63 - 1)



def _columns(data: Any) -> bool:
    """True for a tensor, a dict of tensors or a tuple/list of tensors (equal first dims)."""
    if isinstance(data, Tensor):
        return True
    vals = list(data.values()) if isinstance(data, Mapping) else \
        list(data) if isinstance(data, list | tuple) else []
    return bool(vals) and all(isinstance(v, Tensor) and v.ndim > 0 and len(v) == len(vals[0])
                              for v in vals)


class IndexedData:
    """An in-memory dataset read at global sample positions: position ``p`` is item
    ``perm_e[p mod N]`` of epoch ``e = p // N`` (``perm_e`` seeded by ``(seed, e)``, or the
    identity without ``shuffle``). Batches are a pure function of the positions.

    ``data``: a tensor, a tuple/list/dict of tensors sharing the first dimension, or a
    map-style dataset (``len`` and ``[i]``; items collated with ``default_collate``).
    """

    def __init__(self, data: Any, *, seed: int = 0, shuffle: bool = True):
        self.data, self.seed, self.shuffle = data, int(seed), bool(shuffle)
        self.columns = _columns(data)
        first = data if isinstance(data, Tensor) else \
            next(iter(data.values())) if isinstance(data, Mapping) else data[0]
        self.n = len(first) if self.columns else len(data)
        if self.n < 1:
            raise ValueError("the dataset is empty")
        self._perms: dict[int, Tensor] = {}

    def _perm(self, epoch: int) -> Tensor:
        if epoch not in self._perms:
            if len(self._perms) > 2:
                self._perms.clear()
            g = torch.Generator().manual_seed(mix_seed(self.seed, epoch, 0x5EED))
            self._perms[epoch] = torch.randperm(self.n, generator=g)
        return self._perms[epoch]

    def indices(self, positions: Tensor) -> Tensor:
        """Dataset indices of global sample positions."""
        epochs, within = positions // self.n, positions % self.n
        if not self.shuffle:
            return within
        idx = torch.empty_like(positions)
        for e in epochs.unique().tolist():
            mask = epochs == e
            idx[mask] = self._perm(int(e))[within[mask]]
        return idx

    def get(self, positions: Tensor, generator: torch.Generator | None = None) -> Any:
        idx = self.indices(positions)
        d = self.data
        if not self.columns:
            return default_collate([d[i] for i in idx.tolist()])
        if isinstance(d, Tensor):
            return d[idx.to(d.device)]
        if isinstance(d, Mapping):
            return {k: v[idx.to(v.device)] for k, v in d.items()}
        return type(d)(v[idx.to(v.device)] for v in d)

    def state_dict(self) -> dict[str, Any]:
        return {"num_samples": self.n, "seed": self.seed, "shuffle": self.shuffle}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if int(state.get("num_samples", self.n)) != self.n:
            raise ValueError(f"checkpoint was trained on {state['num_samples']} samples, "
                             f"this dataset has {self.n}: the data order would differ")


class StreamData:
    """Batches pulled from ``factory(epoch)`` iterables (e.g. a ``DataLoader`` whose batch
    size is the per-rank micro-batch, sharded with a ``DistributedSampler``), one per
    micro-batch; a new epoch starts when one is exhausted. Resuming replays the epoch up to
    the saved position, so exact resume needs a factory that is deterministic per epoch."""

    def __init__(self, factory: Callable[[int], Iterable[Any]]):
        self.factory = factory
        self.epoch, self.consumed = 0, 0
        self._it: Any = None

    def get(self, positions: Tensor | None = None,
            generator: torch.Generator | None = None) -> Any:
        for _ in range(2):
            if self._it is None:
                self._it = iter(self.factory(self.epoch))
            try:
                batch = next(self._it)
            except StopIteration:
                self._it, self.epoch, self.consumed = None, self.epoch + 1, 0
                continue
            self.consumed += 1
            return batch
        raise ValueError(f"the data stream of epoch {self.epoch} is empty")

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "consumed": self.consumed}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.epoch, self.consumed, self._it = int(state["epoch"]), 0, None
        for _ in range(int(state["consumed"])):
            self.get()


class SampledData:
    """Batches made by ``fn(positions, generator)`` (e.g. synthetic samples)."""

    def __init__(self, fn: Callable[[Tensor, torch.Generator], Any]):
        self.fn = fn

    def get(self, positions: Tensor, generator: torch.Generator) -> Any:
        return self.fn(positions, generator)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        return None


def _loader_factory(loader: Iterable[Any]) -> Callable[[int], Iterable[Any]]:
    def factory(epoch: int) -> Iterable[Any]:
        for holder in (loader, getattr(loader, "sampler", None),
                       getattr(getattr(loader, "batch_sampler", None), "sampler", None)):
            if holder is not None and hasattr(holder, "set_epoch"):
                holder.set_epoch(epoch)  # DistributedSampler and friends
        return loader
    return factory


def as_data_source(data: Any, *, seed: int = 0, shuffle: bool = True) -> Any:
    """Wrap ``data``: objects with ``get(positions, generator)`` as they are; tensors, tuples
    or dicts of tensors and map-style datasets as :class:`IndexedData`; other callables as a
    :class:`StreamData` factory ``f(epoch)``; other iterables (a ``DataLoader``) as a
    :class:`StreamData` re-iterated every epoch (calling ``set_epoch`` on its sampler)."""
    if callable(getattr(data, "get", None)) and hasattr(data, "state_dict"):
        return data
    if _columns(data) or (hasattr(data, "__getitem__") and hasattr(data, "__len__")
                          and not isinstance(data, str | bytes | Mapping)):
        return IndexedData(data, seed=seed, shuffle=shuffle)
    if callable(data):
        return StreamData(data)
    if isinstance(data, Iterable):
        return StreamData(_loader_factory(data))
    raise TypeError(f"cannot use {type(data).__name__} as training data")
