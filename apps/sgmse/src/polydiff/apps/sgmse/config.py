"""Typed settings of ``sgmse train`` and ``sgmse enhance`` (standard library only).

Both load from a TOML file (keys at the top level) with ``key=value`` overrides through
:func:`polydiff.core.cli.load_config`; command-line flags such as ``--steps 30`` are turned
into such overrides, so every value is checked in one place. ``sgmse train`` writes the
resolved settings beside the run (``<run>/sgmse.toml``), ``sgmse enhance`` into a folder
output (``<out>/sgmse-enhance.toml``).

Example ``train.toml``::

    model = "sgmse"          # or "predictive" (the baseline)
    objective = "score"      # SGMSE+; "epsilon" or "data" are the variants
    preset = "small"         # tiny | small | paper
    steps = 20000
    batch_size = 8
    lr = 1e-4
    segment_frames = 256     # 2.04 s examples at 16 kHz
    network = { base_channels = 48 }   # overrides of the preset's NCSN++ fields
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from typing import Any, Literal

from polydiff.core.samplers.registry import sampler_names

__all__ = ["ENHANCE_FILE", "SAMPLER_NAMES", "TRAIN_FILE", "EnhanceSettings", "TrainSettings",
           "parse_table"]

#: The samplers of core's registry (:mod:`polydiff.core.samplers.registry`, standard library
#: only, so ``--help`` does not import torch) plus ``storm``, which ``sgmse enhance``
#: dispatches through (a test checks the list against the enhance module's).
SAMPLER_NAMES: tuple[str, ...] = (*sampler_names(), "storm")
#: File names of the saved settings.
TRAIN_FILE = "sgmse.toml"
ENHANCE_FILE = "sgmse-enhance.toml"


def parse_table(table: dict[str, Any]) -> dict[str, Any]:
    """Values given as text on the command line (``--set network.base_channels=48``) parsed
    as TOML values (``48`` -> 48, ``[1, 2]`` -> a list); text that is not a TOML value stays
    a string."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, str):
            try:
                value = tomllib.loads(f"v = {value}")["v"]
            except tomllib.TOMLDecodeError:
                value = str(value)
        out[key] = value
    return out


