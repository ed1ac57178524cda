"""First-order and EDM samplers of the probability-flow ODE, written once for every Gaussian
process: DDIM (with its ``eta`` family up to DDPM ancestral sampling), Euler and Heun.

Every Gaussian process ``z_t = alpha z0 + sigma eps`` (``z = x - c``) has the same
probability-flow ODE in the scaled variables ``x~ = z / alpha``, ``sigma~ = sigma / alpha``
(Song et al. 2021, "Denoising Diffusion Implicit Models", eq. 14; Karras et al. 2022,
"Elucidating the Design Space of Diffusion-Based Generative Models", eq. 4 with
``s(t) = alpha``):
``dx~ / dsigma~ = eps_hat = (x~ - D(x~; sigma~)) / sigma~``. Euler on it *is* DDIM with
``eta = 0`` (DDIM paper Sec. 4.3) and the first-order exponential integrator in
``lambda = log(alpha / sigma)`` (DPM-Solver-1, Lu et al. 2022); the three coincide in exact
arithmetic on any grid and are written here in their own papers' forms.

All schedule coefficients are computed once per call in float64 (Python floats) before the
loop, so a step costs one denoiser call (two for Heun) and a few fused tensor operations,
with no host-device synchronisation. The DDIM update is
:class:`~polydiff.core.samplers.stepper.DDIMStepper` (shared with the diffusers scheduler).
Samplers integrate the centred variable, return the sample in ``x``'s dtype, and take the
surface of :mod:`polydiff.core.samplers._common`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from polydiff.core.denoiser import Denoiser
from polydiff.core.samplers._common import Callback, Sampling, make_generator
from polydiff.core.samplers.stepper import DDIMStepper, half_log_snr, run_stepper
from polydiff.core.samplers.stepper import randn_like as _randn
from polydiff.core.utils import progress

__all__ = ["sample_ddim", "sample_euler", "sample_heun", "half_log_snr", "ddim_coefficients",
           "ddim_stepper"]


def _check_grid(sigmas: Tensor) -> None:
    if not bool((sigmas[:-1] > 0).all()):
        raise ValueError("ODE samplers need sigma > 0 at every grid time but the last")


# --------------------------------------------------------------------------- DDIM
def ddim_coefficients(alphas: list[float], sigmas: list[float], lambdas: list[float],
                      eta: float) -> list[tuple[float, float, float]]:
    """Per-step ``(c_0, c_eps, c_noise)`` of ``z_next = c_0 z0 + c_eps eps + c_noise n``.

    The generalised DDIM posterior (Song et al. 2021, eq. 12) for any ``(alpha, sigma)``:
    ``sigma_eta^2 = eta^2 sigma_next^2 (1 - exp(-2 h))``, ``h = lambda_next - lambda``, since
    ``exp(-h) = alpha sigma_next / (alpha_next sigma)`` makes ``sigma_next^2 (1 - e^{-2h})``
    the variance of ``q(z_next | z, z0)``; on a VP schedule this is DDIM's
    ``eta^2 (1 - a_prev) / (1 - a) (1 - a / a_prev)`` with ``a = alpha^2``.
    """
    out = []
    for i in range(len(alphas) - 1):
        a_n, s_n = alphas[i + 1], sigmas[i + 1]
        if s_n == 0.0:
            out.append((a_n, 0.0, 0.0))
            continue
        one_m = -math.expm1(-2.0 * (lambdas[i + 1] - lambdas[i]))  # 1 - exp(-2h)
        c_noise = eta * s_n * math.sqrt(max(one_m, 0.0))
        c_eps = s_n * math.sqrt(max(1.0 - eta * eta * one_m, 0.0))
        out.append((a_n, c_eps, c_noise))
    return out


def ddim_stepper(alphas: Tensor, sigmas: Tensor, eta: float = 0.0) -> DDIMStepper:
    """The DDIM update (:func:`sample_ddim`) on a grid with float64 ``alphas``/``sigmas``,
    one step at a time (:class:`~polydiff.core.samplers.stepper.DDIMStepper`)."""
    if eta < 0:
        raise ValueError(f"eta must be non-negative, got {eta}")
    _check_grid(sigmas)
    return DDIMStepper(ddim_coefficients(alphas.tolist(), sigmas.tolist(),
                                         half_log_snr(alphas, sigmas), eta))


@torch.no_grad()
def sample_ddim(denoiser: Denoiser, x: Tensor, ts: Tensor, *,
                cond: dict[str, Any] | None = None, eta: float = 0.0,
                generator: torch.Generator | None = None, seed: int | None = None,
                callback: Callback | None = None, disable: bool | None = None) -> Tensor:
    """DDIM, eq. 12 of Song, Meng & Ermon (2021), "Denoising Diffusion Implicit Models",
    generalised to any Gaussian process through ``(alpha, sigma)``.

    ``z_next = alpha_next z0 + sqrt(sigma_next^2 - sigma_eta^2) eps + sigma_eta n`` with
    ``sigma_eta = eta sigma_next sqrt(1 - exp(-2 h))`` (see :func:`ddim_coefficients`).
    ``eta = 0`` is deterministic and equals DPM-Solver-1 / Euler in ``(x~, sigma~)``;
    ``eta = 1`` is DDPM ancestral sampling (the posterior ``q(z_next | z, z0)``, Ho et al.
    2020); ``0 <= eta <= 1`` interpolates. A step to ``sigma = 0`` returns ``alpha z0``.
    One NFE per step; matches diffusers' ``DDIMScheduler`` on the same timesteps.
    """
    s = Sampling(denoiser, x, ts, cond, callback)
    stepper = ddim_stepper(s.alphas, s.sigmas, eta)
    gen = make_generator(generator, seed, x.device) if eta > 0 else None
    return run_stepper(s, stepper, disable, gen).to(x.dtype)


# --------------------------------------------------------------------------- Karras (EDM)
def _karras(denoiser: Denoiser, x: Tensor, ts: Tensor, cond: dict[str, Any] | None,
            callback: Callback | None, disable: bool | None, *, second_order: bool,
            s_churn: float, s_tmin: float, s_tmax: float, s_noise: float,
            generator: torch.Generator | None, seed: int | None) -> Tensor:
    """Karras et al. (2022) Algorithm 2 in the scaled variables, written on ``z``.

    With ``a`` = alpha and ``s~`` = sigma~ at the grid, ``a^`` and ``s^`` at the churned
    time ``t^`` (where ``s~(t^) = s~_i (1 + gamma_i)``):
    ``z^ = (a^/a_i) z + a^ sqrt(s^2 - s~_i^2) S_noise n`` (line 5-6, ``x~^ = z^/a^``),
    ``z_next = (a_next/a^) z^ + a_next (s~_next - s^) d`` (line 7-8, ``d = eps``), and the
    trapezoidal correction with ``(d + d')/2`` when ``s~_next > 0`` (lines 9-11).
    """
    s = Sampling(denoiser, x, ts, cond, callback)
    _check_grid(s.sigmas)
    n = s.steps
    al_l = s.alphas.tolist()
    st_l = [sg / a for a, sg in zip(al_l, s.sigmas.tolist())]
    churn = min(s_churn / n, math.sqrt(2.0) - 1.0) if s_churn > 0 else 0.0
    gammas = [churn if (churn > 0 and s_tmin <= st_l[i] <= s_tmax) else 0.0 for i in range(n)]
    a_hat, s_hat, t_hat, gen = al_l, st_l, s.ts, None
    if any(g > 0 for g in gammas):
        g = torch.tensor(gammas, dtype=torch.float64)
        st0 = torch.tensor(st_l[:-1], dtype=torch.float64)
        th = s.process.t_from_sigma_tilde(st0 * (1.0 + g)).to(torch.float64)
        th = torch.where(g > 0, th, s.ts[:-1].cpu().double())
        # re-read alpha and sigma~ at the churned time: robust where the inverse saturates
        a_hat = s.process.alpha(th).tolist()
        s_hat = s.process.sigma_tilde(th).tolist()
        t_hat = th.to(device=s.ts.device, dtype=s.ts.dtype)
        gen = make_generator(generator, seed, x.device)
    z = s.z
    for i in progress(n, disable=disable):
        a_i, a_n, s_i, s_n = al_l[i], al_l[i + 1], st_l[i], st_l[i + 1]
        ah, sh = (a_hat[i], s_hat[i]) if gammas[i] > 0 else (a_i, s_i)
        if gammas[i] > 0 and sh > s_i:
            std = ah * math.sqrt(sh * sh - s_i * s_i) * s_noise
            z = torch.add(z * (ah / a_i), _randn(z, gen), alpha=std)
            z0, eps = s.denoise_at(z, t_hat[i].expand(s.batch))
        else:
            ah, sh = a_i, s_i
            z0, eps = s.denoise(z, i)
        if s_n == 0.0:  # the Euler step to sigma = 0 lands on the denoised estimate
            z_next = z0 * a_n
        else:
            c_z, c_d = a_n / ah, a_n * (s_n - sh)
            z_next = torch.add(z * c_z, eps, alpha=c_d)
            if second_order:
                _, eps2 = s.denoise(z_next, i + 1)
                z_next = torch.add(z * c_z, eps + eps2, alpha=0.5 * c_d)
        z = z_next
        s.report(i, z, z0)
    return s.finish(z).to(x.dtype)


@torch.no_grad()
def sample_euler(denoiser: Denoiser, x: Tensor, ts: Tensor, *,
                 cond: dict[str, Any] | None = None, callback: Callback | None = None,
                 disable: bool | None = None, s_churn: float = 0.0, s_tmin: float = 0.0,
                 s_tmax: float = float("inf"), s_noise: float = 1.0,
                 generator: torch.Generator | None = None, seed: int | None = None) -> Tensor:
    """Euler on the probability-flow ODE in ``(x~ = z/alpha, sigma~ = sigma/alpha)``:
    Karras et al. (2022) Algorithm 2 without the second-order correction (Algorithm 1 with
    Euler steps when ``s_churn = 0``).

    ``x~_next = x~ + (sigma~_next - sigma~) d``, ``d = (x~ - D) / sigma~ = eps``; on any
    process this is the EDM Euler sampler and diffusers' ``EulerDiscreteScheduler``, and in
    exact arithmetic it equals DDIM with ``eta = 0`` (Song et al. 2021, Sec. 4.3).
    ``s_churn``/``s_tmin``/``s_tmax``/``s_noise`` as in :func:`sample_heun`. One NFE per step.
    """
    return _karras(denoiser, x, ts, cond, callback, disable, second_order=False,
                   s_churn=s_churn, s_tmin=s_tmin, s_tmax=s_tmax, s_noise=s_noise,
                   generator=generator, seed=seed)


@torch.no_grad()
def sample_heun(denoiser: Denoiser, x: Tensor, ts: Tensor, *,
                cond: dict[str, Any] | None = None, callback: Callback | None = None,
                disable: bool | None = None, s_churn: float = 0.0, s_tmin: float = 0.0,
                s_tmax: float = float("inf"), s_noise: float = 1.0,
                generator: torch.Generator | None = None, seed: int | None = None) -> Tensor:
    """Implements Algorithm 2 of Karras et al. (2022), "Elucidating the Design Space of
    Diffusion-Based Generative Models" (Heun's second-order method with stochastic churn),
    in the scaled variables of any Gaussian process; ``s_churn = 0`` is Algorithm 1.

    ``gamma_i = min(S_churn / N, sqrt(2) - 1)`` where ``S_tmin <= sigma~_i <= S_tmax`` (noise
    levels in ``sigma~ = sigma/alpha`` units, EDM's ``sigma``), else 0; the step to
    ``sigma = 0`` is an Euler step. Two NFE per step except one on a final step to
    ``sigma = 0``. Deterministic version: diffusers' ``HeunDiscreteScheduler``.
    """
    return _karras(denoiser, x, ts, cond, callback, disable, second_order=True,
                   s_churn=s_churn, s_tmin=s_tmin, s_tmax=s_tmax, s_noise=s_noise,
                   generator=generator, seed=seed)
