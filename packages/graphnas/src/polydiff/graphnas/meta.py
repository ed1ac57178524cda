"""Meta-training the dataset-aware predictor on several NAS-Bench-Graph datasets, and the
leave-one-dataset-out folds of the transfer experiment (DiffusionNAG's transferable setting,
An et al. 2024, Sec. 4.1: a meta-predictor trained on other tasks guides generation on an
unseen one with no or few queries).

Each training row is ``(architecture state, task embedding, target)`` with the target the
normal score of the architecture's validation-accuracy rank within its dataset
(:func:`~polydiff.graphnas.predictor.rank_normal`), so every dataset counts on the same scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from polydiff.graphnas.benchmarks import NBG_DATASETS, NASBenchGraph
from polydiff.graphnas.predictor import ArchPredictor, PredictorConfig, rank_normal
from polydiff.graphnas.tasks import TASK_DIM, task_features

__all__ = ["meta_training_data", "train_meta_predictor", "loo_folds", "bench_states"]


@lru_cache(maxsize=16)
def _bench(dataset: str) -> NASBenchGraph:
    return NASBenchGraph(dataset)


_STATES: dict[tuple[int, ...], Tensor] = {}


def bench_states(dataset: str) -> Tensor:
    """Clean diffusion states of every architecture in a dataset's table (row order; the
    tables that list the same architectures share one tensor)."""
    b = _bench(dataset)
    if b.keys not in _STATES:
        _STATES[b.keys] = b.space.to_state([r.arch for r in b.records])
    return _STATES[b.keys]


def meta_training_data(datasets: Sequence[str], metric: str = "valid"
                       ) -> tuple[Tensor, Tensor, Tensor]:
    """``(states, targets, tasks)`` stacked over ``datasets``."""
    if not datasets:
        raise ValueError("meta-training needs at least one dataset")
    xs, ys, ts = [], [], []
    for d in datasets:
        b = _bench(d)
        x = bench_states(d)
        y = torch.as_tensor(rank_normal([getattr(r, metric) for r in b.records]),
                            dtype=torch.float32)
        xs.append(x)
        ys.append(y)
        ts.append(task_features(d).expand(x.shape[0], -1))
    return torch.cat(xs), torch.cat(ys), torch.cat(ts)


def loo_folds(datasets: Sequence[str] = NBG_DATASETS) -> list[tuple[str, list[str]]]:
    """``(held-out dataset, the other datasets)`` for each dataset."""
    return [(d, [o for o in datasets if o != d]) for d in datasets]


def train_meta_predictor(datasets: Sequence[str], out_dir: str | Path, *,
                         config: PredictorConfig | None = None, steps: int = 1500,
                         batch_size: int = 256, lr: float = 1e-3, seed: int = 0,
                         resume: bool = True, progress: bool = False,
                         **overrides: Any) -> ArchPredictor:
    """Train a task-conditioned predictor on ``datasets`` into ``out_dir`` (core Trainer)."""
    from polydiff.graphnas.train import train_predictor

    cfg = config or PredictorConfig(space="nbgraph", cond_dim=TASK_DIM)
    if cfg.cond_dim != TASK_DIM:
        raise ValueError(f"a meta-predictor takes the task embedding: cond_dim={TASK_DIM}")
    x, y, t = meta_training_data(datasets, cfg.target)
    model = ArchPredictor(cfg)
    train_predictor(model, x, y, out_dir, tasks=t, steps=steps, batch_size=batch_size, lr=lr,
                    seed=seed, resume=resume, progress=progress,
                    extra={"datasets": list(datasets)}, **overrides)
    return model
