"""The architecture diffusion model of DiffusionNAG (An et al. 2024, "DiffusionNAG:
Predictor-guided Neural Architecture Generation with Diffusion Models", Sec. 3.1): a
continuous VP diffusion over node-type one-hots (and the adjacency entries the space varies),
a masked graph-transformer score network, predictor-corrector sampling and discretisation.

Everything diffusion-specific comes from polydiff's engine: the process
(:class:`~polydiff.core.processes.VPLinear`), the network
(:class:`~polydiff.core.nn.graph.GraphTransformer`), the loss
(:class:`~polydiff.core.losses.DiffusionLoss`), the training loop
(:class:`~polydiff.core.training.Trainer`) and the samplers
(:func:`~polydiff.core.samplers.sample_pc` and friends). This module only ties them to a
search space.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from polydiff.core.denoiser import Denoiser, ModelDenoiser
from polydiff.core.grids import time_grid
from polydiff.core.nn.graph import GraphTransformer, GraphTransformerConfig
from polydiff.core.processes import VPLinear
from polydiff.graphnas.spaces import SearchSpace, get_space

__all__ = ["DiffusionConfig", "SamplerConfig", "ArchDiffusion", "SAMPLERS", "META_NAME"]

SAMPLERS = ("pc", "ddpm", "euler_maruyama")
META_NAME = "diffusion.json"


@dataclass
class DiffusionConfig:
    """The score network and the forward process of an architecture diffusion model."""

    space: str = "nbgraph"
    hidden_size: int = 64
    depth: int = 4
    num_heads: int = 4
    edge_size: int = 16
    mlp_ratio: float = 2.0
    attention: str = "graph"
    beta_min: float = 0.1
    beta_max: float = 20.0

    def network_config(self, space: SearchSpace) -> GraphTransformerConfig:
        lay = space.layout()
        fixed = lay.fixed_adjacency
        return GraphTransformerConfig(
            n_nodes=lay.n_nodes, node_channels=lay.node_channels, free_edges=lay.free_edges,
            fixed_adjacency=None if not bool(fixed.any()) else tuple(map(tuple, fixed.tolist())),
            hidden_size=self.hidden_size, depth=self.depth, num_heads=self.num_heads,
            edge_size=self.edge_size, mlp_ratio=self.mlp_ratio,
            attention=self.attention, output="state")  # type: ignore[arg-type]


@dataclass
class SamplerConfig:
    """Sampling settings: ``pc`` (reverse-diffusion predictor + Langevin corrector, Song et
    al. 2021, as DiffusionNAG), ``ddpm`` (ancestral) or ``euler_maruyama``."""

    sampler: str = "pc"
    steps: int = 100
    snr: float = 0.16
    corrector_steps: int = 1
    batch_size: int = 512
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}; expected one of "
                             f"{', '.join(SAMPLERS)}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("sampler steps and batch size must be >= 1")


class ArchDiffusion:
    """A trained (or fresh) architecture diffusion model over one search space."""

    def __init__(self, config: DiffusionConfig, net: GraphTransformer | None = None):
        self.config = config
        self.space = get_space(config.space)
        self.net = net if net is not None else GraphTransformer(config.network_config(self.space))
        self.process = VPLinear(config.beta_min, config.beta_max)
        self.denoiser = ModelDenoiser(self.net, self.process, "epsilon")

    def to_device(self, device: str | torch.device) -> ArchDiffusion:
        """Move the network to ``device`` (returns ``self``)."""
        self.net.to(device)
        return self

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> Path:
        """``directory/`` with the network (``save_pretrained``) and ``diffusion.json``."""
        from polydiff.core.utils import atomic_write

        directory = Path(directory)
        self.net.save_pretrained(directory / "net")
        atomic_write(directory / META_NAME, json.dumps(asdict(self.config), indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | Path, map_location: str = "cpu") -> ArchDiffusion:
        directory = Path(directory)
        meta = directory / META_NAME
        if not meta.is_file():
            raise ValueError(f"{directory} is not an architecture diffusion model (no "
                             f"{META_NAME})")
        cfg = DiffusionConfig(**json.loads(meta.read_text()))
        net = GraphTransformer.from_pretrained(directory / "net", map_location=map_location)
        return cls(cfg, net)

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample_states(self, n: int, *, sampler: SamplerConfig | None = None,
                      guide: Callable[[Denoiser, int], Denoiser] | None = None,
                      seed: int = 0, progress: bool = False) -> Tensor:
        """``(n, D)`` continuous samples. ``guide(denoiser, batch) -> denoiser`` wraps the
        denoiser of each batch (e.g. predictor guidance with a per-batch condition)."""
        from polydiff.core.samplers import sample_ddpm, sample_euler_maruyama, sample_pc

        sc = sampler or SamplerConfig()
        self.net.eval()
        device = next(self.net.parameters()).device
        ts = time_grid(self.process, sc.steps, "uniform", device=device)
        gen = torch.Generator(device=device)
        gen.manual_seed(int(seed))
        dim, out = self.space.layout().dim, []
        for start in range(0, n, sc.batch_size):
            b = min(sc.batch_size, n - start)
            x = self.process.prior_sample((b, dim), generator=gen, device=device)
            den = guide(self.denoiser, b) if guide is not None else self.denoiser
            quiet = not progress
            if sc.sampler == "pc":
                z = sample_pc(den, x, ts, predictor="reverse_diffusion", corrector="langevin",
                              snr=sc.snr, corrector_steps=sc.corrector_steps, generator=gen,
                              disable=quiet)
            elif sc.sampler == "ddpm":
                z = sample_ddpm(den, x, ts, generator=gen, disable=quiet)
            else:
                z = sample_euler_maruyama(den, x, ts, generator=gen, disable=quiet)
            out.append(z.float().cpu())
        return torch.cat(out) if out else torch.zeros(0, dim)

    def generate(self, n: int, *, sampler: SamplerConfig | None = None,
                 guide: Callable[[Denoiser, int], Denoiser] | None = None, seed: int = 0,
                 type_mask: Tensor | None = None, progress: bool = False
                 ) -> tuple[list[Any], Tensor]:
        """``n`` discretised architectures (``None`` where invalid) and their states."""
        states = self.sample_states(n, sampler=sampler, guide=guide, seed=seed,
                                    progress=progress)
        return self.space.from_state(states, type_mask), states

    def loss(self) -> Any:
        """The training objective: eps-prediction MSE (``DiffusionLoss``)."""
        from polydiff.core.losses import DiffusionLoss

        return DiffusionLoss(self.process, target="epsilon")

    def state_of(self, archs: Sequence[Any]) -> Tensor:
        return self.space.to_state(archs)
