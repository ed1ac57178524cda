"""Stochastic samplers: DDPM ancestral sampling, Euler–Maruyama on the reverse SDE and
predictor–corrector sampling, written once for every Gaussian process.

All three integrate the centred variable ``z = x - c`` (see
:class:`~polydiff.core.samplers._common.Sampling`), so the mean-reverting OUVE of SGMSE+
(centre ``c = y``, passed as ``cond={"y": y}``) is served by the same code as VP/VE: its
drift ``f (x - y)`` is ``f z``. The score is the denoiser's ``-eps / sigma``; for complex data
it follows SGMSE's convention (complex standard normal noise, ``E|n|^2 = 1``, density
``~ exp(-|z|^2 / sigma^2)`` and score ``-z / sigma^2``), under which the real-data formulas
below hold unchanged, so noise is drawn with ``torch.randn`` in ``x``'s (complex) dtype.

The last step of every sampler is controlled by ``denoise_final``:

* ``"mean"`` (default): the last step adds no noise (the ``x_mean`` that Song et al.'s and
  SGMSE's code return with ``denoise=True``; DDPM's Algorithm 2 line 4 at ``t = 1``);
* ``True`` / ``"tweedie"``: as ``"mean"``, then one more denoiser call at ``ts[-1]``
  returns its clean estimate ``E[x0 | x_t]`` (Tweedie's formula; skipped where
  ``sigma(ts[-1]) = 0``);
* ``False`` / ``"none"``: the last step adds its noise like every other.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor

from polydiff.core.denoiser import Denoiser
from polydiff.core.samplers._common import Callback, Sampling, make_generator
from polydiff.core.utils import progress

__all__ = ["sample_ddpm", "sample_euler_maruyama", "sample_pc", "PREDICTORS", "CORRECTORS"]

PREDICTORS = ("reverse_diffusion", "euler_maruyama", "none")
CORRECTORS = ("ald", "langevin", "none")

DenoiseFinal = bool | Literal["mean", "tweedie", "none"]


# --------------------------------------------------------------------------- helpers
def _final_mode(denoise_final: DenoiseFinal) -> str:
    if denoise_final is True or denoise_final == "tweedie":
        return "tweedie"
    if denoise_final is False or denoise_final == "none":
        return "none"
    if denoise_final == "mean":
        return "mean"
    raise ValueError(f"denoise_final must be True, False, 'mean', 'tweedie' or 'none', "
                     f"got {denoise_final!r}")


def _randn(z: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal noise like ``z`` (complex standard normal for complex ``z``)."""
    return torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)


class _Grid:
    """The grid's schedule as Python floats (float64), computed once per call so the loop
    never synchronises with the device."""

    def __init__(self, s: Sampling):
        p, ts = s.process, s.ts
        self.t = ts.tolist()
        self.alpha, self.sigma = s.alphas.tolist(), s.sigmas.tolist()
        self.f, self.g2 = p.f(ts).tolist(), p.g2(ts).tolist()
        self.std = p.marginal_std(ts).tolist()
        if not all(v > 0 for v in self.sigma[:-1]):
            raise ValueError("stochastic samplers need sigma > 0 at every grid time but the "
                             "last")

    def score(self, eps: Tensor, i: int) -> Tensor:
        """``grad log p_t = -eps / sigma`` at grid index ``i``."""
        return eps * (-1.0 / self.sigma[i])

    def dt(self, i: int) -> float:
        return self.t[i] - self.t[i + 1]


def _tweedie_finish(s: Sampling, grid: _Grid, z: Tensor, mode: str) -> Tensor:
    """Apply ``denoise_final="tweedie"`` and undo the centring."""
    if mode == "tweedie" and grid.sigma[-1] > 0:
        z = s.denoise(z, s.steps)[0]
    return s.finish(z)


