"""Search loops on a tabular benchmark, all with the same query accounting (:class:`Oracle`):
each observes only the *validation* accuracy of what it queries; test accuracy is recorded
for reporting and never guides the search.

* :func:`diffusionnag_search`: DiffusionNAG's loop (An et al. 2024, Sec. 3.3 and 4.3): the
  (meta-)predictor guides generation, the generated architectures are ranked by the
  predictor (generate-then-rank) and the best unqueried ones are queried; after each round
  the surrogate adapts to the observed accuracies (Bayesian-optimisation style). The
  adaptation refines the task embedding by a pairwise ranking loss on the queried
  architectures (the network stays as meta-trained), so a handful of queries moves the
  predictor towards the target dataset without overfitting it. With ``guided=False`` it is
  sample-then-filter: unguided samples ranked by the same predictor.
* :func:`random_search`: uniform sampling of unique architectures without replacement.
* :func:`regularized_evolution`: Real et al. (2019), "Regularized Evolution for Image
  Classifier Architecture Search", Algorithm 1 (aging evolution, tournament selection,
  single mutations of one operation or one link).
"""

from __future__ import annotations

import copy
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from polydiff.core.predictors import GuidanceSchedule
from polydiff.graphnas.benchmarks import NASBenchGraph, Oracle, Record
from polydiff.graphnas.model import ArchDiffusion, SamplerConfig
from polydiff.graphnas.predictor import ArchPredictor
from polydiff.graphnas.spaces.nbgraph import GraphArch

__all__ = ["SearchTrace", "GuidanceConfig", "random_search", "regularized_evolution",
           "diffusionnag_search", "generate_ranked", "adapt_task_embedding", "type_mask_for"]


@dataclass
class SearchTrace:
    """What a search queried, in order, with the benchmark's answers."""

    method: str
    dataset: str
    seed: int
    archs: list[GraphArch] = field(default_factory=list)
    valid: list[float] = field(default_factory=list)
    test: list[float] = field(default_factory=list)

    def add(self, arch: GraphArch, rec: Record | None) -> None:
        self.archs.append(arch)
        self.valid.append(rec.valid if rec else float("nan"))
        self.test.append(rec.test if rec else float("nan"))

    @property
    def queries(self) -> int:
        return len(self.archs)

    def hitting_time(self, threshold: float, metric: str = "test") -> int | None:
        """1-based index of the first query reaching ``threshold`` (``None``: never)."""
        vals = self.test if metric == "test" else self.valid
        for i, v in enumerate(vals, start=1):
            if v >= threshold:
                return i
        return None

    def best_so_far(self, metric: str = "test") -> list[float]:
        """Running maximum of a metric over the queries."""
        vals = np.asarray(self.test if metric == "test" else self.valid, dtype=np.float64)
        return np.fmax.accumulate(np.nan_to_num(vals, nan=-np.inf)).tolist()

    def incumbent_test(self) -> list[float]:
        """Test accuracy of the best-by-validation architecture after each query (what a
        practitioner would deploy)."""
        out, best_v, best_t = [], -np.inf, float("nan")
        for v, t in zip(self.valid, self.test):
            if v > best_v:
                best_v, best_t = v, t
            out.append(best_t)
        return out


@dataclass
class GuidanceConfig:
    """Predictor guidance of the generation: strength, schedule over time, samples per round."""

    scale: float = 10.0
    schedule: str = "constant"
    n_generate: int = 256
    sampler: SamplerConfig = field(default_factory=lambda: SamplerConfig(steps=100))


def type_mask_for(bench: NASBenchGraph) -> Tensor | None:
    """``(N, T)`` allowed node types for the benchmark's dataset (ogbn-proteins: 5 ops)."""
    space = bench.space
    if tuple(bench.ops) == tuple(space.node_types[1:]):
        return None
    mask = torch.zeros(space.n_nodes, space.n_types, dtype=torch.bool)
    mask[0, space.node_types.index("input")] = True
    for op in bench.ops:
        mask[1:, space.node_types.index(op)] = True
    return mask


# --------------------------------------------------------------------------- baselines
def random_search(bench: NASBenchGraph, budget: int, seed: int = 0) -> SearchTrace:
    """Uniform random search over the unique architectures, without replacement."""
    rng = random.Random(seed)
    oracle, trace = Oracle(bench), SearchTrace("random", bench.dataset, seed)
    for i in rng.sample(range(len(bench)), min(budget, len(bench))):
        arch = bench.records[i].arch
        trace.add(arch, oracle.query(arch))
    return trace


def _mutate(arch: GraphArch, ops: Sequence[str], rng: random.Random) -> GraphArch:
    links, aops = list(arch.links), list(arch.ops)
    if rng.random() < 0.5:
        i = rng.randrange(len(aops))
        aops[i] = rng.choice([o for o in ops if o != aops[i]])
    else:
        i = rng.randrange(1, len(links))  # node 1 can only read the input
        links[i] = rng.choice([v for v in range(i + 1) if v != links[i]])
    return GraphArch(tuple(links), tuple(aops))


def regularized_evolution(bench: NASBenchGraph, budget: int, seed: int = 0, *,
                          population: int = 20, sample: int = 5) -> SearchTrace:
    """Aging evolution (Real et al. 2019, Algorithm 1) on the validation accuracy."""
    rng = random.Random(seed)
    oracle, trace = Oracle(bench), SearchTrace("regularized_evolution", bench.dataset, seed)
    pop: deque[tuple[GraphArch, float]] = deque()
    for i in rng.sample(range(len(bench)), min(population, budget, len(bench))):
        arch = bench.records[i].arch
        rec = oracle.query(arch)
        trace.add(arch, rec)
        pop.append((arch, rec.valid if rec else -1.0))
    while trace.queries < budget:
        parent = max(rng.sample(list(pop), min(sample, len(pop))), key=lambda p: p[1])[0]
        for _ in range(100):  # a valid child with a benchmark entry that was not queried yet
            child = _mutate(parent, bench.ops, rng)
            if bench.lookup(child) is not None and not oracle.seen(child):
                break
        else:
            child = bench.records[rng.randrange(len(bench))].arch
        rec = oracle.query(child)
        trace.add(child, rec)
        pop.append((child, rec.valid if rec else -1.0))
        if len(pop) > population:
            pop.popleft()
    return trace


