"""Seeded model construction: a network's initial weights as a function of the run's seed.

The :class:`~polydiff.core.training.loop.Trainer` seeds the data order, the per-step noise and
the global RNGs from ``TrainConfig.seed``, but a model is usually built *before* the trainer,
from whatever state the global RNG happens to be in, so two runs with the same seed could start
from different weights. Build it under :func:`seeded` (or hand the trainer a factory, which it
builds with :func:`build_seeded`)::

    with seeded(cfg.seed):
        model = UNet(UNetConfig(...))

    trainer = Trainer(lambda: ModelDenoiser(UNet(unet_cfg), process), loss, data, cfg)

Inside the block the CPU generator of torch, the CUDA generators that are already initialised,
numpy's legacy global generator and Python's ``random`` are seeded from ``seed``; on exit all of
them are restored, so the caller's random streams are unchanged by the construction.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import torch

__all__ = ["seeded", "build_seeded"]

T = TypeVar("T")


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block with the global random generators seeded from ``seed`` (see the module
    docstring); their previous states are restored afterwards, also on error."""
    seed = int(seed)
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    devices = list(range(torch.cuda.device_count())) if cuda else []
    py_state = random.getstate()
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a torch dependency in practice
        np = None  # type: ignore[assignment]
    np_state = np.random.get_state() if np is not None else None
    with torch.random.fork_rng(devices=devices):
        torch.random.default_generator.manual_seed(seed)
        for d in devices:
            torch.cuda.default_generators[d].manual_seed(seed)
        random.seed(seed)
        if np is not None:
            np.random.seed(seed % 2**32)
        try:
            yield
        finally:
            random.setstate(py_state)
            if np is not None:
                np.random.set_state(np_state)


def build_seeded(factory: Callable[[], T], seed: int) -> T:
    """``factory()`` called under :func:`seeded` ``(seed)``: the same seed gives the same
    initial weights, whatever ran before."""
    with seeded(seed):
        return factory()
