"""Training DiffMatch with the engine: features, the coarse denoiser, the direct regressor
and the super-resolution denoiser, each a run of :class:`polydiff.core.training.Trainer`.

Every batch is drawn afresh: random homography / affine / thin-plate-spline pairs of the
training photographs (:func:`~polydiff.dense.warps.make_pairs`) with photometric jitter,
all from the step's generator, so a run is a function of its seed and resumes exactly.

* ``features``: :class:`~.features.FeatureNet` on the contrastive loss
  (:func:`~.features.feature_loss`);
* ``coarse``: the conditional denoiser on core's :class:`~polydiff.core.losses.DiffusionLoss`
  with the x0 target, plain MSE over the valid pixels (Nam et al. 2024, Sec. 4.4 trains on
  the x0 objective), EDM's log-normal noise levels (Karras et al. 2022); the features are
  frozen;
* ``regressor``: the same network, noisy input and time fixed at zero, trained on the same
  MSE for the same steps: the "no diffusion" baseline;
* ``sr``: the x2 super-resolution denoiser, conditioned on the true coarse flow with a
  smooth random error of random size (:func:`perturbed_flow`), so it learns to correct the
  errors a coarse flow has; it does not depend on the coarse stage, so the stages after the
  features can train in parallel.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polydiff.core.denoiser import ModelDenoiser
from polydiff.core.losses import DiffusionLoss
from polydiff.core.training import TrainConfig, Trainer
from polydiff.dense.data import photo_tensors
from polydiff.dense.diffmatch.features import FeatureNet, FeatureNetConfig, feature_loss
from polydiff.dense.diffmatch.model import (
    DiffMatch,
    DiffMatchConfig,
    FlowDenoiserNet,
    FlowNetConfig,
    Prepared,
)
from polydiff.dense.flow import resize_flow
from polydiff.dense.warps import WarpStrength, make_pairs, photometric_jitter

__all__ = ["TrainSettings", "PairSource", "STAGES", "train_stage", "train_pipeline",
           "perturbed_flow"]

STAGES: tuple[str, ...] = ("features", "coarse", "regressor", "sr")


@dataclass
class TrainSettings:
    """One training of the whole pipeline.

    Attributes:
        feature_steps, coarse_steps, sr_steps: optimizer steps of each stage (the regressor
            trains for ``coarse_steps``, like the coarse denoiser).
        batch_size: pairs per step; lr: AdamW learning rate; seed: the run's seed.
        size: square training image size; base_channels: width of the denoisers'
            U-Nets; sr_channels: the super-resolution U-Net's width (``None``:
            ``base_channels // 2``, at twice the resolution).
        ema_decay: EMA of the weights (used for inference).
        pipeline: the :class:`DiffMatchConfig` of the trained model.
    """

    feature_steps: int = 250
    coarse_steps: int = 500
    sr_steps: int = 300
    batch_size: int = 8
    lr: float = 2e-3
    seed: int = 0
    size: int = 128
    base_channels: int = 16
    sr_channels: int | None = None
    ema_decay: float = 0.995
    pipeline: DiffMatchConfig = dataclasses.field(default_factory=DiffMatchConfig)

    def steps_of(self, stage: str) -> int:
        return {"features": self.feature_steps, "coarse": self.coarse_steps,
                "regressor": self.coarse_steps, "sr": self.sr_steps}[stage]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainSettings:
        d = dict(d)
        if isinstance(d.get("pipeline"), dict):
            d["pipeline"] = DiffMatchConfig(**d["pipeline"])
        return cls(**d)


class PairSource:
    """Training pairs as the engine reads them (``get(positions, generator)``): a fresh
    batch of warped training photographs per step, drawn from the step's generator."""

    def __init__(self, size: int, split: str = "train", strength: WarpStrength | None = None,
                 jitter: float = 1.0):
        self.photos = photo_tensors(split)
        self.size, self.jitter = size, jitter
        self.strength = strength or WarpStrength()

    def get(self, positions: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        seed = torch.randint(2**62, (), generator=generator, device=generator.device)
        gen = torch.Generator().manual_seed(int(seed))
        pb = make_pairs(self.photos, gen, len(positions), self.size, strength=self.strength)
        a, b = pb.a, pb.b
        if self.jitter > 0:
            a = photometric_jitter(a, gen, strength=self.jitter)
            b = photometric_jitter(b, gen, strength=self.jitter)
        return {"a": a, "b": b, "flow": pb.flow, "valid": pb.valid}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


def _coarse_target(batch: dict[str, Tensor], like: Tensor,
                   unit: float) -> tuple[Tensor, Tensor]:
    """The normalised ground-truth flow at the size of ``like`` and its valid mask
    ``(B, 1, h, w)``."""
    h, w = like.shape[-2:]
    x0 = resize_flow(batch["flow"], h, w) / unit
    ok = F.interpolate(batch["valid"][:, None].float(), size=(h, w), mode="nearest")
    return x0, ok


def perturbed_flow(flow: Tensor, gen: torch.Generator, max_error: float = 1.5) -> Tensor:
    """A stand-in for the coarse stage's output when training the super-resolution stage:
    the true coarse flow (cells) plus a smooth random error field (bilinear from a grid four
    times coarser) of a per-pair amplitude uniform in ``[0, max_error]`` cells, plus a little
    white noise, so the stage learns to correct coarse errors of every size it can see in its
    local window."""
    b, _, h, w = flow.shape
    dev = gen.device
    amp = torch.rand(b, 1, 1, 1, generator=gen, device=dev) * max_error
    coarse = torch.randn(b, 2, max(2, h // 4), max(2, w // 4), generator=gen, device=dev)
    smooth = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=True)
    white = 0.1 * torch.randn(flow.shape, generator=gen, device=dev)
    return flow + (amp * smooth + white).to(flow.device)


def _objective(stage: str, pipe: DiffMatch | None, loss: DiffusionLoss | None
               ) -> Callable[[nn.Module, Any, torch.Generator], Tensor]:
    if stage == "features":
        return lambda model, batch, gen: feature_loss(
            model, batch["a"], batch["b"], batch["flow"], batch["valid"], gen)  # type: ignore[arg-type]
    assert pipe is not None
    unit = pipe.config.unit

    def prepare(batch: Any, fine: bool) -> Prepared:
        if pipe.device != batch["a"].device:  # the frozen features follow the batch
            pipe.to(batch["a"].device)
        return pipe.prepare(batch["a"], batch["b"], fine=fine)

    def coarse_obj(model: nn.Module, batch: Any, gen: torch.Generator) -> Tensor:
        prep = prepare(batch, False)
        x0, ok = _coarse_target(batch, prep.init, unit)
        assert loss is not None
        return loss(model, x0, cond=pipe.coarse_cond(prep), generator=gen, mask=ok)

    def regressor_obj(model: nn.Module, batch: Any, gen: torch.Generator) -> Tensor:
        prep = prepare(batch, False)
        x0, ok = _coarse_target(batch, prep.init, unit)
        cond = pipe.coarse_cond(prep)
        t = torch.zeros(x0.shape[0], device=x0.device)
        pred = model(pipe.regressor_input(cond), t, **cond)
        return ((pred - x0) ** 2 * ok).sum() / (ok.sum() * 2).clamp_min(1)

    def sr_obj(model: nn.Module, batch: Any, gen: torch.Generator) -> Tensor:
        assert loss is not None
        prep = prepare(batch, True)
        x0c, _ = _coarse_target(batch, prep.init, unit)
        coarse = perturbed_flow(x0c * unit, gen)
        assert prep.fa is not None
        x0, ok = _coarse_target(batch, prep.fa, 2.0 * unit)
        return loss(model, x0, cond=pipe.sr_cond(prep, coarse), generator=gen, mask=ok)

    return {"coarse": coarse_obj, "regressor": regressor_obj, "sr": sr_obj}[stage]


def _network(stage: str, s: TrainSettings) -> nn.Module:
    p = s.pipeline
    if stage == "features":
        return FeatureNet(FeatureNetConfig())
    if stage in ("coarse", "regressor"):
        return FlowDenoiserNet(FlowNetConfig(
            cost_channels=(2 * p.radius + 1) ** 2, base_channels=s.base_channels,
            lookup_radius=p.radius if p.lookup else 0, lookup_unit=p.unit))
    return FlowDenoiserNet(FlowNetConfig(
        cost_channels=(2 * p.sr_radius + 1) ** 2, feat_channels=FeatureNetConfig().fine_dim,
        base_channels=s.sr_channels or max(8, s.base_channels // 2),
        channel_mults=(1, 2, 2, 4),
        attention_levels=(3,), lookup_radius=p.sr_radius if p.lookup else 0,
        lookup_unit=2.0 * p.unit))


def train_stage(stage: str, s: TrainSettings, run_dir: Path, pipe: DiffMatch | None, *,
                resume: bool = True, ckpt_every: int = 250,
                log: Callable[[str], None] | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Train one stage into ``run_dir`` (resuming its latest checkpoint when ``resume``);
    returns the network with its EMA weights and a summary."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
    with torch.random.fork_rng(devices=[]):  # seeded initialisation, global RNG kept
        torch.manual_seed(s.seed + STAGES.index(stage))
        net = _network(stage, s)
    if stage != "features" and pipe is None:
        raise ValueError(f"stage {stage!r} needs the pipeline with trained features")
    loss = None
    model: nn.Module = net
    if stage in ("coarse", "sr"):
        assert pipe is not None
        model = ModelDenoiser(net, pipe.process, prediction_type="sample")
        loss = DiffusionLoss(pipe.process, target="sample", weighting="uniform",
                             time_sampling="lognormal")
    objective = _objective(stage, pipe, loss)
    steps = s.steps_of(stage)
    config = TrainConfig(
        steps=steps, batch_size=s.batch_size, lr=s.lr, lr_warmup=min(40, steps // 5),
        grad_clip=1.0, ema_decay=s.ema_decay, ema_warmup="power", ema_power=0.75,
        seed=s.seed + 101 * STAGES.index(stage), log_every=max(1, min(50, steps // 20)),
        ckpt_every=ckpt_every, keep_last=1, run_dir=str(run_dir), desc=f"diffmatch-{stage}",
        device="cpu" if not torch.cuda.is_available() else "auto",
        extra={"stage": stage, "settings": s.to_dict()})
    tic = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        trainer = Trainer(model, objective, PairSource(s.size), config)
        summary = trainer.fit(resume=resume)
    if trainer.ema is not None:
        trainer.ema.copy_to()
    net.eval()
    summary["seconds"] = time.perf_counter() - tic
    if log is not None:
        log(f"{stage}: step {summary['step']}, loss {summary['loss']}, "
            f"{summary['seconds']:.0f} s")
    return net.cpu(), summary


def train_pipeline(s: TrainSettings, out: Path, *, resume: bool = True,
                   stages: tuple[str, ...] = STAGES,
                   log: Callable[[str], None] | None = None) -> tuple[DiffMatch, dict[str, Any]]:
    """Train every stage in order into ``out/runs/<stage>`` and return the pipeline and a
    summary (seconds per stage). Finished stages are reloaded from their checkpoints."""
    out = Path(out)
    feats, summaries = None, {}
    pipe = DiffMatch(s.pipeline, None) if s.pipeline.features == "daisy" else None
    for stage in STAGES:
        if stage not in stages:
            continue
        if stage == "features":
            if s.pipeline.features == "daisy":
                continue
            net, summ = train_stage(stage, s, out / "runs" / stage, None, resume=resume,
                                    log=log)
            feats = net
            summaries[stage] = summ
            continue
        if pipe is None:
            assert isinstance(feats, FeatureNet)
            pipe = DiffMatch(s.pipeline, feats)
        net, summ = train_stage(stage, s, out / "runs" / stage, pipe, resume=resume, log=log)
        setattr(pipe, stage, net)
        summaries[stage] = summ
    assert pipe is not None
    return pipe, summaries