# --------------------------------------------------------------------------- DiffusionNAG
def generate_ranked(diffusion: ArchDiffusion, predictor: ArchPredictor, bench: NASBenchGraph,
                    *, task: Tensor | None, guidance: GuidanceConfig | None, seed: int,
                    exclude: Callable[[GraphArch], bool] | None = None
                    ) -> tuple[list[GraphArch], dict[str, float]]:
    """Generate (guided when ``guidance.scale > 0``), keep valid architectures that have a
    benchmark entry, deduplicate, drop ``exclude``d ones, rank by the predictor.

    Returns the ranked architectures and generation statistics (validity, uniqueness)."""
    g = guidance or GuidanceConfig()
    guide = None
    if g.scale > 0:
        sched = GuidanceSchedule(g.schedule)

        def guide(den: Any, batch: int) -> Any:
            return predictor.guide(den, batch, scale=g.scale, schedule=sched, task=task)

    archs, _ = diffusion.generate(g.n_generate, sampler=g.sampler, guide=guide, seed=seed,
                                  type_mask=type_mask_for(bench))
    valid = [a for a in archs if a is not None]
    seen: dict[int, GraphArch] = {}
    for a in valid:
        row = bench.index(a)
        if row is not None and row not in seen and not (exclude and exclude(a)):
            seen[row] = a
    cands = list(seen.values())
    stats = {"validity": len(valid) / max(1, len(archs)),
             "unique": len({bench.space.canonical(a) for a in valid}) / max(1, len(valid)),
             "candidates": float(len(cands))}
    if not cands:
        return [], stats
    scores = predictor.predict(cands, task)
    order = np.argsort(-scores, kind="stable")
    return [cands[i] for i in order], stats


def adapt_task_embedding(predictor: ArchPredictor, archs: Sequence[GraphArch],
                         values: Sequence[float], task: Tensor, *, steps: int = 100,
                         lr: float = 0.05, prior: float = 0.1) -> Tensor:
    """Few-shot task embedding: fit ``task`` so the predictor orders the queried ``archs`` as
    their observed ``values`` (pairwise logistic ranking loss, plus ``prior`` times the
    squared distance to the starting embedding). The network's weights stay fixed."""
    if len(archs) < 2 or not predictor.config.cond_dim:
        return task
    net = predictor.net
    device = next(net.parameters()).device
    x = predictor.space.to_state(archs).to(device)
    v = torch.as_tensor(np.asarray(values, dtype=np.float64), device=device)
    better = (v[:, None] > v[None, :]).float()
    if better.sum() == 0:
        return task
    t0 = task.detach().to(device).float()
    emb = t0.clone().requires_grad_(True)
    opt = torch.optim.Adam([emb], lr=lr)
    tt = torch.full((x.shape[0],), float(predictor.process.t_min), device=device)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    try:
        for _ in range(steps):
            f = net(x, tt, cond=emb.expand(x.shape[0], -1))
            diff = f[:, None] - f[None, :]
            loss = (torch.nn.functional.softplus(-diff) * better).sum() / better.sum()
            loss = loss + prior * (emb - t0).square().sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        for p in net.parameters():
            p.requires_grad_(True)
    return emb.detach().cpu()


def diffusionnag_search(bench: NASBenchGraph, diffusion: ArchDiffusion,
                        predictor: ArchPredictor, budget: int, seed: int = 0, *,
                        task: Tensor | None = None, guidance: GuidanceConfig | None = None,
                        per_round: int = 5, adapt: bool = True, guided: bool = True,
                        max_rounds: int | None = None,
                        stop: Callable[[SearchTrace], bool] | None = None) -> SearchTrace:
    """DiffusionNAG's generate-rank-query loop (module docstring).

    ``stop``, checked after each round, ends the loop early when it returns true (an
    evaluation harness's shortcut, e.g. once the hitting time it measures is known). Each
    round is seeded by its index, so a stopped trace is a prefix of the full-budget one."""
    g = copy.deepcopy(guidance or GuidanceConfig())
    if not guided:
        g.scale = 0.0
    name = "diffusionnag" if guided else "sample_then_filter"
    oracle, trace = Oracle(bench), SearchTrace(name, bench.dataset, seed)
    emb = None if task is None else task.clone()
    rounds = 0
    while trace.queries < budget and (max_rounds is None or rounds < max_rounds):
        ranked, _ = generate_ranked(diffusion, predictor, bench, task=emb, guidance=g,
                                    seed=seed * 1000 + rounds, exclude=oracle.seen)
        rounds += 1
        if not ranked:  # nothing new generated: fall back to one random unqueried entry
            rng = random.Random(seed * 7919 + rounds)
            ranked = [r.arch for r in rng.sample(bench.records, 50) if not oracle.seen(r.arch)]
        for arch in ranked[:min(per_round, budget - trace.queries)]:
            trace.add(arch, oracle.query(arch))
        if adapt and task is not None:  # (emb is set exactly when task is)
            ok = [i for i, v in enumerate(trace.valid) if np.isfinite(v)]
            emb = adapt_task_embedding(predictor, [trace.archs[i] for i in ok],
                                       [trace.valid[i] for i in ok], task)
        if stop is not None and stop(trace):
            break
    return trace
