"""The time-conditioned (meta-)predictor of DiffusionNAG (An et al. 2024, Sec. 3.2): a graph
transformer regressor ``f(x_t, t, task)`` trained on *noisy* architectures, so its gradient
w.r.t. ``x_t`` can steer every step of the reverse diffusion.

The network is core's :class:`~polydiff.core.nn.graph.GraphTransformer` with a graph
readout (``output="graph"``) and a graph-level condition (the task embedding of
:mod:`polydiff.graphnas.tasks`, ``cond_dim = TASK_DIM``; ``0`` for a single-task predictor).
Training uses core's :class:`~polydiff.core.predictors.NoisyPredictorLoss`; guidance uses
core's :func:`~polydiff.core.predictors.predictor_guidance` (gradient guidance with a
schedule). Targets are standardised per task (normal scores of the ranks, so every dataset
has the same scale and outliers do not dominate).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from polydiff.core.denoiser import Denoiser
from polydiff.core.nn.graph import GraphTransformer, GraphTransformerConfig
from polydiff.core.predictors import GuidanceSchedule, NoisyPredictorLoss, predictor_guidance
from polydiff.core.processes import VPLinear
from polydiff.graphnas.spaces import get_space

__all__ = ["PredictorConfig", "ArchPredictor", "rank_normal", "PREDICTOR_META"]

PREDICTOR_META = "predictor.json"


def rank_normal(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Normal scores of the ranks (Blom's ``(r - 3/8) / (n + 1/4)``), ties averaged."""
    from scipy.stats import norm, rankdata

    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return v
    r = rankdata(v, method="average")
    return norm.ppf((r - 0.375) / (v.size + 0.25))


@dataclass
class PredictorConfig:
    """The regressor and the forward process it is noise-aware for (the diffusion model's)."""

    space: str = "nbgraph"
    hidden_size: int = 64
    depth: int = 3
    num_heads: int = 4
    edge_size: int = 16
    cond_dim: int = 0
    attention: str = "graph"
    beta_min: float = 0.1
    beta_max: float = 20.0
    target: str = "valid"

    def network_config(self) -> GraphTransformerConfig:
        space = get_space(self.space)
        lay = space.layout()
        fixed = lay.fixed_adjacency
        return GraphTransformerConfig(
            n_nodes=lay.n_nodes, node_channels=lay.node_channels, free_edges=lay.free_edges,
            fixed_adjacency=None if not bool(fixed.any()) else tuple(map(tuple, fixed.tolist())),
            hidden_size=self.hidden_size, depth=self.depth, num_heads=self.num_heads,
            edge_size=self.edge_size, attention=self.attention,  # type: ignore[arg-type]
            output="graph", graph_outputs=1, cond_dim=self.cond_dim)


class ArchPredictor:
    """A noise-aware property predictor over one search space."""

    def __init__(self, config: PredictorConfig, net: GraphTransformer | None = None):
        self.config = config
        self.space = get_space(config.space)
        self.net = net if net is not None else GraphTransformer(config.network_config())
        self.process = VPLinear(config.beta_min, config.beta_max)

    def to_device(self, device: str | torch.device) -> ArchPredictor:
        """Move the network to ``device`` (returns ``self``)."""
        self.net.to(device)
        return self

    def loss(self, clean_fraction: float = 0.25) -> NoisyPredictorLoss:
        return NoisyPredictorLoss(self.process, "mse", clean_fraction=clean_fraction)

    def _cond(self, task: Tensor | None, batch: int, device: torch.device) -> dict[str, Any]:
        if not self.config.cond_dim:
            return {}
        if task is None:
            raise ValueError("this predictor is task-conditioned: pass a task embedding")
        task = torch.as_tensor(task, dtype=torch.float32, device=device)
        if task.ndim == 1:
            task = task.expand(batch, -1)
        return {"cond": task}

    @torch.no_grad()
    def predict_states(self, states: Tensor, task: Tensor | None = None, t: float | None = None,
                       batch_size: int = 4096) -> Tensor:
        """Predicted (standardised) property of ``(B, D)`` states at time ``t`` (default: the
        clean end ``t_min``)."""
        self.net.eval()
        device = next(self.net.parameters()).device
        tt = float(self.process.t_min if t is None else t)
        out = []
        for s in range(0, states.shape[0], batch_size):
            x = states[s:s + batch_size].to(device)
            tv = torch.full((x.shape[0],), tt, device=device)
            out.append(self.net(x, tv, **self._cond(task, x.shape[0], device)).float().cpu())
        return torch.cat(out) if out else torch.zeros(0)

    def predict(self, archs: Sequence[Any], task: Tensor | None = None) -> np.ndarray:
        """Predicted property of architectures (clean states)."""
        return self.predict_states(self.space.to_state(archs), task).numpy()

    def guide(self, denoiser: Denoiser, batch: int, *, scale: float,
              schedule: GuidanceSchedule | None = None, task: Tensor | None = None,
              target: float | None = None) -> Denoiser:
        """``denoiser`` guided towards high (or ``target``) predicted property."""
        cond = self._cond(task, batch, next(self.net.parameters()).device)
        self.net.eval()
        return predictor_guidance(denoiser, self.net, scale, schedule=schedule, target=target,
                                  predictor_cond=cond)

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> Path:
        from polydiff.core.utils import atomic_write

        directory = Path(directory)
        self.net.save_pretrained(directory / "net")
        atomic_write(directory / PREDICTOR_META, json.dumps(asdict(self.config), indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | Path, map_location: str = "cpu") -> ArchPredictor:
        directory = Path(directory)
        meta = directory / PREDICTOR_META
        if not meta.is_file():
            raise ValueError(f"{directory} is not a predictor (no {PREDICTOR_META})")
        cfg = PredictorConfig(**json.loads(meta.read_text()))
        net = GraphTransformer.from_pretrained(directory / "net", map_location=map_location)
        return cls(cfg, net)