# --------------------------------------------------------------------------- DDPM
@torch.no_grad()
def sample_ddpm(denoiser: Denoiser, x: Tensor, ts: Tensor, *,
                cond: dict[str, Any] | None = None, callback: Callback | None = None,
                disable: bool | None = None, generator: torch.Generator | None = None,
                seed: int | None = None, denoise_final: DenoiseFinal = "mean") -> Tensor:
    """Ancestral sampling, Algorithm 2 of Ho et al. (2020), "Denoising Diffusion Probabilistic
    Models", on any grid of any Gaussian process.

    Each step ``t -> s`` draws from the Gaussian posterior ``q(z_s | z_t, z0)`` with ``z0`` the
    denoiser's estimate (Kingma et al. 2021, "Variational Diffusion Models", eq. 33-34):
    ``alpha_{t|s} = alpha_t / alpha_s``, ``sigma_{t|s}^2 = sigma_t^2 - alpha_{t|s}^2
    sigma_s^2``, mean ``alpha_{t|s} sigma_s^2 / sigma_t^2 z_t + alpha_s sigma_{t|s}^2 /
    sigma_t^2 z0``, variance ``sigma_{t|s}^2 sigma_s^2 / sigma_t^2``. Coefficients use
    ``1 - alpha_{t|s}^2 sigma_s^2 / sigma_t^2 = -expm1(lambda_t - lambda_s)`` in float64. A
    step to ``sigma = 0`` returns ``alpha_s z0`` without noise. On a discrete VP schedule this
    is diffusers' ``DDPMScheduler`` with ``variance_type="fixed_small"``. One NFE per step.
    """
    s = Sampling(denoiser, x, ts, cond, callback)
    grid, mode = _Grid(s), _final_mode(denoise_final)
    gen = make_generator(generator, seed, x.device)
    coefs = []
    for i in range(s.steps):
        a_t, a_s, s_t, s_s = grid.alpha[i], grid.alpha[i + 1], grid.sigma[i], grid.sigma[i + 1]
        if not s_s > 0.0:  # a step to sigma = 0 (also where rounding gives sigma = nan)
            coefs.append((0.0, a_s, 0.0))
            continue
        # 1 - alpha_{t|s}^2 sigma_s^2 / sigma_t^2 = sigma_{t|s}^2 / sigma_t^2
        one_m = -math.expm1(2.0 * (math.log(a_t / a_s) + math.log(s_s / s_t)))
        coefs.append((a_t / a_s * (s_s / s_t) ** 2, a_s * one_m, s_s * math.sqrt(max(one_m, 0.0))))
    z = s.z
    for i in progress(s.steps, disable=disable):
        z0, _ = s.denoise(z, i)
        c_z, c_0, std = coefs[i]
        z = c_z * z + c_0 * z0
        if std > 0 and not (i == s.steps - 1 and mode != "none"):
            z = z + std * _randn(z, gen)
        s.report(i, z, z0)
    return _tweedie_finish(s, grid, z, mode)


# --------------------------------------------------------------------------- Euler-Maruyama
@torch.no_grad()
def sample_euler_maruyama(denoiser: Denoiser, x: Tensor, ts: Tensor, *,
                          cond: dict[str, Any] | None = None, callback: Callback | None = None,
                          disable: bool | None = None, generator: torch.Generator | None = None,
                          seed: int | None = None, denoise_final: DenoiseFinal = "mean") -> Tensor:
    """Euler–Maruyama on the reverse-time SDE ``dx = [f (x - c) - g^2 score] dt + g dw_bar``
    (Song et al. 2021, "Score-Based Generative Modeling through Stochastic Differential
    Equations", eq. 6; their ``EulerMaruyamaPredictor``): for ``dt = t_i - t_{i+1} > 0``,
    ``z <- z - drift dt + g sqrt(dt) n``. One NFE per step (plus one for ``"tweedie"``).
    """
    s = Sampling(denoiser, x, ts, cond, callback)
    grid, mode = _Grid(s), _final_mode(denoise_final)
    gen = make_generator(generator, seed, x.device)
    z = s.z
    for i in progress(s.steps, disable=disable):
        z0, eps = s.denoise(z, i)
        z = _em_step(s, grid, z, eps, i, gen, noise=not (i == s.steps - 1 and mode != "none"),
                     probability_flow=False)
        s.report(i, z, z0)
    return _tweedie_finish(s, grid, z, mode)


