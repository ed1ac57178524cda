"""Samplers: plain functions ``sample_xxx(denoiser, x, ts, *, cond, callback, disable, ...)``.

See :mod:`polydiff.core.samplers._common` for the shared surface.
"""

from polydiff.core.samplers.adaptive import log_likelihood, sample_ode_adaptive, solve_pf_ode
from polydiff.core.samplers.bespoke import BespokeSolver, fit_bespoke, sample_bespoke
from polydiff.core.samplers.discrete import discrete_time_grid, sample_discrete
from polydiff.core.samplers.dpmsolver import sample_dpmpp_2m, sample_dpmpp_2m_sde, sample_dpmpp_3m
from polydiff.core.samplers.ode import sample_ddim, sample_euler, sample_heun
from polydiff.core.samplers.sde import sample_ddpm, sample_euler_maruyama, sample_pc
from polydiff.core.samplers.unipc import sample_unipc

__all__ = [
    "sample_ddim", "sample_euler", "sample_heun", "sample_dpmpp_2m", "sample_dpmpp_3m",
    "sample_dpmpp_2m_sde", "sample_unipc", "sample_ddpm", "sample_euler_maruyama", "sample_pc",
    "sample_discrete", "discrete_time_grid", "sample_ode_adaptive", "solve_pf_ode",
    "log_likelihood", "BespokeSolver", "fit_bespoke", "sample_bespoke",
]
