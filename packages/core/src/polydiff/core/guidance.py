"""Guidance as denoiser transforms: each class wraps a
:class:`~polydiff.core.denoiser.Denoiser` and is one, with the same process, so every sampler
takes guided denoisers unchanged.

* :class:`ClassifierFreeGuidance`: Ho & Salimans (2022), with the guidance rescale of
  Lin et al. (2024);
* :class:`GradientGuidance`: the gradient of a differentiable per-sample function (classifier
  log-probability, property predictor, observation log-likelihood) added to the score
  (Dhariwal & Nichol 2021; Kollovieh et al. 2023);
* :class:`MeasurementGuidance`: diffusion posterior sampling for inverse problems (Chung et
  al. 2023).

Score corrections ``score' = score + delta`` are returned as the consistent pair
``eps' = eps - sigma delta`` and ``x0' = x0 + (sigma^2 / alpha) delta`` (Tweedie's formula),
so ``x_t = c + alpha (x0' - c) + sigma eps'`` still holds. Gradients are taken under
``torch.enable_grad()`` (samplers run under ``no_grad``; ``torch.inference_mode`` is not
supported). For complex data the score follows SGMSE's convention (``-z / sigma^2`` for the
density ``~ exp(-|z|^2 / sigma^2)``), which is half of PyTorch's gradient ``dL/da + i dL/db``;
the factor 1/2 is applied here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch
from torch import Tensor

from polydiff.core.denoiser import Denoiser
from polydiff.core.param import to_x0_eps
from polydiff.core.shapes import append_dims

__all__ = ["ClassifierFreeGuidance", "GradientGuidance", "MeasurementGuidance",
           "shift_score"]

Uncond = Mapping[str, Any] | Callable[[dict[str, Any]], Mapping[str, Any]]


def shift_score(denoiser: Denoiser, x0: Tensor, eps: Tensor, delta: Tensor, t: Tensor
                ) -> tuple[Tensor, Tensor]:
    """``(x0, eps)`` of the score ``-eps / sigma + delta``: ``eps - sigma delta`` and
    ``x0 + sigma^2 / alpha delta``."""
    a, s = denoiser.process.alpha(t), denoiser.process.sigma(t)
    return (x0 + append_dims(s * s / a, x0) * delta, eps - append_dims(s, eps) * delta)


# --------------------------------------------------------------------------- CFG
class ClassifierFreeGuidance(Denoiser):
    """Classifier-free guidance, Ho & Salimans (2022), "Classifier-Free Diffusion Guidance":
    ``eps = eps_u + w (eps_c - eps_u)`` and, with the same weights (the pair stays
    consistent), ``x0 = x0_u + w (x0_c - x0_u)``.

    Convention: diffusers' ``guidance_scale`` ``w``, so ``scale=1`` is the conditional model
    (returned exactly, one pass) and ``scale=0`` the unconditional one; Ho & Salimans' own
    ``w`` is ``scale - 1``.

    Args:
        denoiser: a conditional denoiser that also serves the unconditional condition.
        scale: ``w`` (a float or a per-sample ``(B,)`` tensor).
        uncond: the unconditional condition, either overrides merged into ``cond`` (e.g.
            ``{"label": null_label}``) or a callable ``cond -> uncond_cond``.
        rescale: ``phi`` of Lin et al. (2024), "Common Diffusion Noise Schedules and Sample
            Steps are Flawed", Sec. 3.4, eq. 15-16: ``v_cfg <- phi v_cfg std(v_c) / std(v_cfg)
            + (1 - phi) v_cfg`` (per-sample std); 0 disables it.
        rescale_on: ``"x0"`` (the guided data prediction) or ``"eps"`` (the guided noise, as
            diffusers' ``rescale_noise_cfg`` for epsilon models); the other member of the pair
            is recomputed from it.
        batched: evaluate both conditions in one call, concatenated along the batch (done
            when every condition entry is a ``(B, ...)`` tensor, a scalar next to one, or the
            same object on both sides; otherwise two calls are made).
    """

    def __init__(self, denoiser: Denoiser, scale: float | Tensor, *, uncond: Uncond,
                 rescale: float = 0.0, rescale_on: Literal["x0", "eps"] = "x0",
                 batched: bool = True):
        super().__init__(denoiser.process)
        if rescale_on not in ("x0", "eps"):
            raise ValueError(f"rescale_on must be 'x0' or 'eps', got {rescale_on!r}")
        if not 0.0 <= rescale <= 1.0:
            raise ValueError(f"rescale must lie in [0, 1], got {rescale}")
        self.denoiser, self.scale, self.uncond = denoiser, scale, uncond
        self.rescale, self.rescale_on, self.batched = float(rescale), rescale_on, batched

    @classmethod
    def from_weight(cls, denoiser: Denoiser, weight: float | Tensor, **kwargs: Any
                    ) -> ClassifierFreeGuidance:
        """Ho & Salimans' (2022, eq. 6) parameterization ``eps = (1 + w) eps_c - w eps_u``:
        guidance weight ``w = 0`` is the conditional model (``scale = 1 + w``)."""
        return cls(denoiser, 1.0 + weight, **kwargs)

    def center(self, cond: dict[str, Any]) -> Tensor | None:
        return self.denoiser.center(cond)

    def uncond_cond(self, cond: Mapping[str, Any]) -> dict[str, Any]:
        """The unconditional condition for ``cond``."""
        if callable(self.uncond):
            return dict(self.uncond(dict(cond)))
        return {**cond, **self.uncond}

    def x0_eps(self, x: Tensor, t: Tensor, **cond: Any) -> tuple[Tensor, Tensor]:
        w = self.scale
        ucond = self.uncond_cond(cond)
        if not torch.is_tensor(w):
            if w == 1.0:
                return self.denoiser.x0_eps(x, t, **cond)
            if w == 0.0 and self.rescale == 0.0:
                return self.denoiser.x0_eps(x, t, **ucond)
        (x0c, ec), (x0u, eu) = self._both(x, t, cond, ucond)
        wx = append_dims(w, x) if torch.is_tensor(w) else float(w)
        x0, eps = x0u + wx * (x0c - x0u), eu + wx * (ec - eu)
        if self.rescale > 0.0:
            y = self.center(cond)
            if self.rescale_on == "x0":
                x0 = _rescale(x0, x0c, self.rescale)
                eps = to_x0_eps(x0, "sample", x, t, self.process, y)[1]
            else:
                eps = _rescale(eps, ec, self.rescale)
                x0 = to_x0_eps(eps, "epsilon", x, t, self.process, y)[0]
        return x0, eps

    def _both(self, x: Tensor, t: Tensor, cond: dict[str, Any], ucond: dict[str, Any]
              ) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
        merged = _concat_conds(cond, ucond, x.shape[0]) if self.batched else None
        if merged is None:
            return self.denoiser.x0_eps(x, t, **cond), self.denoiser.x0_eps(x, t, **ucond)
        x0, eps = self.denoiser.x0_eps(torch.cat([x, x]), torch.cat([t, t]), **merged)
        x0c, x0u = x0.chunk(2)
        ec, eu = eps.chunk(2)
        return (x0c, ec), (x0u, eu)


def _rescale(v: Tensor, ref: Tensor, phi: float) -> Tensor:
    """Lin et al. (2024) eq. 15-16 with per-sample standard deviations."""
    if v[0].numel() < 2:
        return v
    flat = v.shape[0], -1
    sd_ref = ref.reshape(flat).std(dim=1)
    sd_v = v.reshape(flat).std(dim=1).clamp_min(torch.finfo(sd_ref.dtype).tiny)
    return v * append_dims(phi * sd_ref / sd_v + (1.0 - phi), v)


def _is_batch(v: Any, b: int) -> bool:
    return torch.is_tensor(v) and v.ndim >= 1 and v.shape[0] == b


def _is_scalar(v: Any) -> bool:
    return isinstance(v, int | float | bool) or (torch.is_tensor(v) and v.ndim == 0)


def _concat_conds(cond: Mapping[str, Any], ucond: Mapping[str, Any], b: int
                  ) -> dict[str, Any] | None:
    """One condition for the doubled batch ``[x, x]``, or ``None`` if it cannot be formed."""
    if set(cond) != set(ucond):
        return None
    out: dict[str, Any] = {}
    for k, a in cond.items():
        u = ucond[k]
        if _is_batch(a, b) and _is_scalar(u):
            u = torch.as_tensor(u, dtype=a.dtype, device=a.device).expand(a.shape)
        elif _is_batch(u, b) and _is_scalar(a):
            a = torch.as_tensor(a, dtype=u.dtype, device=u.device).expand(u.shape)
        if _is_batch(a, b) and _is_batch(u, b):
            if a.shape[1:] != u.shape[1:]:
                return None
            out[k] = torch.cat([a, u.to(dtype=a.dtype, device=a.device)])
        elif a is u or (not torch.is_tensor(a) and not torch.is_tensor(u) and _same(a, u)):
            out[k] = a
        else:
            return None
    return out


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - objects whose == is not a plain truth value
        return False


# --------------------------------------------------------------------------- gradients
def _value_and_grad(denoiser: Denoiser, x: Tensor, t: Tensor, cond: dict[str, Any],
                    fn: Callable[[Tensor], Tensor], on: str
                    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(x0, eps, v, grad_{x_t} sum(v))`` with ``v = fn(x0_hat(x_t))`` (``on="x0"``) or
    ``fn(x_t)`` (``on="xt"``), the gradient in the score convention (halved for complex)."""
    keep = torch.is_grad_enabled() and x.requires_grad  # e.g. nested inside another guidance
    with torch.enable_grad():
        xin = x if keep else x.detach().requires_grad_(True)
        if on == "x0":
            x0, eps = denoiser.x0_eps(xin, t, **cond)
            v = fn(x0)
        else:
            x0, eps = denoiser.x0_eps(x, t, **cond)
            v = fn(xin)
        if v.shape != (x.shape[0],):
            raise ValueError(f"the guidance function must return one real value per sample, "
                             f"shape ({x.shape[0]},); got {tuple(v.shape)}")
        (grad,) = torch.autograd.grad(v.sum(), xin, create_graph=keep)
    if x.is_complex():
        grad = 0.5 * grad
    if not keep:
        x0, eps, v = x0.detach(), eps.detach(), v.detach()
    return x0, eps, v, grad


class GradientGuidance(Denoiser):
    """Gradient guidance: ``score' = score + scale grad_{x_t} fn``.

    Classifier guidance, Dhariwal & Nichol (2021), "Diffusion Models Beat GANs on Image
    Synthesis", Algorithm 1 / eq. 10 (``fn = log p_phi(y | x_t)``, ``on="xt"``), and
    self-guidance, Kollovieh et al. (2023), "Predict, Refine, Synthesize: Self-Guiding
    Diffusion Models for Probabilistic Time Series Forecasting" (TSDiff), eq. 8-9 (``fn`` an
    observation log-likelihood of the denoised estimate, ``on="x0"``, differentiating through
    the denoiser). With a likelihood ``fn = log p(obs | x_t)`` and ``scale=1`` the guided score
    is exactly that of the product density ``p_t(x) p(obs | x)`` (Bayes' rule).

    Args:
        denoiser: the base denoiser.
        fn: ``fn(x, **cond) -> (B,)`` (``fn(x, t, **cond)`` with ``with_time=True``), a
            differentiable real value per sample; ``x`` is ``x0_hat(x_t)`` or ``x_t``.
        scale: the guidance strength (float or per-sample ``(B,)`` tensor).
        on: ``"x0"`` (evaluate ``fn`` on the denoised estimate) or ``"xt"``.
        with_time: also pass the per-sample time ``t`` (for noise-aware classifiers).
    """

    def __init__(self, denoiser: Denoiser, fn: Callable[..., Tensor],
                 scale: float | Tensor = 1.0, *, on: Literal["x0", "xt"] = "x0",
                 with_time: bool = False):
        super().__init__(denoiser.process)
        if on not in ("x0", "xt"):
            raise ValueError(f"on must be 'x0' or 'xt', got {on!r}")
        self.denoiser, self.fn, self.scale, self.on = denoiser, fn, scale, on
        self.with_time = with_time

    def center(self, cond: dict[str, Any]) -> Tensor | None:
        return self.denoiser.center(cond)

    def x0_eps(self, x: Tensor, t: Tensor, **cond: Any) -> tuple[Tensor, Tensor]:
        w = self.scale
        if not torch.is_tensor(w) and w == 0.0:
            return self.denoiser.x0_eps(x, t, **cond)

        def f(v: Tensor) -> Tensor:
            return self.fn(v, t, **cond) if self.with_time else self.fn(v, **cond)

        x0, eps, _, grad = _value_and_grad(self.denoiser, x, t, cond, f, self.on)
        wx = append_dims(w, grad) if torch.is_tensor(w) else float(w)
        return shift_score(self, x0, eps, wx * grad, t)


class MeasurementGuidance(Denoiser):
    """Diffusion posterior sampling (DPS), Chung et al. (2023), "Diffusion Posterior Sampling
    for General Noisy Inverse Problems", Algorithm 1, as a score correction for
    ``y = A(x0) + noise``.

    With ``r = y - A(x0_hat(x_t))`` (the gradient flows through the denoiser):

    * ``norm=True``: ``delta = -(scale / ||r||) grad_{x_t} ||r||^2``, Algorithm 1's step size
      ``zeta_i = zeta' / ||y - A(x0_hat)||`` (the official code's ``grad ||r||`` step, up to a
      factor 2), per sample;
    * ``norm=False``: ``delta = scale grad_{x_t} log N(y; A(x0_hat), sigma_y^2 I) =
      -scale / (2 sigma_y^2) grad_{x_t} ||r||^2``, the approximate posterior score of their
      eq. 16 (Gaussian noise) for ``scale=1``.

    DPS applies the correction to ``x`` after the sampler's step; here it enters the score, so
    its effective step is the sampler's step size times ``scale``.

    Args:
        denoiser: the base denoiser (the prior).
        operator: the differentiable forward operator ``A(x0) -> (B, ...)``.
        y_meas: the measurement ``y``, broadcastable against ``A(x0)``.
        scale: ``zeta'`` (float or per-sample ``(B,)`` tensor).
        norm: normalise by the residual norm (see above).
        sigma_y: measurement noise std for ``norm=False``.
    """

    def __init__(self, denoiser: Denoiser, operator: Callable[[Tensor], Tensor], y_meas: Tensor,
                 scale: float | Tensor = 1.0, *, norm: bool = True, sigma_y: float = 1.0):
        super().__init__(denoiser.process)
        if sigma_y <= 0:
            raise ValueError(f"sigma_y must be positive, got {sigma_y}")
        self.denoiser, self.operator, self.y_meas = denoiser, operator, y_meas
        self.scale, self.norm, self.sigma_y = scale, norm, float(sigma_y)

    def center(self, cond: dict[str, Any]) -> Tensor | None:
        return self.denoiser.center(cond)

    def residual_sq(self, x0: Tensor) -> Tensor:
        """``||y - A(x0)||^2`` per sample, ``(B,)``."""
        r = self.y_meas - self.operator(x0)
        r = r.abs() if r.is_complex() else r
        return (r * r).reshape(x0.shape[0], -1).sum(dim=1)

    def x0_eps(self, x: Tensor, t: Tensor, **cond: Any) -> tuple[Tensor, Tensor]:
        w = self.scale
        if not torch.is_tensor(w) and w == 0.0:
            return self.denoiser.x0_eps(x, t, **cond)
        x0, eps, rsq, grad = _value_and_grad(self.denoiser, x, t, cond, self.residual_sq, "x0")
        if self.norm:
            coef = -w / rsq.sqrt().clamp_min(torch.finfo(rsq.dtype).tiny)
        else:
            coef = -w / (2.0 * self.sigma_y**2) * torch.ones_like(rsq)
        return shift_score(self, x0, eps, append_dims(coef, grad) * grad, t)
