"""The DiffusionNAG search loop's early stop: a stopped trace is exactly the prefix of the
full-budget trace (each round is seeded by its index), so a benchmark may run a large query
budget and stop once the hitting time it measures is known without changing any query."""

from __future__ import annotations

import torch

from polydiff.core.testbeds import GaussianMixture
from polydiff.graphnas import search as sr
from polydiff.graphnas.benchmarks import NASBenchGraph
from polydiff.graphnas.meta import bench_states
from polydiff.graphnas.model import ArchDiffusion, DiffusionConfig, SamplerConfig
from polydiff.graphnas.predictor import ArchPredictor, PredictorConfig
from polydiff.graphnas.tasks import TASK_DIM, task_features


def test_stopped_search_is_a_prefix_of_the_full_search():
    torch.manual_seed(0)
    bench = NASBenchGraph("cora")
    states = bench_states("cora")[::97][:200]
    diffusion = ArchDiffusion(DiffusionConfig(space="nbgraph"))
    mix = GaussianMixture(states.double(), torch.full(states.shape, 1e-4, dtype=torch.float64))
    diffusion.denoiser = mix.denoiser(diffusion.process)  # the exact empirical denoiser
    pred = ArchPredictor(PredictorConfig(space="nbgraph", cond_dim=TASK_DIM, hidden_size=16,
                                         depth=1))
    g = sr.GuidanceConfig(scale=2.0, n_generate=16,
                          sampler=SamplerConfig(steps=8, batch_size=16))
    task = task_features("cora")

    def run(stop=None):
        return sr.diffusionnag_search(bench, diffusion, pred, 20, seed=3, task=task,
                                      guidance=g, per_round=4, stop=stop)

    full = run()
    assert full.queries == 20
    stopped = run(stop=lambda tr: tr.queries >= 8)
    assert stopped.queries == 8  # stopped after the second round of 4
    assert stopped.archs == full.archs[:8]
    assert stopped.valid == full.valid[:8] and stopped.test == full.test[:8]
