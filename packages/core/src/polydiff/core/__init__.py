"""polydiff-core: the shared diffusion engine.

Submodules: :mod:`~polydiff.core.processes` (forward processes), :mod:`~polydiff.core.param`
(parameterizations), :mod:`~polydiff.core.denoiser`, :mod:`~polydiff.core.losses`,
:mod:`~polydiff.core.grids`, :mod:`~polydiff.core.samplers`, :mod:`~polydiff.core.guidance`,
:mod:`~polydiff.core.testbeds`, :mod:`~polydiff.core.grid_opt` and
:mod:`~polydiff.core.interop` (diffusers, optional).
"""

from importlib.metadata import PackageNotFoundError, version

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

try:
    __version__ = version("polydiff-core")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "Denoiser", "ModelDenoiser", "EDMDenoiser", "time_grid", "GaussianProcess", "VPLinear",
    "VPCosine", "VPDiscrete", "SubVP", "VE", "EDM", "OUVE", "LinearInterpolant",
    "TrigInterpolant", "__version__",
]