def _em_step(s: Sampling, grid: _Grid, z: Tensor, eps: Tensor, i: int,
             gen: torch.Generator | None, *, noise: bool, probability_flow: bool) -> Tensor:
    """One Euler–Maruyama step of the reverse SDE (or the probability-flow ODE) from
    ``ts[i]`` to ``ts[i+1]``."""
    t, dt, score = s.t(i), grid.dt(i), grid.score(eps, i)
    if probability_flow:
        return z - s.process.pf_ode(z, t, score) * dt
    drift, g = s.process.reverse_sde(z, t, score)
    z = z - drift * dt
    if noise:
        z = z + g * math.sqrt(dt) * _randn(z, gen)
    return z


# --------------------------------------------------------------------------- predictor-corrector
def _reverse_diffusion_step(grid: _Grid, z: Tensor, eps: Tensor, i: int,
                            gen: torch.Generator | None, *, noise: bool, probability_flow: bool,
                            discretization: str) -> Tensor:
    """Song et al.'s ``ReverseDiffusionPredictor``: with the forward discretisation
    ``z_{i+1} = z_i + f_i + G_i n``, step ``z <- z - f_i + G_i^2 score + G_i n`` (``G_i^2 / 2``
    and no noise for the probability flow)."""
    score = grid.score(eps, i)
    if discretization == "euler":  # Song et al.'s generic SDE.discretize (and SGMSE's OUVE)
        f_i, g2 = grid.f[i] * grid.dt(i), grid.g2[i] * grid.dt(i)
    else:  # the exact transition kernel q(z_t | z_s): VESDE/VPSDE.discretize in general form
        a_ts = grid.alpha[i] / grid.alpha[i + 1]
        f_i, g2 = a_ts - 1.0, grid.sigma[i] ** 2 - (a_ts * grid.sigma[i + 1]) ** 2
    if probability_flow:
        return z * (1.0 - f_i) + score * (0.5 * g2)
    z = z * (1.0 - f_i) + score * g2
    if noise:
        z = z + math.sqrt(max(g2, 0.0)) * _randn(z, gen)
    return z


def _correct(s: Sampling, grid: _Grid, z: Tensor, i: int, gen: torch.Generator | None,
             kind: str, snr: float) -> tuple[Tensor, Tensor]:
    """One Langevin corrector step at ``ts[i]``: ``z <- z + e score + sqrt(2 e) n``."""
    z0, eps = s.denoise(z, i)
    score = grid.score(eps, i)
    n = _randn(z, gen)
    if kind == "ald":
        # SGMSE+'s AnnealedLangevinDynamics: e = 2 (snr * std(t))^2, std = marginal std
        step = 2.0 * (snr * grid.std[i]) ** 2
        return z + step * score + math.sqrt(2.0 * step) * n, z0
    # Song et al.'s LangevinCorrector: e = 2 alpha_i (snr ||n|| / ||score||)^2 with
    # alpha_i = alpha_{t|s}^2 (= 1 - beta_i for VP, 1 for VE) and, as in their code, the
    # per-sample norms averaged over the batch (per-sample ratios explode where the score
    # vanishes, e.g. at the modes of low-dimensional data). 0-d tensors: no device sync.
    a_i = (grid.alpha[i] / grid.alpha[i + 1]) ** 2
    flat = z.shape[0], -1
    g_norm = torch.linalg.vector_norm(score.reshape(flat), dim=-1).mean()
    n_norm = torch.linalg.vector_norm(n.reshape(flat), dim=-1).mean()
    step = 2.0 * a_i * (snr * n_norm / g_norm.clamp_min(torch.finfo(g_norm.dtype).tiny)) ** 2
    return z + step * score + torch.sqrt(2.0 * step) * n, z0


