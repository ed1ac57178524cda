"""Lotus: single-step diffusion dense prediction (depth, surface normals) with a detail
preserver (He et al. 2024), trained on procedurally rendered RGB-D scenes; see
:mod:`~polydiff.dense.lotus.model`."""

from polydiff.dense.lotus.metrics import align_scale_shift, depth_metrics, normal_metrics
from polydiff.dense.lotus.model import (
    TASKS,
    VARIANTS,
    LotusNet,
    LotusNetConfig,
    adapt_prior,
    decode,
    predict,
)
from polydiff.dense.lotus.scenes import Scene, render_scene, render_split

__all__ = ["TASKS", "VARIANTS", "LotusNet", "LotusNetConfig", "adapt_prior", "decode",
           "predict", "Scene", "render_scene", "render_split", "align_scale_shift",
           "depth_metrics", "normal_metrics"]