@dataclass
class TrainSettings:
    """What ``sgmse train`` trains and how (defaults: SGMSE+'s paper settings, Richter et
    al. 2023, Sec. V-B, with the ``small`` network so that CPUs can run it).

    Attributes:
        model: ``"sgmse"`` (the score model) or ``"predictive"`` (the baseline).
        objective: SGMSE's training objective (``score`` is SGMSE+; ``edm`` is EDM's
            preconditioning of the same model, which small networks learn far faster).
        preset: NCSN++ size; network: overrides of its fields (an inline TOML table).
        spec: overrides of the STFT settings (``sample_rate`` picks the paper's settings
            scaled to that rate, default the corpus's or 16000; then ``n_fft``,
            ``hop_length``...).
        steps, batch_size, lr, ema: optimizer steps, batch, Adam learning rate, EMA decay
            (0 turns the EMA off).
        segment_frames: STFT frames per training example (256 = 2.04 s at 16 kHz).
        split, layout: the training split folder and the layout (auto, denoise, dereverb).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``, ...; precision: fp32, bf16, fp16.
        seed: initialisation, data order and noise seed.
        log_every, ckpt_every: steps between ``stats.jsonl`` lines and between checkpoints.
        time_budget: stop at this many seconds of wall-clock time (checkpointed; ``--resume``
            continues towards ``steps``); ``none``: no limit.
        compile: run the U-Net through ``torch.compile`` (eager fallback), for GPUs.
        center, center_on: ``predictive`` trains a StoRM-style model whose process and
            condition are the estimate of the predictive model in ``center_on`` (a run or
            model folder) instead of the noisy input.
        init: start from these weights (a model folder, or a run folder: its model/ or the
            EMA weights of its latest checkpoint) instead of a random initialisation.
    """

    model: Literal["sgmse", "predictive"] = "sgmse"
    objective: Literal["score", "epsilon", "data", "edm"] = "score"
    preset: Literal["tiny", "small", "paper"] = "small"
    network: dict[str, Any] = field(default_factory=dict)
    spec: dict[str, Any] = field(default_factory=dict)
    steps: int = 10000
    batch_size: int = 8
    lr: float = 1e-4
    ema: float = 0.999
    segment_frames: int = 256
    split: str = "train"
    layout: Literal["auto", "denoise", "dereverb"] = "auto"
    device: str = "auto"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    seed: int = 0
    log_every: int = 50
    ckpt_every: int = 1000
    time_budget: float | None = None
    compile: bool = False
    center: Literal["noisy", "predictive"] = "noisy"
    center_on: str | None = None
    init: str | None = None

    def __post_init__(self) -> None:
        self.network, self.spec = parse_table(self.network), parse_table(self.spec)
        if self.time_budget is not None and not (self.time_budget > 0
                                                 and math.isfinite(self.time_budget)):
            raise ValueError(f"time_budget must be positive seconds, got {self.time_budget}")
        for name in ("steps", "batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.segment_frames < 2:
            raise ValueError(f"segment_frames must be >= 2, got {self.segment_frames}")
        if self.ckpt_every < 0:
            raise ValueError(f"ckpt_every must be >= 0, got {self.ckpt_every}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema must be in [0, 1), got {self.ema}")


@dataclass
class EnhanceSettings:
    """How ``sgmse enhance`` samples (defaults: SGMSE+'s PC sampler, Richter et al. 2023,
    Sec. IV: 30 reverse-diffusion steps, one annealed Langevin corrector step, r = 0.5).

    Attributes:
        sampler: a core sampler (``pc``, ``ode``, ``dpmpp_2m``, ...); ignored by the
            predictive baseline.
        steps: reverse steps N; corrector_steps, snr: the PC corrector.
        t_start: start the reverse process at this time instead of T (``storm``: from the
            predictive model's estimate; default 0.5 there).
        storm_base: the sampler ``storm`` runs from ``t_start`` (``pc``, or a deterministic
            solver such as ``euler`` or ``dpmpp_2m``).
        chunk_seconds: process files in chunks of this length, cross-faded over
            ``overlap_seconds`` (default 6 s: memory bounded whatever the file's length;
            ``none``: whole files at once).
        device: ``auto``, ``cpu``, ``cuda``...; seed: sampling noise (file k uses seed + k).
    """

    sampler: str = "pc"  # one of SAMPLER_NAMES
    steps: int = 30
    snr: float = 0.5
    corrector_steps: int = 1
    t_start: float | None = None
    storm_base: Literal["pc", "em", "euler", "heun", "ddim", "dpmpp_2m", "dpmpp_3m",
                        "dpmpp_2m_sde", "unipc"] = "pc"
    chunk_seconds: float | None = 6.0
    overlap_seconds: float = 0.5
    device: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLER_NAMES:
            raise ValueError(f"unknown sampler {self.sampler!r}; choose from "
                             f"{', '.join(SAMPLER_NAMES)}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.corrector_steps < 0:
            raise ValueError(f"corrector_steps must be >= 0, got {self.corrector_steps}")
        if not (self.snr > 0 and math.isfinite(self.snr)):
            raise ValueError(f"snr must be positive, got {self.snr}")
        if not (self.overlap_seconds >= 0 and math.isfinite(self.overlap_seconds)):
            raise ValueError(f"overlap_seconds must be >= 0, got {self.overlap_seconds}")
        if self.t_start is not None and not 0.0 < self.t_start <= 1.0:
            raise ValueError(f"t_start must be in (0, 1], got {self.t_start}")
        if self.chunk_seconds is not None and not (
                math.isfinite(self.chunk_seconds)
                and self.chunk_seconds >= 2 * self.overlap_seconds and self.chunk_seconds > 0):
            raise ValueError(f"chunk_seconds must be positive and at least twice "
                             f"overlap_seconds ({self.overlap_seconds}), got {self.chunk_seconds}")
