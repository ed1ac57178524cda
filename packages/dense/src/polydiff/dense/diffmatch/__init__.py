"""DiffMatch (Nam et al. 2024, "Diffusion Model for Dense Matching"): dense correspondence
as conditional diffusion over the flow field, fed by a matching cost volume.

* :mod:`~.features`: the feature CNN (and DAISY), global cost, argmax flow, local cost;
* :mod:`~.model`: the conditional x0-predicting denoiser and the :class:`DiffMatch` pipeline
  (5-step DDIM from core, several hypotheses, x2 flow super-resolution);
* :mod:`~.train`: training every stage with core's ``Trainer``;
* :mod:`~.evaluate`: held-out warps, the Middlebury pair, corruptions and the baselines.
"""

from polydiff.dense.diffmatch.features import FeatureNet, FeatureNetConfig
from polydiff.dense.diffmatch.model import (
    DiffMatch,
    DiffMatchConfig,
    FlowDenoiserNet,
    FlowNetConfig,
)
from polydiff.dense.diffmatch.train import TrainSettings, train_pipeline

__all__ = ["DiffMatch", "DiffMatchConfig", "FeatureNet", "FeatureNetConfig",
           "FlowDenoiserNet", "FlowNetConfig", "TrainSettings", "train_pipeline"]