@torch.no_grad()
def sample_pc(denoiser: Denoiser, x: Tensor, ts: Tensor, *, cond: dict[str, Any] | None = None,
              predictor: Literal["reverse_diffusion", "euler_maruyama", "none"] =
              "reverse_diffusion",
              corrector: Literal["ald", "langevin", "none"] = "ald", snr: float = 0.5,
              corrector_steps: int = 1, probability_flow: bool = False,
              discretization: Literal["euler", "exact"] = "euler",
              denoise_final: DenoiseFinal = "mean", generator: torch.Generator | None = None,
              seed: int | None = None, callback: Callback | None = None,
              disable: bool | None = None) -> Tensor:
    """Predictor–corrector sampling, Algorithms 1-3 and App. G of Song et al. (2021),
    "Score-Based Generative Modeling through Stochastic Differential Equations", with the
    annealed Langevin corrector of SGMSE+ (Richter et al. 2023, "Speech Enhancement and
    Dereverberation with Diffusion-based Generative Models").

    At each grid time ``t_i`` (as in both reference codes) the corrector runs
    ``corrector_steps`` times at ``t_i``, then the predictor moves to ``t_{i+1}``; NFE per step
    ``corrector_steps + 1`` (``corrector_steps`` with ``predictor="none"``).

    Args:
        predictor: ``"reverse_diffusion"`` (reverse the forward discretisation ``f_i, G_i``:
            ``z <- z - f_i + G_i^2 score + G_i n``), ``"euler_maruyama"`` (see
            :func:`sample_euler_maruyama`) or ``"none"`` (corrector only).
        corrector: ``"ald"`` (step ``e = 2 (snr sigma(t))^2``, SGMSE+'s
            ``AnnealedLangevinDynamics``; with snr 0.5 ... 0.16 for VE as in Song et al.'s
            code), ``"langevin"`` (``e = 2 alpha_i (snr ||n|| / ||score||)^2``, Song et al.'s
            Algorithm 4 / ``LangevinCorrector``; as in their code the norms are averaged over the
            batch, so a sample's path depends on its batch-mates) or ``"none"``.
        snr: the corrector's signal-to-noise ratio ``r``.
        probability_flow: predictors follow the probability-flow ODE (``g^2 / 2``, no noise).
        discretization: ``"euler"`` (``f_i = f(t) z dt``, ``G_i = sqrt(g^2 dt)``: Song et al.'s
            generic ``SDE.discretize``, used by SGMSE's OUVE) or ``"exact"``
            (``f_i = (alpha_{t|s} - 1) z``, ``G_i^2 = sigma_t^2 - alpha_{t|s}^2 sigma_s^2``:
            the exact transition kernel, which is Song et al.'s VE ``sigma_i^2 -
            sigma_{i-1}^2`` and VP ``beta_i`` discretisations) for the reverse-diffusion
            predictor.
        denoise_final: see the module docstring (applies to the last predictor step).
    """
    if predictor not in PREDICTORS:
        raise ValueError(f"unknown predictor {predictor!r}; expected one of {PREDICTORS}")
    if corrector not in CORRECTORS:
        raise ValueError(f"unknown corrector {corrector!r}; expected one of {CORRECTORS}")
    if discretization not in ("euler", "exact"):
        raise ValueError(f"discretization must be 'euler' or 'exact', got {discretization!r}")
    if corrector_steps < 0 or snr <= 0:
        raise ValueError("need corrector_steps >= 0 and snr > 0")
    s = Sampling(denoiser, x, ts, cond, callback)
    grid, mode = _Grid(s), _final_mode(denoise_final)
    gen = make_generator(generator, seed, x.device)
    n_corr = corrector_steps if corrector != "none" else 0
    z = s.z
    for i in progress(s.steps, disable=disable):
        z0 = None
        for _ in range(n_corr):
            z, z0 = _correct(s, grid, z, i, gen, corrector, snr)
        noise = not (i == s.steps - 1 and mode != "none")
        if predictor != "none":
            z0, eps = s.denoise(z, i)
            if predictor == "euler_maruyama":
                z = _em_step(s, grid, z, eps, i, gen, noise=noise,
                             probability_flow=probability_flow)
            else:
                z = _reverse_diffusion_step(grid, z, eps, i, gen, noise=noise,
                                            probability_flow=probability_flow,
                                            discretization=discretization)
        s.report(i, z, z0)
    return _tweedie_finish(s, grid, z, mode)
