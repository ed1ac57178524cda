"""TSDiff: an unconditional diffusion model over time-series windows.

Kollovieh, Ansari, Bohlke-Schneider, Zschiegner, Wang & Wang (2023), "Predict, Refine,
Synthesize: Self-Guiding Diffusion Models for Probabilistic Time Series Forecasting"
(NeurIPS 2023), Sec. 3 and App. B. One DDPM (Ho et al. 2020; 100 steps, linear betas from
``1e-4`` to ``0.1``, epsilon prediction) is trained on windows of length ``context_length +
prediction_length`` of mean-scaled series; forecasting, refinement and synthesis are done at
inference by guidance (``guidance.py``, ``refine.py``, ``synth.py``).

**Input.** A window ``x`` of shape ``(B, 1, L)``: the target divided by its *mean scale*
``mean |x|`` over the observed context values (:meth:`TSDiffModel.scale`). Lag features (the
series shifted by seasonal lags, hourly ``24 * [1..7, 14, 21, 28]``, daily ``30 * [1..12]``;
:func:`lags_for_freq`) are extra input channels. In the paper they are part of the diffused
variable; here they are a *clean condition* ``lags`` of shape ``(B, 2 * len(lags), L)``:
the scaled lag values followed by their observed indicators. A lag value is missing where
the series has no point (before its start, a NaN, or a future value not yet known): the
value channel is 0 and the indicator 0. So a window needs no extra history: with
``max(lags)`` past points before it every lag is available; with fewer, the earliest lag
values are simply marked missing (the training sampler draws such windows near the start of
every series, so the network learns that case). Lags ``>= prediction_length`` never reach into
the forecast horizon; shorter lags there are marked missing too.

**Backbone** (:class:`TSDiffBackbone`, after SSSD/DiffWave with S4 replacing the dilated
convolution; sizes of the reference configuration ``diffusion_small_config``: hidden 64, 3
residual blocks, step embedding 128, S4 state 128): a ``1x1`` input convolution + ReLU; per
block the projected step embedding is added, a pre-norm bidirectional S4 layer with its own
residual (:class:`~polydiff.timeseries.tsdiff.s4.S4D`) is applied, the gate
``tanh(h) * sigmoid(h)``, and ``1x1`` convolutions give the residual and skip outputs; the
summed skips go through ``1x1`` conv, ReLU, ``1x1`` conv to the ``(B, 1, L)`` noise estimate.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from polydiff.core.denoiser import ModelDenoiser
from polydiff.core.grids import time_grid
from polydiff.core.losses import DiffusionLoss
from polydiff.core.nn.embeddings import TimestepMLP, batch_time
from polydiff.core.nn.hub import PretrainedMixin, register_model
from polydiff.core.processes.vp import VPDiscrete
from polydiff.timeseries.tsdiff.s4 import S4D, S4D_INITS

__all__ = [
    "BETA_SCHEDULES", "HOURLY_LAGS", "DAILY_LAGS", "TSDiffConfig", "TSDiffBackbone",
    "TSDiffModel", "TSDiffWindow", "lags_for_freq", "mean_scale", "make_window",
]

HOURLY_LAGS: tuple[int, ...] = tuple(24 * i for i in (1, 2, 3, 4, 5, 6, 7, 14, 21, 28))
DAILY_LAGS: tuple[int, ...] = tuple(30 * i for i in range(1, 13))
BETA_SCHEDULES: tuple[str, ...] = ("linear", "scaled_linear")


def lags_for_freq(freq: str) -> tuple[int, ...]:
    """TSDiff's lags for a pandas-style frequency: hourly (``"H"``/``"h"``) and daily or
    business-daily (``"D"``, ``"B"``). Other frequencies: pass ``lags`` explicitly."""
    f = freq.strip().upper()
    if f in ("H", "1H"):
        return HOURLY_LAGS
    if f in ("D", "1D", "B", "1B"):
        return DAILY_LAGS
    raise ValueError(f"no TSDiff lags for frequency {freq!r} (known: H, D, B); pass lags=...")


@dataclass
class TSDiffConfig:
    """Configuration of :class:`TSDiffModel` (defaults: the paper's hourly setting).

    Attributes:
        context_length, prediction_length: the window is ``L = context + prediction`` long;
            the mean scale is taken over the context.
        lags: seasonal lags (positive, distinct); ``()`` for a lag-free model.
        hidden_dim, num_blocks: width and depth of the residual S4 network.
        state_dim: S4D state size ``N`` per channel and direction (``N / 2`` complex modes).
        s4_init: ``"lin"`` (S4D-Lin) or ``"inv"`` (S4D-Inv).
        bidirectional: bidirectional S4 layers (the paper's choice).
        dropout: dropout inside the S4 layers.
        lag_dropout: in training, the probability of dropping all lag features of a window
            (values and indicators set to 0, i.e. "every lag missing"), so the same network is
            also an unconditional model of windows without history (``lags=None``), as
            synthesis needs (classifier-free-guidance-style condition dropout, Ho & Salimans
            2022).
        time_embed_dim: width of the sinusoidal diffusion-step embedding.
        diffusion_steps: ``N`` of the discrete DDPM (100 in the paper).
        beta_schedule, beta_start, beta_end: the betas (paper: linear, 1e-4 to 0.1).
    """

    context_length: int = 336
    prediction_length: int = 24
    lags: tuple[int, ...] = HOURLY_LAGS
    hidden_dim: int = 64
    num_blocks: int = 3
    state_dim: int = 128
    s4_init: str = "lin"
    bidirectional: bool = True
    dropout: float = 0.0
    lag_dropout: float = 0.1
    time_embed_dim: int = 128
    diffusion_steps: int = 100
    beta_schedule: str = "linear"
    beta_start: float = 1e-4
    beta_end: float = 0.1

    def __post_init__(self) -> None:
        self.lags = tuple(int(v) for v in self.lags)
        if self.context_length < 1 or self.prediction_length < 0:
            raise ValueError("context_length must be >= 1 and prediction_length >= 0")
        if any(v < 1 for v in self.lags) or len(set(self.lags)) != len(self.lags):
            raise ValueError(f"lags must be distinct positive integers, got {self.lags}")
        if min(self.hidden_dim, self.num_blocks, self.time_embed_dim) < 1:
            raise ValueError("hidden_dim, num_blocks and time_embed_dim must be >= 1")
        if self.time_embed_dim < 4 or self.time_embed_dim % 2:
            raise ValueError(f"time_embed_dim must be even and >= 4, got {self.time_embed_dim}")
        if self.state_dim < 2 or self.state_dim % 2:
            raise ValueError(f"state_dim must be even and >= 2, got {self.state_dim}")
        if self.s4_init not in S4D_INITS:
            raise ValueError(f"s4_init must be one of {S4D_INITS}, got {self.s4_init!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.lag_dropout <= 1.0:
            raise ValueError(f"lag_dropout must be in [0, 1], got {self.lag_dropout}")
        if self.diffusion_steps < 2:
            raise ValueError(f"diffusion_steps must be >= 2, got {self.diffusion_steps}")
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"beta_schedule must be one of {BETA_SCHEDULES}")
        if not 0.0 < self.beta_start <= self.beta_end < 1.0:
            raise ValueError("need 0 < beta_start <= beta_end < 1")

    @property
    def window_length(self) -> int:
        """``L = context_length + prediction_length``."""
        return self.context_length + self.prediction_length

    @property
    def max_lag(self) -> int:
        """History a window needs for all its lag values (0 without lags)."""
        return max(self.lags, default=0)

    @property
    def in_channels(self) -> int:
        """Backbone input channels: the target plus a value and an indicator per lag."""
        return 1 + 2 * len(self.lags)

    def betas(self) -> Tensor:
        """The ``diffusion_steps`` betas (float64)."""
        n, b0, b1 = self.diffusion_steps, self.beta_start, self.beta_end
        if self.beta_schedule == "linear":
            return torch.linspace(b0, b1, n, dtype=torch.float64)
        return torch.linspace(b0**0.5, b1**0.5, n, dtype=torch.float64) ** 2

    @classmethod
    def paper(cls, freq: str = "H", **overrides: Any) -> TSDiffConfig:
        """The paper's setting (``diffusion_small_config``): hourly context 336, horizon 24;
        daily (``freq="D"``) context 360, horizon 30; hidden 64, 3 blocks, S4 state 128."""
        lags = lags_for_freq(freq)
        base: dict[str, Any] = (dict(context_length=336, prediction_length=24)
                                if lags == HOURLY_LAGS else
                                dict(context_length=360, prediction_length=30))
        return cls(**{**base, "lags": lags, **overrides})

    @classmethod
    def tiny(cls, **overrides: Any) -> TSDiffConfig:
        """A model of a few thousand parameters that trains in seconds on a CPU: context 48,
        horizon 12, lags (12, 24), hidden 16, 2 blocks, S4 state 16."""
        base: dict[str, Any] = dict(context_length=48, prediction_length=12, lags=(12, 24),
                                    hidden_dim=16, num_blocks=2, state_dim=16,
                                    time_embed_dim=16)
        return cls(**{**base, **overrides})

    def replace(self, **changes: Any) -> TSDiffConfig:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


# --------------------------------------------------------------------------- network
class ResidualBlock(nn.Module):
    """One residual block: ``h = x + W_t e``; ``h = h + dropout(S4(LayerNorm(h)))``;
    ``g = tanh(h) * sigmoid(h)``; returns ``(x + W_res g, W_skip g)``. The last block has no
    residual output (only its skip is used; no unused parameters, as DDP requires)."""

    def __init__(self, cfg: TSDiffConfig, last: bool = False):
        super().__init__()
        h = cfg.hidden_dim
        self.time_proj = nn.Linear(h, h)
        self.norm = nn.LayerNorm(h)
        self.s4 = S4D(h, cfg.state_dim, bidirectional=cfg.bidirectional, dropout=cfg.dropout,
                      init=cfg.s4_init)
        self.dropout = nn.Dropout1d(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        self.res_proj = None if last else nn.Conv1d(h, h, 1)
        self.skip_proj = nn.Conv1d(h, h, 1)

    def forward(self, x: Tensor, emb: Tensor) -> tuple[Tensor, Tensor]:
        h = x + self.time_proj(emb).unsqueeze(-1)
        z = self.norm(h.transpose(1, 2)).transpose(1, 2)
        h = h + self.dropout(self.s4(z))
        g = torch.tanh(h) * torch.sigmoid(h)
        out = x if self.res_proj is None else x + self.res_proj(g)
        return out, self.skip_proj(g)


class TSDiffBackbone(nn.Module):
    """TSDiff's residual S4 network (module docstring): ``(x (B, 1, L), t (B,), lags (B,
    2 * n_lags, L)) -> eps (B, 1, L)``; ``t`` is the (fractional) DDPM step index
    ``0 .. diffusion_steps - 1``. Any length ``L`` works."""

    def __init__(self, config: TSDiffConfig):
        super().__init__()
        self.config = cfg = config
        h = cfg.hidden_dim
        self.input_proj = nn.Conv1d(cfg.in_channels, h, 1)
        self.time = TimestepMLP(cfg.time_embed_dim, h)
        self.blocks = nn.ModuleList([ResidualBlock(cfg, last=i == cfg.num_blocks - 1)
                                     for i in range(cfg.num_blocks)])
        self.skip_proj = nn.Conv1d(h, h, 1)
        self.output_proj = nn.Conv1d(h, 1, 1)

    def block_names(self) -> list[str]:
        """Names of the residual blocks in execution order (``get_submodule`` paths)."""
        return [f"blocks.{i}" for i in range(len(self.blocks))]

    def forward(self, x: Tensor, t: Tensor | float, *, lags: Tensor | None = None) -> Tensor:
        cfg = self.config
        if x.ndim != 3 or x.shape[1] != 1:
            raise ValueError(f"expected x of shape (B, 1, L), got {tuple(x.shape)}")
        n = cfg.in_channels - 1
        if n:
            want = (x.shape[0], n, x.shape[-1])
            if lags is None:  # every lag missing: zero values, zero indicators
                lags = x.new_zeros(want)
            elif tuple(lags.shape) != want:
                raise ValueError(f"lags must have shape {want}, got {tuple(lags.shape)}")
            x = torch.cat([x, lags.to(x.dtype)], dim=1)
        elif lags is not None and lags.shape[1]:
            raise ValueError("this TSDiff model has no lags: lags are not accepted")
        emb = nn.functional.silu(self.time(batch_time(t, x.shape[0], x.device)))
        h = torch.relu(self.input_proj(x))
        skip = torch.zeros_like(h)
        for block in self.blocks:
            h, s = block(h, emb)
            skip = skip + s
        return self.output_proj(torch.relu(self.skip_proj(skip)))


# --------------------------------------------------------------------------- windows
@dataclass
class TSDiffWindow:
    """A model-ready window (all tensors on the model's device and dtype).

    Attributes:
        x: ``(B, 1, L)`` scaled target; unobserved points filled (0 or interpolated).
        lags: ``(B, 2 * n_lags, L)`` scaled lag values then their observed indicators.
        observed: ``(B, 1, L)`` bool, where ``x`` holds a real observation.
        scale: ``(B, 1)`` mean scale; ``x * scale[..., None]`` is the original series.
    """

    x: Tensor
    lags: Tensor
    observed: Tensor
    scale: Tensor

    @property
    def cond(self) -> dict[str, Tensor]:
        """The conditioning of :meth:`TSDiffModel.denoiser`: ``{"lags": lags}``."""
        return {"lags": self.lags}

    def batch(self) -> dict[str, Tensor]:
        """A training batch for :meth:`TSDiffModel.loss`: ``{"x0": x, "lags": lags,
        "observed": observed}`` (the loss counts observed points only)."""
        return {"x0": self.x, "lags": self.lags, "observed": self.observed}

    def descale(self, x: Tensor) -> Tensor:
        """Undo the mean scaling of a ``(B, ..., L)`` tensor (e.g. samples ``(B, 1, L)``)."""
        return x * self.scale.reshape(self.scale.shape + (1,) * (x.ndim - 2))


def mean_scale(context: Tensor, observed: Tensor | None = None) -> Tensor:
    """The mean scale ``sum |x| m / sum m`` over observed (and finite) context values,
    ``(B, C) -> (B, 1)``; 1 where nothing is observed or every observed value is 0."""
    context = torch.as_tensor(context)
    if context.ndim == 1:
        context = context.unsqueeze(0)
    obs = torch.isfinite(context)
    if observed is not None:
        obs = obs & torch.as_tensor(observed, device=context.device).reshape(context.shape).bool()
    total = torch.where(obs, context.abs(), torch.zeros_like(context)).sum(-1, keepdim=True)
    count = obs.sum(-1, keepdim=True)
    scale = total / count.clamp(min=1).to(total.dtype)
    return torch.where((count > 0) & (scale > 0), scale, torch.ones_like(scale))


def _interpolate(x: Tensor, obs: Tensor) -> Tensor:
    """Fill unobserved points of ``x (B, L)`` by linear interpolation between observed
    neighbours (nearest observed value at the ends; 0 for rows without observations)."""
    length = x.shape[-1]
    idx = torch.arange(length, device=x.device).expand_as(x)
    prev = torch.where(obs, idx, torch.full_like(idx, -1)).cummax(-1).values
    nxt = torch.where(obs, idx, torch.full_like(idx, length)).flip(-1).cummin(-1).values.flip(-1)
    has_p, has_n = prev >= 0, nxt < length
    xp = x.gather(-1, prev.clamp(min=0))
    xn = x.gather(-1, nxt.clamp(max=length - 1))
    w = ((idx - prev).to(x.dtype) / (nxt - prev).clamp(min=1).to(x.dtype))
    one_side = torch.where(has_p, xp, torch.where(has_n, xn, torch.zeros_like(x)))
    out = torch.where(has_p & has_n, xp + w * (xn - xp), one_side)
    return torch.where(obs, x, out)


def make_window(series: Tensor | np.ndarray, config: TSDiffConfig, *,
                observed: Tensor | np.ndarray | None = None, scale: Tensor | None = None,
                fill: str = "zero", dtype: torch.dtype = torch.float32,
                device: torch.device | str | None = None) -> TSDiffWindow:
    """Build a model input from ``series (B, T)`` (or ``(T,)``), ``T >= L``: the last ``L``
    points are the window, the ``T - L`` before it history for the lags (any amount; lag
    values before the first point are marked missing). NaNs (and ``observed == 0``) mark
    missing values. ``scale`` defaults to :func:`mean_scale` of the window's context.
    ``fill``: ``"zero"`` or ``"interpolate"`` for unobserved target points."""
    if fill not in ("zero", "interpolate"):
        raise ValueError(f"fill must be 'zero' or 'interpolate', got {fill!r}")
    s = torch.as_tensor(series).to(device=device, dtype=torch.float64)
    if s.ndim == 1:
        s = s.unsqueeze(0)
    length = config.window_length
    if s.ndim != 2 or s.shape[-1] < length:
        raise ValueError(f"series must have shape (B, T) with T >= context_length + "
                         f"prediction_length = {length}, got {tuple(s.shape)}")
    obs = torch.isfinite(s)
    if observed is not None:
        obs = obs & torch.as_tensor(observed, device=s.device).reshape(s.shape).bool()
    if scale is None:
        ctx = slice(s.shape[-1] - length, s.shape[-1] - config.prediction_length)
        scale = mean_scale(s[:, ctx], obs[:, ctx])
    scale = torch.as_tensor(scale, device=s.device, dtype=torch.float64).reshape(-1, 1)
    z = torch.where(obs, s, torch.zeros_like(s)) / scale
    # left-pad so every lag of every window position has an index (missing = unobserved)
    pad = max(0, config.max_lag - (s.shape[-1] - length))
    z = nn.functional.pad(z, (pad, 0))
    obs = nn.functional.pad(obs, (pad, 0), value=False)
    start = z.shape[-1] - length
    x, x_obs = z[:, start:], obs[:, start:]
    if fill == "interpolate":
        x = _interpolate(x, x_obs)
    vals = [z[:, start - lag: start - lag + length] for lag in config.lags]
    inds = [obs[:, start - lag: start - lag + length].to(z.dtype) for lag in config.lags]
    lags = torch.stack(vals + inds, dim=1) if config.lags else z.new_zeros(len(z), 0, length)
    return TSDiffWindow(x.unsqueeze(1).to(dtype), lags.to(dtype), x_obs.unsqueeze(1),
                        scale.to(dtype))


# --------------------------------------------------------------------------- the model
@register_model
class TSDiffModel(PretrainedMixin, nn.Module):
    """TSDiff (Kollovieh et al. 2023): config, backbone and the discrete VP process.

    The diffusion variable is the scaled window ``x (B, 1, L)``; lag features are the
    condition ``lags``. ``save_pretrained`` / ``from_pretrained`` store config and weights.
    """

    config_class = TSDiffConfig

    def __init__(self, config: TSDiffConfig | None = None):
        super().__init__()
        self.config = cfg = config or TSDiffConfig()
        self.backbone = TSDiffBackbone(cfg)
        self.process = VPDiscrete(betas=cfg.betas())
        self.objective = DiffusionLoss(self.process, target="epsilon")

    @property
    def _param(self) -> Tensor:
        return next(self.backbone.parameters())

    def forward(self, x: Tensor, t: Tensor | float, *, lags: Tensor | None = None) -> Tensor:
        """The network: ``eps(x (B, 1, L), step index t (B,), lags)``."""
        return self.backbone(x, t, lags=lags)

    # ------------------------------------------------------------------ data
    def scale(self, context: Tensor, observed: Tensor | None = None) -> Tensor:
        """Mean scale of ``context (B, C)`` over its observed values: ``(B, 1)``."""
        return mean_scale(context, observed)

    def make_window(self, series: Tensor | np.ndarray, observed: Tensor | None = None,
                    scale: Tensor | None = None, fill: str = "zero") -> TSDiffWindow:
        """:func:`make_window` on this model's config, device and dtype."""
        p = self._param
        return make_window(series, self.config, observed=observed, scale=scale, fill=fill,
                           dtype=p.dtype, device=p.device)

    def forecast_window(self, past: Tensor | np.ndarray,
                        observed: Tensor | None = None) -> TSDiffWindow:
        """A window for forecasting: ``past (B, T)`` (``T >= context_length``: the context
        at its end, history before) followed by ``prediction_length`` missing points."""
        s = torch.as_tensor(past, dtype=torch.float64)
        s = s.unsqueeze(0) if s.ndim == 1 else s
        if s.ndim != 2 or s.shape[-1] < self.config.context_length:
            raise ValueError(f"past must have shape (B, T) with T >= context_length = "
                             f"{self.config.context_length}, got {tuple(s.shape)}")
        future = s.new_full((s.shape[0], self.config.prediction_length), float("nan"))
        if observed is not None:
            observed = torch.cat([torch.as_tensor(observed).reshape(s.shape).bool(),
                                  torch.zeros(future.shape, dtype=torch.bool)], dim=-1)
        return self.make_window(torch.cat([s, future], dim=-1), observed)

    # ------------------------------------------------------------------ diffusion
    def denoiser(self) -> ModelDenoiser:
        """The core denoiser over ``x (B, 1, L)``: epsilon prediction, network time
        ``process.model_timestep(t)``; pass the lag features as ``lags=`` (a condition)."""
        return ModelDenoiser(self.backbone, self.process, "epsilon",
                             time_input=self.process.model_timestep)

    def sampling_grid(self, steps: int | None = None) -> Tensor:
        """The DDPM time grid: ``steps`` (default ``diffusion_steps``) uniform steps from
        ``t = 1`` to the first training step ``1 / N``, then to ``sigma = 0``; with the
        default it visits exactly the N trained steps (use with ``sample_ddpm``)."""
        n = self.config.diffusion_steps if steps is None else int(steps)
        return time_grid(self.process, n, "uniform", final_zero=True)

    def loss(self, batch: dict[str, Tensor], generator: torch.Generator | None = None, *,
             reduction: str = "mean") -> Tensor:
        """DDPM's simple loss (Ho et al. 2020, eq. 14) on ``batch = {"x0": (B, 1, L),
        "lags": (B, 2 n, L)}``: a uniform integer step ``n`` (time ``(n + 1) / N``) per
        sample and the epsilon MSE, via :class:`~polydiff.core.losses.DiffusionLoss`. In
        training mode the lags of a sample are dropped with probability ``lag_dropout``.
        Random numbers, all from ``generator``: steps, lag-dropout draws (training mode
        only), then the noise. An ``"observed"`` mask ``(B, 1, L)`` in the batch restricts the
        error to observed points (missing ones were filled to form the input ``x0``)."""
        x0, lags, observed = batch["x0"], batch.get("lags"), batch.get("observed")
        n, p = self.config.diffusion_steps, self.config.lag_dropout
        steps = torch.randint(0, n, (x0.shape[0],), generator=generator, device=x0.device)
        t = (steps.to(torch.float64) + 1.0) / n
        if lags is not None and self.training and p > 0 and lags.shape[1]:
            u = torch.rand(x0.shape[0], generator=generator, device=x0.device)
            lags = lags * (u >= p).to(lags.dtype)[:, None, None]
        cond = {"lags": lags} if lags is not None else None
        return self.objective(self.denoiser(), x0, cond=cond, t=t, generator=generator,
                              reduction=reduction, mask=observed)
