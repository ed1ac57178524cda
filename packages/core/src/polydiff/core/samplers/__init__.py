"""Samplers: plain functions ``sample_xxx(denoiser, x, ts, *, cond, callback, disable, ...)``.

See :mod:`polydiff.core.samplers._common` for the shared surface and
:mod:`polydiff.core.samplers.registry` for the list of names (what apps offer as
``--sampler``). The names below are imported on first use (PEP 562), so importing the
registry does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from polydiff.core.lazy import lazy_exports

if TYPE_CHECKING:
    from polydiff.core.samplers.adaptive import log_likelihood, sample_ode_adaptive, solve_pf_ode
    from polydiff.core.samplers.bespoke import (
        BespokeSolver,
        fit_bespoke,
        fit_best_solver,
        sample_bespoke,
    )
    from polydiff.core.samplers.discrete import discrete_time_grid, sample_discrete
    from polydiff.core.samplers.dpmsolver import (
        sample_dpmpp_2m,
        sample_dpmpp_2m_sde,
        sample_dpmpp_3m,
    )
    from polydiff.core.samplers.gits import gits_grid
    from polydiff.core.samplers.ipndm import sample_ipndm
    from polydiff.core.samplers.ode import sample_ddim, sample_euler, sample_heun
    from polydiff.core.samplers.registry import SAMPLERS, get_sampler
    from polydiff.core.samplers.sde import sample_ddpm, sample_euler_maruyama, sample_pc
    from polydiff.core.samplers.unipc import sample_unipc

__all__ = [
    "sample_ddim", "sample_euler", "sample_heun", "sample_dpmpp_2m", "sample_dpmpp_3m",
    "sample_dpmpp_2m_sde", "sample_unipc", "sample_ipndm", "sample_ddpm",
    "sample_euler_maruyama", "sample_pc", "sample_discrete", "discrete_time_grid",
    "sample_ode_adaptive", "solve_pf_ode", "log_likelihood", "BespokeSolver", "fit_bespoke",
    "fit_best_solver", "sample_bespoke", "gits_grid", "SAMPLERS", "get_sampler",
]

_HOME = {
    **dict.fromkeys(("log_likelihood", "sample_ode_adaptive", "solve_pf_ode"), "adaptive"),
    **dict.fromkeys(("BespokeSolver", "fit_bespoke", "fit_best_solver", "sample_bespoke"),
                    "bespoke"),
    **dict.fromkeys(("discrete_time_grid", "sample_discrete"), "discrete"),
    **dict.fromkeys(("sample_dpmpp_2m", "sample_dpmpp_2m_sde", "sample_dpmpp_3m"), "dpmsolver"),
    "gits_grid": "gits",
    "sample_ipndm": "ipndm",
    **dict.fromkeys(("sample_ddim", "sample_euler", "sample_heun"), "ode"),
    **dict.fromkeys(("SAMPLERS", "get_sampler"), "registry"),
    **dict.fromkeys(("sample_ddpm", "sample_euler_maruyama", "sample_pc"), "sde"),
    "sample_unipc": "unipc",
}

__getattr__, __dir__ = lazy_exports(
    __name__, {k: f"{__name__}.{v}" for k, v in _HOME.items()},
    ("adaptive", "bespoke", "discrete", "dpmsolver", "gits", "ipndm", "ode", "registry", "sde",
     "stepper", "unipc", "reference"))
