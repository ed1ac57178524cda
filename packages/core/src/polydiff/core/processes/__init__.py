"""Forward processes: Gaussian (VP, sub-VP, VE, EDM, OUVE, interpolants) and discrete."""

from polydiff.core.processes.gaussian import GaussianProcess
from polydiff.core.processes.interpolant import LinearInterpolant, TrigInterpolant
from polydiff.core.processes.ouve import OUVE
from polydiff.core.processes.ve import EDM, VE
from polydiff.core.processes.vp import SubVP, VPCosine, VPDiscrete, VPLinear, betas_for_alpha_bar

__all__ = [
    "GaussianProcess", "VPLinear", "VPCosine", "VPDiscrete", "SubVP", "VE", "EDM", "OUVE",
    "LinearInterpolant", "TrigInterpolant", "betas_for_alpha_bar",
]
