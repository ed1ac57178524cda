"""Predictor guidance on an exactly computable property moves samples the right way.

The diffusion model is exact: the denoiser of the empirical distribution of 400 NAS-Bench-201
cells (a Gaussian mixture with one tiny-variance component per cell, core's test bed), so no
score network is trained and the only learned part is what is tested: a noise-aware
predictor of the exact parameter count, trained here with core's Trainer, steering core's PC
sampler through core's gradient guidance. Guided towards more parameters, the discretised
samples have more parameters than unguided ones (and fewer when guided the other way)."""

from __future__ import annotations

import random

import numpy as np
import torch

from polydiff.core.testbeds import GaussianMixture
from polydiff.graphnas.model import ArchDiffusion, DiffusionConfig, SamplerConfig
from polydiff.graphnas.predictor import ArchPredictor, PredictorConfig
from polydiff.graphnas.spaces import NB201Space
from polydiff.graphnas.train import train_predictor


def test_guidance_on_the_exact_parameter_count(tmp_path):
    torch.manual_seed(0)
    space = NB201Space()
    cells = list(space.enumerate())
    random.Random(0).shuffle(cells)
    cells = cells[:400]
    states = space.to_state(cells)
    params = np.array([space.properties(c)["params"] for c in cells])
    y = (params - params.mean()) / params.std()

    pred = ArchPredictor(PredictorConfig(space="nb201", hidden_size=32, depth=2))
    train_predictor(pred, states, y, tmp_path / "pred", steps=200, batch_size=128, lr=3e-3,
                    ckpt_every=0)

    diffusion = ArchDiffusion(DiffusionConfig(space="nb201"))
    mix = GaussianMixture(states.double(), torch.full(states.shape, 1e-4, dtype=torch.float64))
    diffusion.denoiser = mix.denoiser(diffusion.process)  # the exact empirical denoiser
    sampler = SamplerConfig(sampler="pc", steps=40, batch_size=64)

    def mean_params(scale: float) -> tuple[float, float]:
        guide = None if scale == 0 else (lambda den, b: pred.guide(den, b, scale=scale))
        out, _ = diffusion.generate(64, sampler=sampler, guide=guide, seed=1)
        valid = [a for a in out if a is not None]
        return float(np.mean([space.properties(a)["params"] for a in valid])), \
            len(valid) / len(out)

    base, v0 = mean_params(0.0)
    up, v1 = mean_params(4.0)
    down, v2 = mean_params(-4.0)
    assert min(v0, v1, v2) > 0.95
    spread = params.std()
    assert up > base + 0.5 * spread
    assert down < base - 0.5 * spread
