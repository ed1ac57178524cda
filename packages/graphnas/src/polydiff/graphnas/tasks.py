"""Dataset-aware conditioning: a task embedding for each NAS-Bench-Graph dataset.

The embedding is built from a few statistics of the dataset's graph: log10 of the number of
nodes, edges (undirected), node features and classes, and the mean degree. The values are
the published statistics of the datasets as distributed by PyTorch Geometric (Planetoid:
Cora, CiteSeer, PubMed, Yang et al. 2016; Coauthor CS/Physics and Amazon Photo/Computers,
Shchur et al. 2018) and the Open Graph Benchmark (ogbn-arxiv, ogbn-proteins, Hu et al. 2020;
ogbn-proteins has no node features: its 8 edge features are counted, and its 112 binary
tasks as classes). A user dataset gets the same features from :func:`graph_statistics`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["DatasetStats", "NBG_STATS", "TASK_DIM", "task_features", "graph_statistics"]


@dataclass(frozen=True)
class DatasetStats:
    nodes: int
    edges: int  # undirected
    features: int
    classes: int


NBG_STATS: dict[str, DatasetStats] = {
    "cora": DatasetStats(2_708, 5_278, 1_433, 7),
    "citeseer": DatasetStats(3_327, 4_552, 3_703, 6),
    "pubmed": DatasetStats(19_717, 44_324, 500, 3),
    "cs": DatasetStats(18_333, 81_894, 6_805, 15),
    "physics": DatasetStats(34_493, 247_962, 8_415, 5),
    "photo": DatasetStats(7_650, 119_081, 745, 8),
    "computers": DatasetStats(13_752, 245_861, 767, 10),
    "arxiv": DatasetStats(169_343, 1_166_243, 128, 40),
    "proteins": DatasetStats(132_534, 39_561_252, 8, 112),
}
TASK_DIM = 5
# centring/scaling of the raw features (means and spreads over the 9 datasets, rounded)
_CENTER = (4.3, 5.0, 3.0, 1.1, 1.0)
_SCALE = (0.7, 1.1, 0.9, 0.45, 0.7)


def graph_statistics(num_nodes: int, num_edges: int, num_features: int, num_classes: int
                     ) -> DatasetStats:
    """Statistics of a user dataset (``num_edges`` undirected)."""
    if min(num_nodes, num_edges, num_features, num_classes) < 1:
        raise ValueError("graph statistics must be positive integers")
    return DatasetStats(num_nodes, num_edges, num_features, num_classes)


def task_features(task: str | DatasetStats) -> Tensor:
    """The ``(TASK_DIM,)`` embedding input of a dataset (standardised log statistics)."""
    if isinstance(task, str):
        if task not in NBG_STATS:
            raise ValueError(f"no statistics for dataset {task!r}; expected one of "
                             f"{', '.join(NBG_STATS)}")
        task = NBG_STATS[task]
    raw = (math.log10(task.nodes), math.log10(task.edges), math.log10(task.features),
           math.log10(task.classes), math.log10(2 * task.edges / task.nodes))
    return torch.tensor([(r - c) / s for r, c, s in zip(raw, _CENTER, _SCALE)])
