"""Parameterizations and every conversion between them, in one place.

A network predicts one of (diffusers' ``prediction_type`` names where they exist):

* ``"epsilon"``: the noise ``eps`` (Ho et al. 2020);
* ``"sample"``: the clean data ``x0`` (Karras et al. 2022 call the x0-predictor ``D``);
* ``"v_prediction"``: ``v = alpha eps - sigma x0`` (Salimans & Ho 2022, "Progressive
  Distillation", Sec. 4 and App. D; for non-VP processes the same linear map is used);
* ``"score"``: ``grad log p_t(x) = -eps / sigma`` (Song et al. 2021);
* ``"flow"``: the velocity ``u = alpha' x0 + sigma' eps`` (flow matching / rectified flow).

All conversions go through the pair ``(x0, eps)`` given ``x_t = c + alpha (x0 - c) + sigma
eps``; ``t`` is per sample, shape ``(B,)``. EDM preconditioning (Karras et al. 2022, Table 1)
lives here too.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from polydiff.core.processes.gaussian import GaussianProcess
from polydiff.core.shapes import append_dims, compact_time

__all__ = [
    "PREDICTION_TYPES", "PredictionType", "to_x0_eps", "from_x0_eps", "convert",
    "edm_precond_coefficients",
]

PredictionType = Literal["epsilon", "sample", "v_prediction", "score", "flow"]
PREDICTION_TYPES: tuple[str, ...] = ("epsilon", "sample", "v_prediction", "score", "flow")


def _check(kind: str) -> None:
    if kind not in PREDICTION_TYPES:
        raise ValueError(f"unknown prediction type {kind!r}; expected one of {PREDICTION_TYPES}")


def to_x0_eps(pred: Tensor, kind: str, x: Tensor, t: Tensor, process: GaussianProcess,
              y: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Recover ``(x0, eps)`` from a prediction of type ``kind`` at ``(x_t, t)``."""
    _check(kind)
    z = x if y is None else x - y
    t = compact_time(t)
    a, s = process.alpha_sigma(t)
    a, s = append_dims(a, x), append_dims(s, x)
    if kind == "epsilon":
        eps = pred
        z0 = (z - s * eps) / a
    elif kind == "sample":
        z0 = pred if y is None else pred - y
        eps = (z - a * z0) / s
    elif kind == "v_prediction":
        n = a * a + s * s
        z0 = (a * z - s * pred) / n
        eps = (s * z + a * pred) / n
    elif kind == "score":
        eps = -s * pred
        z0 = (z - s * eps) / a
    else:  # flow
        da, ds = append_dims(process.d_alpha(t), x), append_dims(process.d_sigma(t), x)
        det = a * ds - s * da
        z0 = (ds * z - s * pred) / det
        eps = (a * pred - da * z) / det
    return (z0 if y is None else z0 + y), eps


def from_x0_eps(x0: Tensor, eps: Tensor, kind: str, x: Tensor, t: Tensor,
                process: GaussianProcess, y: Tensor | None = None) -> Tensor:
    """Express ``(x0, eps)`` at ``(x_t, t)`` as a prediction of type ``kind``."""
    _check(kind)
    if kind == "epsilon":
        return eps
    if kind == "sample":
        return x0
    t = compact_time(t)
    z0 = x0 if y is None else x0 - y
    if kind == "v_prediction":
        return append_dims(process.alpha(t), x) * eps - append_dims(process.sigma(t), x) * z0
    if kind == "score":
        return -eps / append_dims(process.sigma(t), x)
    return append_dims(process.d_alpha(t), x) * z0 + append_dims(process.d_sigma(t), x) * eps


def convert(pred: Tensor, src: str, dst: str, x: Tensor, t: Tensor, process: GaussianProcess,
            y: Tensor | None = None) -> Tensor:
    """Convert a prediction from type ``src`` to type ``dst``."""
    if src == dst:
        _check(src)
        return pred
    x0, eps = to_x0_eps(pred, src, x, t, process, y)
    return from_x0_eps(x0, eps, dst, x, t, process, y)


def edm_precond_coefficients(sigma: Tensor, sigma_data: float = 0.5) -> dict[str, Tensor]:
    """EDM preconditioning (Karras et al. 2022, Table 1, "Ours"):
    ``D(x) = c_skip x + c_out F(c_in x, c_noise)`` with
    ``c_skip = sd^2 / (s^2 + sd^2)``, ``c_out = s sd / sqrt(s^2 + sd^2)``,
    ``c_in = 1 / sqrt(s^2 + sd^2)``, ``c_noise = log(s) / 4``."""
    s2, sd2 = sigma * sigma, sigma_data * sigma_data
    root = torch.sqrt(s2 + sd2)
    return {
        "c_skip": sd2 / (s2 + sd2),
        "c_out": sigma * sigma_data / root,
        "c_in": 1.0 / root,
        "c_noise": torch.log(sigma) / 4.0,
    }
