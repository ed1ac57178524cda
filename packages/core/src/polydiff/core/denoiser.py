"""The denoiser protocol: samplers see a denoiser, never a raw network.

A :class:`Denoiser` knows its forward process and answers ``x0_eps(x, t, **cond)`` with the
pair (clean-data estimate, noise estimate) at per-sample time ``t`` (shape ``(B,)``, float64
schedule arithmetic). Every other parameterization (eps, x0, v, score, velocity) is derived
from that pair by :mod:`polydiff.core.param`. :class:`ModelDenoiser` wraps a network once,
declaring what it predicts; guidance methods are denoiser transforms that wrap a denoiser.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from polydiff.core.param import PREDICTION_TYPES, edm_precond_coefficients, from_x0_eps, to_x0_eps
from polydiff.core.processes.gaussian import GaussianProcess
from polydiff.core.shapes import append_dims

__all__ = ["Denoiser", "ModelDenoiser", "EDMDenoiser"]


class Denoiser(nn.Module):
    """Base class: subclasses implement :meth:`x0_eps`."""

    def __init__(self, process: GaussianProcess):
        super().__init__()
        self.process = process

    def x0_eps(self, x: Tensor, t: Tensor, **cond: Any) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    @staticmethod
    def from_x0(fn: Callable[..., Tensor], process: GaussianProcess) -> ModelDenoiser:
        """A denoiser from a plain function ``fn(x, t, **cond) -> x0`` (the clean-data
        estimate at per-sample process time ``t``, shape ``(B,)``, in ``x``'s dtype); the
        noise estimate is derived from it. Shorthand for
        ``ModelDenoiser(fn, process, "sample")``."""
        return ModelDenoiser(fn, process, "sample")

    @staticmethod
    def from_eps(fn: Callable[..., Tensor], process: GaussianProcess) -> ModelDenoiser:
        """A denoiser from a plain function ``fn(x, t, **cond) -> eps`` (the noise estimate
        at per-sample process time ``t``); shorthand for ``ModelDenoiser(fn, process,
        "epsilon")``."""
        return ModelDenoiser(fn, process, "epsilon")

    def center(self, cond: dict[str, Any]) -> Tensor | None:
        """The process centre (the condition ``y`` of mean-reverting processes) or ``None``."""
        return self.process.center(cond)

    def predict(self, x: Tensor, t: Tensor, kind: str = "sample", **cond: Any) -> Tensor:
        """The prediction of type ``kind`` (see :data:`~polydiff.core.param.PREDICTION_TYPES`)."""
        x0, eps = self.x0_eps(x, t, **cond)
        return from_x0_eps(x0, eps, kind, x, t, self.process, self.center(cond))

    def forward(self, x: Tensor, t: Tensor, **cond: Any) -> Tensor:
        return self.x0_eps(x, t, **cond)[0]

    def x0(self, x: Tensor, t: Tensor, **cond: Any) -> Tensor:
        return self.x0_eps(x, t, **cond)[0]

    def eps(self, x: Tensor, t: Tensor, **cond: Any) -> Tensor:
        return self.x0_eps(x, t, **cond)[1]

    def score(self, x: Tensor, t: Tensor, **cond: Any) -> Tensor:
        return self.predict(x, t, "score", **cond)

    def velocity(self, x: Tensor, t: Tensor, **cond: Any) -> Tensor:
        """Probability-flow ODE velocity ``dx/dt``."""
        return self.predict(x, t, "flow", **cond)


class ModelDenoiser(Denoiser):
    """Wrap a network ``model(x, time_input(t), **cond)`` predicting ``prediction_type``.

    Args:
        model: the network.
        process: the forward process it was trained with.
        prediction_type: ``"epsilon"``, ``"sample"``, ``"v_prediction"``, ``"score"`` or
            ``"flow"``.
        time_input: maps process time ``t`` (float64, ``(B,)``) to what the network takes
            (default: ``t`` itself). E.g. ``process.model_timestep`` for discrete-time
            networks, ``lambda t: 999 * t`` for DDPM-style integer inputs.
        x0_clamp: clamp the x0 estimate to ``[-x0_clamp, x0_clamp]`` (images in [-1, 1]).
    """

    def __init__(self, model: Callable[..., Tensor], process: GaussianProcess,
                 prediction_type: str = "epsilon",
                 time_input: Callable[[Tensor], Tensor] | None = None,
                 x0_clamp: float | None = None):
        super().__init__(process)
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"unknown prediction_type {prediction_type!r}; "
                             f"expected one of {PREDICTION_TYPES}")
        self.model = model
        self.prediction_type = prediction_type
        self.time_input = time_input
        self.x0_clamp = x0_clamp

    def x0_eps(self, x: Tensor, t: Tensor, **cond: Any) -> tuple[Tensor, Tensor]:
        t_in = self.time_input(t) if self.time_input is not None else t
        dtype = x.real.dtype if x.is_complex() else x.dtype
        out = self.model(x, t_in.to(dtype), **cond)
        y = self.center(cond)
        x0, eps = to_x0_eps(out, self.prediction_type, x, t, self.process, y)
        if self.x0_clamp is not None:
            x0 = x0.clamp(-self.x0_clamp, self.x0_clamp)
            eps = to_x0_eps(x0, "sample", x, t, self.process, y)[1]
        return x0, eps


class EDMDenoiser(Denoiser):
    """EDM preconditioning (Karras et al. 2022, Sec. 5 and Table 1) around a raw network ``F``:
    ``D(x) = c_skip x~ + c_out F(c_in x~, c_noise)`` on the scaled variable ``x~ = (x - c) /
    alpha`` with noise level ``sigma~ = sigma / alpha``, so it serves any Gaussian process."""

    def __init__(self, model: Callable[..., Tensor], process: GaussianProcess,
                 sigma_data: float = 0.5):
        super().__init__(process)
        self.model = model
        self.sigma_data = sigma_data

    def x0_eps(self, x: Tensor, t: Tensor, **cond: Any) -> tuple[Tensor, Tensor]:
        y = self.center(cond)
        z = x if y is None else x - y
        xt = z / append_dims(self.process.alpha(t), x)
        c = edm_precond_coefficients(self.process.sigma_tilde(t), self.sigma_data)
        dtype = x.real.dtype if x.is_complex() else x.dtype
        f = self.model(append_dims(c["c_in"], x) * xt, c["c_noise"].to(dtype), **cond)
        z0 = append_dims(c["c_skip"], x) * xt + append_dims(c["c_out"], x) * f
        x0 = z0 if y is None else z0 + y
        return x0, to_x0_eps(x0, "sample", x, t, self.process, y)[1]

    @staticmethod
    def loss_weight(sigma: Tensor, sigma_data: float = 0.5) -> Tensor:
        """EDM's loss weight ``lambda(sigma) = (s^2 + sd^2) / (s sd)^2``."""
        return (sigma * sigma + sigma_data**2) / (sigma * sigma_data) ** 2
