"""polydiff-core: the shared diffusion engine.

Submodules: :mod:`~polydiff.core.processes` (forward processes), :mod:`~polydiff.core.param`
(parameterizations), :mod:`~polydiff.core.denoiser`, :mod:`~polydiff.core.losses`,
:mod:`~polydiff.core.grids`, :mod:`~polydiff.core.samplers`, :mod:`~polydiff.core.guidance`,
:mod:`~polydiff.core.predictors` (noise-aware predictors and scheduled predictor guidance),
:mod:`~polydiff.core.testbeds`, :mod:`~polydiff.core.distill` (progressive distillation),
:mod:`~polydiff.core.multimodal` (per-modality timesteps),
:mod:`~polydiff.core.operators` (measurement operators),
:mod:`~polydiff.core.inverse` (data-consistency and RED-Diff solvers),
:mod:`~polydiff.core.shapes` (``append_dims`` and other tensor helpers),
:mod:`~polydiff.core.utils` (atomic writes, progress: standard library only),
:mod:`~polydiff.core.cli` (app helpers) and :mod:`~polydiff.core.interop` (diffusers, optional).

The names below are imported on first use (PEP 562), so ``import polydiff.core.cli`` (and every
app's ``--help``) does not import torch.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from polydiff.core.lazy import lazy_exports

if TYPE_CHECKING:
    from polydiff.core.denoiser import Denoiser, EDMDenoiser, ModelDenoiser
    from polydiff.core.grids import time_grid
    from polydiff.core.processes import (
        EDM,
        OUVE,
        VE,
        GaussianProcess,
        LinearInterpolant,
        SubVP,
        TrigInterpolant,
        VPCosine,
        VPDiscrete,
        VPLinear,
    )
    from polydiff.core.shapes import append_dims

try:
    __version__ = version("polydiff-core")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "Denoiser", "ModelDenoiser", "EDMDenoiser", "time_grid", "GaussianProcess", "VPLinear",
    "VPCosine", "VPDiscrete", "SubVP", "VE", "EDM", "OUVE", "LinearInterpolant",
    "TrigInterpolant", "append_dims", "__version__",
]

_HOME = {
    **dict.fromkeys(("Denoiser", "ModelDenoiser", "EDMDenoiser"), "polydiff.core.denoiser"),
    "time_grid": "polydiff.core.grids",
    "append_dims": "polydiff.core.shapes",
    **dict.fromkeys(("GaussianProcess", "VPLinear", "VPCosine", "VPDiscrete", "SubVP", "VE",
                     "EDM", "OUVE", "LinearInterpolant", "TrigInterpolant"),
                    "polydiff.core.processes"),
}


_SUBMODULES = frozenset({"processes", "param", "denoiser", "losses", "grids", "samplers",
                         "guidance", "testbeds", "interop", "cli", "nn", "training",
                         "shapes", "utils", "config", "plots", "lazy", "distill",
                         "predictors", "multimodal", "operators", "inverse"})


__getattr__, __dir__ = lazy_exports(__name__, _HOME, _SUBMODULES)
