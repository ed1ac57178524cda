"""DiffMatch: dense matching as conditional diffusion over the flow field.

Implements the inference pipeline of Nam et al. (2024), "Diffusion Model for Dense Matching"
(ICLR), Sec. 4 and Fig. 2, at a small scale:

1. features of both images (:class:`~.features.FeatureNet` or DAISY) and the global cost
   volume; the initial flow ``F_init`` is its argmax (:func:`~.features.argmax_flow`);
2. the local cost ``C_l`` in a ``(2r + 1)^2`` window (``r = 4`` cells) around ``F_init``;
3. a conditional denoiser ``F_theta(F_t, t; F_init, C_l)`` that predicts the clean flow
   ``F_0`` (x0 prediction), its input the noisy flow, ``F_init`` and ``C_l`` concatenated
   (cost injection), its output a residual on ``F_init`` (:class:`FlowDenoiserNet`);
4. sampling with core's DDIM in 5 steps, several hypotheses per pair (independent noise)
   combined by their mean (the paper averages its multiple samples; their spread is
   returned as an uncertainty). The paper starts from pure noise at the largest time; by
   default the sampler here starts from ``F_init`` diffused to ``sigma_start = 1`` (16
   image pixels of noise; SDEdit-style, Meng et al. 2022), chosen on validation warps
   (AEPE 1.71 px against 1.75 from pure noise, 8 hypotheses against 4: 1.70);
5. a x2 flow super-resolution stage: a second conditional denoiser at twice the resolution,
   fed the upsampled coarse flow, the local cost of the finer features around it and the
   finer features of A (the paper's flow upsampling diffusion model).

The flow is normalised before diffusion: ``F / unit`` with ``unit`` = 4 cells of the 1/4
grid (16 image pixels; 8 cells of the 1/2 grid), so typical flows have unit scale, the scale
of the process's noise. The forward process is core's cosine VP (Nichol & Dhariwal 2021);
training is core's :class:`~polydiff.core.losses.DiffusionLoss` with the x0 target
(``train.py``). ``regress`` runs the same network trained as a direct regressor (noisy input
and time fixed at zero) for comparison.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from polydiff.core.denoiser import ModelDenoiser
from polydiff.core.grids import time_grid
from polydiff.core.nn import UNet, UNetConfig
from polydiff.core.nn.hub import PretrainedMixin, register_model
from polydiff.core.processes import VPCosine
from polydiff.core.samplers import sample_ddim
from polydiff.core.utils import atomic_dir
from polydiff.dense.diffmatch.features import (
    FeatureNet,
    argmax_flow,
    daisy_features,
    global_cost,
    local_cost,
)
from polydiff.dense.flow import resize_flow
from polydiff.dense.images import resize_image, to_gray

__all__ = ["FlowNetConfig", "FlowDenoiserNet", "DiffMatchConfig", "DiffMatch", "Prepared",
           "working_size", "PIPELINE_FILE"]

PIPELINE_FILE = "diffmatch.json"


@dataclass
class FlowNetConfig:
    """The conditional denoiser: a core :class:`~polydiff.core.nn.UNet` over the 2-channel
    flow with ``2 + cost_channels + feat_channels`` condition channels (initial flow, local
    cost, optional features of A). Widths as in :class:`~polydiff.core.nn.UNetConfig`."""

    cost_channels: int = 81
    feat_channels: int = 0
    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attention_levels: tuple[int, ...] = (2,)
    num_heads: int = 2
    lookup_radius: int = 0
    lookup_unit: float = 1.0

    def __post_init__(self) -> None:
        self.channel_mults = tuple(self.channel_mults)
        self.attention_levels = tuple(self.attention_levels)
        if self.lookup_radius < 0 or self.lookup_unit <= 0:
            raise ValueError("lookup_radius must be >= 0 and lookup_unit > 0")

    @property
    def lookup_channels(self) -> int:
        return (2 * self.lookup_radius + 1) ** 2 if self.lookup_radius else 0

    def unet(self) -> UNetConfig:
        return UNetConfig(dims=2, in_channels=2, out_channels=2,
                          cond_channels=(2 + self.cost_channels + self.lookup_channels
                                         + self.feat_channels),
                          base_channels=self.base_channels, channel_mults=self.channel_mults,
                          num_res_blocks=self.num_res_blocks,
                          attention_levels=self.attention_levels, num_heads=self.num_heads,
                          mid_attention=True, time_embedding="sinusoidal", time_scale=1000.0,
                          scale_shift=True, norm_groups=8)


@register_model
class FlowDenoiserNet(PretrainedMixin, nn.Module):
    """``F_0 = F_init + UNet([F_t, F_init, C_l, C_t, f_A], t)``: the x0-predicting conditional
    denoiser of DiffMatch (Nam et al. 2024, Sec. 4.3, cost injection).

    With ``lookup_radius > 0`` the network also sees ``C_t``, the local cost re-sampled at
    every call around the flow the noisy input points to (``F_t / alpha_t``, in
    ``lookup_unit`` cells per normalised unit), from the features ``look_a``, ``look_b``
    passed with the condition: each sampling step looks at the matching evidence around its
    current estimate, as the recurrent lookups of RAFT do (Teed & Deng 2020). This is an
    addition to the paper's recipe, whose local cost stays centred on ``F_init``; the
    benchmark measures both (``DiffMatchConfig.lookup``). At ``t = 0`` (the direct regressor,
    fed ``F_init``) the lookup is centred on ``F_init``."""

    config_class = FlowNetConfig

    def __init__(self, config: FlowNetConfig):
        super().__init__()
        self.config = config
        self.unet = UNet(config.unet())
        self.process = VPCosine()

    def lookup(self, x: Tensor, t: Tensor, look_a: Tensor, look_b: Tensor) -> Tensor:
        """The local cost around ``x / alpha_t`` (normalised flow, clamped to a few image
        sizes so far-off points just read zeros)."""
        alpha = self.process.alpha(t.to(x.dtype)).reshape(-1, 1, 1, 1)
        span = 4.0 * max(x.shape[-2:]) / self.config.lookup_unit
        est = (x / alpha.clamp_min(1e-4)).clamp(-span, span) * self.config.lookup_unit
        with torch.no_grad():
            return local_cost(look_a, look_b, est, self.config.lookup_radius)

    @property
    def padding_multiple(self) -> int:
        return self.unet.padding_multiple

    def forward(self, x: Tensor, t: Tensor, *, init_flow: Tensor, cost: Tensor,
                feat: Tensor | None = None, look_a: Tensor | None = None,
                look_b: Tensor | None = None) -> Tensor:
        parts = [init_flow, cost]
        if self.config.lookup_radius:
            if look_a is None or look_b is None:
                raise ValueError("this denoiser looks up the cost: pass look_a and look_b")
            parts.append(self.lookup(x, t, look_a, look_b))
        if feat is not None:
            parts.append(feat)
        return init_flow + self.unet(x, t, cond=torch.cat(parts, dim=1))


@dataclass
class DiffMatchConfig:
    """Settings of the pipeline (saved as ``diffmatch.json`` beside the networks).

    Attributes:
        features: ``"cnn"`` (the trained :class:`FeatureNet`) or ``"daisy"``.
        radius: local-cost radius at 1/4 (cells); sr_radius: at 1/2.
        unit: normalisation of the flow, in cells of the 1/4 grid.
        steps: DDIM steps; hypotheses: samples averaged per pair.
        sigma_end: the last noise level before the final step to the clean flow
            (``sigma / alpha``, normalised units).
        size: training image size (square, multiple of 16).
        lookup: the denoisers re-sample the local cost around their current estimate at
            every step (:class:`FlowDenoiserNet`), not only around ``F_init``.
        sigma_start: the first noise level of the sampling grid (``sigma / alpha``,
            normalised units; ``None``: the process's largest time, pure noise);
            sr_sigma_start: the same for the super-resolution stage (``None``:
            ``sigma_start``).
        start: what the sampler starts from at ``sigma_start``: ``"noise"`` (the flow
            forgotten: ``x = alpha * 0 + sigma * eps``, the paper's choice at the largest
            time) or ``"init"`` (``F_init`` diffused to that level, as SDEdit starts from a
            guide, Meng et al. 2022).
        combine: how the hypotheses make one flow: their ``"mean"`` or their per-pixel
            ``"median"`` (each component; robust to a hypothesis that lands on another
            mode, which the endpoint error punishes less than an average between modes).
        max_side: working size at inference: images are resized so their longer side is
            at most this (and both sides multiples of 16).
    """

    features: str = "cnn"
    radius: int = 4
    sr_radius: int = 3
    unit: float = 4.0
    steps: int = 5
    hypotheses: int = 8
    sigma_end: float = 0.05
    size: int = 128
    max_side: int = 192
    lookup: bool = False
    sigma_start: float | None = 1.0
    sr_sigma_start: float | None = None
    start: str = "init"
    combine: str = "mean"

    def __post_init__(self) -> None:
        if self.features not in ("cnn", "daisy"):
            raise ValueError(f"features must be 'cnn' or 'daisy', got {self.features!r}")
        if self.steps < 1 or self.hypotheses < 1:
            raise ValueError("steps and hypotheses must be >= 1")
        if self.combine not in ("mean", "median"):
            raise ValueError(f"combine must be 'mean' or 'median', got {self.combine!r}")
        if self.start not in ("noise", "init"):
            raise ValueError(f"start must be 'noise' or 'init', got {self.start!r}")
        for start in (self.sigma_start, self.sr_sigma_start):
            if start is not None and not start > self.sigma_end:
                raise ValueError("sigma_start and sr_sigma_start must exceed sigma_end")
        if self.size % 16 or self.max_side % 16:
            raise ValueError("size and max_side must be multiples of 16")


def working_size(height: int, width: int, max_side: int) -> tuple[int, int]:
    """The ``(h, w)`` images are matched at: the aspect ratio kept, the longer side at most
    ``max_side``, both sides multiples of 16 (at least 32)."""
    f = min(1.0, max_side / max(height, width))
    return (max(32, int(round(height * f / 16)) * 16), max(32, int(round(width * f / 16)) * 16))


@dataclass
class Prepared:
    """What the networks are conditioned on for a batch of pairs (``(B, ...)`` tensors):
    coarse (1/4) and fine (1/2) features of A and B, the initial flow (1/4 cells) and its
    local cost."""

    ca: Tensor
    cb: Tensor
    fa: Tensor | None
    fb: Tensor | None
    init: Tensor
    cost: Tensor


class DiffMatch:
    """The matching pipeline (module docstring): networks plus :class:`DiffMatchConfig`.

    Args:
        config: the settings.
        features: the trained :class:`FeatureNet` (``None`` with DAISY features).
        coarse: the 1/4-resolution denoiser; sr: the x2 super-resolution denoiser (optional);
        regressor: the same network as ``coarse`` trained as a direct regressor (optional).
    """

    def __init__(self, config: DiffMatchConfig, features: FeatureNet | None,
                 coarse: FlowDenoiserNet | None = None, sr: FlowDenoiserNet | None = None,
                 regressor: FlowDenoiserNet | None = None):
        if config.features == "cnn" and features is None:
            raise ValueError("features='cnn' needs a FeatureNet")
        self.config = config
        self.features = features
        self.coarse, self.sr, self.regressor = coarse, sr, regressor
        self.process = VPCosine()
        for net in self.networks().values():
            net.eval()

    # ------------------------------------------------------------------ bookkeeping
    def networks(self) -> dict[str, nn.Module]:
        nets = {"features": self.features, "coarse": self.coarse, "sr": self.sr,
                "regressor": self.regressor}
        return {k: v for k, v in nets.items() if v is not None}

    @property
    def device(self) -> torch.device:
        for net in self.networks().values():
            return next(net.parameters()).device
        return torch.device("cpu")

    def to(self, device: torch.device | str) -> DiffMatch:
        for net in self.networks().values():
            net.to(device)
        return self

    def save(self, directory: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write every network (``save_pretrained`` in a sub-folder of its name) and
        ``diffmatch.json`` (the config plus ``extra``) into ``directory``, atomically."""
        with atomic_dir(directory) as tmp:
            for name, net in self.networks().items():
                net.save_pretrained(tmp / name)  # type: ignore[operator]
            meta = {"config": dataclasses.asdict(self.config), **(extra or {})}
            (tmp / PIPELINE_FILE).write_text(json.dumps(meta, indent=1) + "\n",
                                             encoding="utf-8")
        return Path(directory)

    @classmethod
    def load(cls, directory: str | Path, map_location: str | torch.device = "cpu"
             ) -> DiffMatch:
        """Load what :meth:`save` wrote (missing optional networks stay ``None``)."""
        d = Path(directory)
        meta_path = d / PIPELINE_FILE
        if not meta_path.is_file():
            raise FileNotFoundError(f"{d}: not a DiffMatch model folder (no {PIPELINE_FILE})")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        config = DiffMatchConfig(**meta["config"])

        def opt(name: str, kind: type[Any]) -> Any:
            return kind.from_pretrained(d / name, map_location=map_location) \
                if (d / name).is_dir() else None

        return cls(config, opt("features", FeatureNet), opt("coarse", FlowDenoiserNet),
                   opt("sr", FlowDenoiserNet), opt("regressor", FlowDenoiserNet))

    # ------------------------------------------------------------------ conditioning
    @torch.no_grad()
    def prepare(self, a: Tensor, b: Tensor, *, fine: bool = True) -> Prepared:
        """Features, the argmax initial flow and its local cost for grey images ``a``,
        ``b`` ``(B, 1, H, W)`` in [0, 1] (``H``, ``W`` multiples of 16)."""
        cfg = self.config
        if self.features is not None and cfg.features == "cnn":
            ca, fa = self.features(a)
            cb, fb = self.features(b)
        else:
            ca = torch.cat([daisy_features(x[0].cpu().numpy()) for x in a]).to(a.device)
            cb = torch.cat([daisy_features(x[0].cpu().numpy()) for x in b]).to(a.device)
            fa = fb = None
        init = argmax_flow(global_cost(ca, cb))
        cost = local_cost(ca, cb, init, cfg.radius)
        return Prepared(ca, cb, fa if fine else None, fb if fine else None, init, cost)

    def coarse_cond(self, prep: Prepared) -> dict[str, Tensor]:
        """The coarse denoiser's condition: normalised ``F_init`` and ``C_l`` (and the
        coarse features for the per-step lookup)."""
        cond = {"init_flow": prep.init / self.config.unit, "cost": prep.cost}
        if self.config.lookup:
            cond.update(look_a=prep.ca, look_b=prep.cb)
        return cond

    @torch.no_grad()
    def sr_cond(self, prep: Prepared, coarse_flow: Tensor) -> dict[str, Tensor]:
        """The super-resolution denoiser's condition from a coarse flow (1/4 cells): the
        flow upsampled to 1/2 (normalised), the local cost of the fine features around it
        and the fine features of A."""
        if prep.fa is None or prep.fb is None:
            raise ValueError("the super-resolution stage needs the CNN's fine features")
        h, w = prep.fa.shape[-2:]
        up = resize_flow(coarse_flow, h, w)
        cost = local_cost(prep.fa, prep.fb, up, self.config.sr_radius)
        cond = {"init_flow": up / (2.0 * self.config.unit), "cost": cost, "feat": prep.fa}
        if self.config.lookup:
            cond.update(look_a=prep.fa, look_b=prep.fb)
        return cond

    # ------------------------------------------------------------------ sampling
    def time_grid(self, steps: int | None = None, *, sr: bool = False) -> Tensor:
        """The DDIM grid: ``steps`` steps, log-SNR spaced from the process's largest time
        down to ``sigma_end``, the last step to the clean flow."""
        p = self.process

        def t_of(sigma: float) -> float:
            return float(p.t_from_sigma_tilde(torch.tensor(sigma, dtype=torch.float64)))

        start = self.config.sigma_start
        if sr and self.config.sr_sigma_start is not None:
            start = self.config.sr_sigma_start
        return time_grid(p, steps or self.config.steps, "logsnr",
                         t_start=None if start is None else t_of(start),
                         t_end=t_of(self.config.sigma_end), final_zero=True)

    @torch.no_grad()
    def sample(self, net: FlowDenoiserNet, cond: dict[str, Tensor], *,
               hypotheses: int | None = None, steps: int | None = None,
               generator: torch.Generator | None = None, sr: bool = False
               ) -> tuple[Tensor, Tensor]:
        """``hypotheses`` DDIM samples per pair from pure noise; returns their mean and
        standard deviation (normalised flow, ``(B, 2, h, w)`` each)."""
        k = hypotheses or self.config.hypotheses
        ref = cond["init_flow"]
        batch = ref.shape[0]
        rep = {n: v.repeat_interleave(k, dim=0) for n, v in cond.items()}
        x = torch.randn((batch * k,) + tuple(ref.shape[1:]), generator=generator,
                        device=ref.device, dtype=ref.dtype)
        den = ModelDenoiser(net, self.process, prediction_type="sample")
        ts = self.time_grid(steps, sr=sr).to(ref.device)
        alpha, sigma = self.process.alpha_sigma(ts[:1].to(ref.dtype))
        mean = rep["init_flow"] if self.config.start == "init" else torch.zeros_like(x)
        x = alpha * mean + sigma * x
        out = sample_ddim(den, x, ts, cond=rep, disable=True).reshape(
            (batch, k) + tuple(ref.shape[1:]))
        std = out.std(1) if k > 1 else torch.zeros_like(out[:, 0])
        if self.config.combine == "median" and k > 2:
            srt = out.sort(dim=1).values
            return 0.5 * (srt[:, (k - 1) // 2] + srt[:, k // 2]), std
        return out.mean(1), std

    @torch.no_grad()
    def match_tensors(self, a: Tensor, b: Tensor, *, hypotheses: int | None = None,
                      steps: int | None = None, use_sr: bool = True,
                      generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Match grey ``a`` to ``b`` (``(B, 1, H, W)``, multiples of 16). Returns flows in
        image pixels at ``(H, W)``: ``"flow"`` (the full pipeline), ``"coarse"`` (before
        super-resolution), ``"init"`` (the argmax) and ``"uncertainty"`` (the hypotheses'
        spread, pixels)."""
        if self.coarse is None:
            raise ValueError("this model has no trained coarse denoiser")
        h, w = a.shape[-2:]
        unit = self.config.unit
        prep = self.prepare(a, b, fine=use_sr and self.sr is not None)
        mean, std = self.sample(self.coarse, self.coarse_cond(prep), hypotheses=hypotheses,
                                steps=steps, generator=generator)
        coarse = mean * unit
        out = {"init": resize_flow(prep.init, h, w), "coarse": resize_flow(coarse, h, w)}
        if use_sr and self.sr is not None:
            fmean, fstd = self.sample(self.sr, self.sr_cond(prep, coarse),
                                      hypotheses=hypotheses, steps=steps, generator=generator,
                                      sr=True)
            out["flow"] = resize_flow(fmean * 2.0 * unit, h, w)
            spread = fstd * 2.0 * unit * (w - 1) / max(fstd.shape[-1] - 1, 1)
        else:
            out["flow"] = out["coarse"]
            spread = std * unit * (w - 1) / max(std.shape[-1] - 1, 1)
        out["uncertainty"] = torch.nn.functional.interpolate(
            spread.norm(dim=1, keepdim=True), size=(h, w), mode="bilinear",
            align_corners=True)[:, 0]
        return out

    @torch.no_grad()
    def regress_tensors(self, a: Tensor, b: Tensor) -> Tensor:
        """The direct regressor's flow (image pixels, ``(B, 2, H, W)``)."""
        if self.regressor is None:
            raise ValueError("this model has no trained regressor")
        h, w = a.shape[-2:]
        prep = self.prepare(a, b, fine=False)
        cond = self.coarse_cond(prep)
        t = torch.zeros(a.shape[0], device=a.device)
        return resize_flow(self.regressor(self.regressor_input(cond), t, **cond)
                           * self.config.unit, h, w)

    def regressor_input(self, cond: dict[str, Tensor]) -> Tensor:
        """What the direct regressor gets in place of the noisy flow: zeros, or ``F_init``
        when the networks look up the cost around their input (so its lookup is centred on
        the initial flow, the best it has)."""
        init = cond["init_flow"]
        return init if self.config.lookup else torch.zeros_like(init)

    # ------------------------------------------------------------------ numpy front end
    def to_tensors(self, a: np.ndarray, b: np.ndarray) -> tuple[Tensor, Tensor]:
        """Grey or colour images (same size) as ``(1, 1, h, w)`` tensors at the working
        size."""
        h, w = working_size(a.shape[0], a.shape[1], self.config.max_side)
        ta = torch.from_numpy(resize_image(to_gray(a), h, w))[None, None]
        tb = torch.from_numpy(resize_image(to_gray(b), h, w))[None, None]
        return ta.to(self.device), tb.to(self.device)

    def match(self, a: np.ndarray, b: np.ndarray, *, seed: int = 0,
              **kw: Any) -> dict[str, np.ndarray]:
        """Match two images of the same size (numpy, grey or RGB, [0, 1]): flows from A to
        B in pixels of the input size (``(2, H, W)``; keys of :meth:`match_tensors`)."""
        ta, tb = self.to_tensors(a, b)
        gen = torch.Generator(device=ta.device).manual_seed(seed)
        res = self.match_tensors(ta, tb, generator=gen, **kw)
        big_h, big_w = a.shape[:2]
        out = {}
        for k, v in res.items():
            if v.ndim == 4:
                out[k] = resize_flow(v, big_h, big_w)[0].cpu().numpy()
            else:
                out[k] = torch.nn.functional.interpolate(
                    v[:, None], size=(big_h, big_w), mode="bilinear",
                    align_corners=True)[0, 0].cpu().numpy() * (big_w - 1) / max(
                        v.shape[-1] - 1, 1)
        return out
