"""The acoustic model of ProDiff (Huang et al. 2022, "ProDiff: Progressive Fast Diffusion Model
for High-Quality Text-to-Speech", Sec. 3-4 and Fig. 2) and the diffusion vocoder.

:class:`ProDiffAcoustic`:

* phoneme encoder: token + stress + word-start embeddings and sinusoidal positions, then
  FastSpeech's feed-forward Transformer blocks (Ren et al. 2019, "FastSpeech", Sec. 3.1:
  self-attention and a 1-D convolutional feed-forward network, each with a residual
  connection and layer norm); attention is core's :class:`~polydiff.core.nn.transformer.
  SelfAttention` with a key-padding mask;
* variance adaptor (Ren et al. 2021, "FastSpeech 2", Sec. 2.3): duration, pitch and energy
  predictors (two convolutions with ReLU, layer norm and dropout, then a linear layer), pitch
  and energy embedded by a convolution and added to the token states (per token, as FastPitch
  does), and the length regulator (:func:`~polydiff.speech.prodiff.align.length_regulate`);
* decoder: core's :class:`~polydiff.core.nn.WaveNet` over the 80-bin normalised log-mel,
  conditioned on the regulated frame states, predicting the clean mel (``x0``) at any time of
  ProDiff's VP schedule, ``beta(t)`` linear from 0.1 to 40 (:data:`PRODIFF_BETA`; the 4-step
  teacher's grid is ``t_i = i / 4``, ProDiff's ``vpsde`` noise list). The process, loss,
  samplers and distillation are polydiff-core's (:meth:`ProDiffAcoustic.denoiser`).
  ``decoder="regression"`` makes the same network a FastSpeech 2-style regression decoder
  (input zeros at ``t = 0``, trained on the mel MSE): the non-diffusion baseline of equal size.

:class:`DiffVocoder`: a DiffWave-style waveform model (Kong et al. 2021) on core's WaveNet,
made cheap on a CPU by folding the wave into frames of ``fold`` samples (channels), conditioned
on the mel repeated to the folded rate, sampled in a few ancestral steps (FastDiff-style few
step vocoding, Huang et al. 2022).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polydiff.core.denoiser import ModelDenoiser
from polydiff.core.nn.hub import PretrainedMixin, register_model
from polydiff.core.nn.transformer import SelfAttention
from polydiff.core.nn.wavenet import WaveNet, WaveNetConfig
from polydiff.core.processes import VPLinear
from polydiff.speech.prodiff.align import length_regulate
from polydiff.speech.prodiff.features import MelConfig

__all__ = ["AcousticConfig", "DiffVocoder", "FFTBlock", "PRODIFF_BETA", "ProDiffAcoustic",
           "VariancePredictor", "VocoderConfig", "prodiff_process"]

#: ProDiff's VP schedule: ``beta(t) = 0.1 + t (40 - 0.1)``, ``alpha_bar(i / N)`` of its
#: ``vpsde`` noise list.
PRODIFF_BETA = (0.1, 40.0)


def prodiff_process(beta_min: float = PRODIFF_BETA[0], beta_max: float = PRODIFF_BETA[1]
                    ) -> VPLinear:
    """ProDiff's VP process (core's :class:`~polydiff.core.processes.VPLinear`); it reaches
    ``sigma = 0`` at ``t = 0``, where sampling grids end."""
    return VPLinear(beta_min=beta_min, beta_max=beta_max, t_min=1e-3)


@dataclass
class AcousticConfig:
    """Settings of :class:`ProDiffAcoustic` (``symbols``: the token inventory, specials first;
    the normalisation statistics are the training corpus's)."""

    symbols: tuple[str, ...] = ()
    language: str = "es-419"
    sample_rate: int = 8000
    n_fft: int = 512
    win_length: int = 512
    hop_length: int = 128
    n_mels: int = 80
    hidden: int = 128
    encoder_layers: int = 3
    heads: int = 2
    ffn_hidden: int = 256
    ffn_kernel: int = 5
    predictor_hidden: int = 128
    predictor_kernel: int = 3
    dropout: float = 0.1
    decoder: str = "diffusion"
    denoiser_channels: int = 64
    denoiser_layers: int = 12
    denoiser_cycle: int = 4
    time_hidden: int = 128
    beta_min: float = PRODIFF_BETA[0]
    beta_max: float = PRODIFF_BETA[1]
    mel_mean: tuple[float, ...] = ()
    mel_std: tuple[float, ...] = ()
    pitch_stats: tuple[float, float] = (0.0, 1.0)
    energy_stats: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        if self.decoder not in ("diffusion", "regression"):
            raise ValueError(f"decoder must be 'diffusion' or 'regression', got {self.decoder!r}")
        if self.hidden % self.heads:
            raise ValueError("hidden must be divisible by heads")

    @property
    def mel(self) -> MelConfig:
        return MelConfig(self.sample_rate, self.n_fft, self.win_length, self.hop_length,
                         self.n_mels)

    def denoiser_config(self) -> WaveNetConfig:
        return WaveNetConfig(in_channels=self.n_mels, residual_channels=self.denoiser_channels,
                             num_layers=self.denoiser_layers, dilation_cycle=self.denoiser_cycle,
                             time_embed_dim=64, time_hidden=self.time_hidden,
                             cond_channels=self.hidden)


def _sinusoid(n: int, dim: int, device: torch.device) -> Tensor:
    pos = torch.arange(n, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32)
                     * (-math.log(10000.0) / dim))
    pe = torch.zeros(n, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)
    return pe


class FFTBlock(nn.Module):
    """FastSpeech's feed-forward Transformer block: masked self-attention and a two-layer
    1-D convolutional network (kernel ``kernel``, then 1), each followed by dropout, a
    residual connection and layer norm (post-norm, Ren et al. 2019, Fig. 1b)."""

    def __init__(self, hidden: int, heads: int, ffn_hidden: int, kernel: int, dropout: float):
        super().__init__()
        self.attn = SelfAttention(hidden, heads)
        self.norm1 = nn.LayerNorm(hidden)
        self.conv1 = nn.Conv1d(hidden, ffn_hidden, kernel, padding=kernel // 2)
        self.conv2 = nn.Conv1d(ffn_hidden, hidden, 1)
        self.norm2 = nn.LayerNorm(hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        m = mask[..., None].to(x.dtype)
        x = self.norm1(x + self.dropout(self.attn(x, mask))) * m
        y = self.conv2(F.relu(self.conv1(x.transpose(1, 2)))).transpose(1, 2)
        return self.norm2(x + self.dropout(y)) * m


class VariancePredictor(nn.Module):
    """FastSpeech 2's variance predictor: (conv, ReLU, layer norm, dropout) x 2, linear."""

    def __init__(self, hidden: int, filters: int, kernel: int, dropout: float):
        super().__init__()
        self.conv1 = nn.Conv1d(hidden, filters, kernel, padding=kernel // 2)
        self.norm1 = nn.LayerNorm(filters)
        self.conv2 = nn.Conv1d(filters, filters, kernel, padding=kernel // 2)
        self.norm2 = nn.LayerNorm(filters)
        self.out = nn.Linear(filters, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        h = self.dropout(self.norm1(F.relu(self.conv1(x.transpose(1, 2))).transpose(1, 2)))
        h = self.dropout(self.norm2(F.relu(self.conv2(h.transpose(1, 2))).transpose(1, 2)))
        return self.out(h)[..., 0] * mask.to(x.dtype)


@register_model
class ProDiffAcoustic(PretrainedMixin, nn.Module):
    """Text tokens -> normalised log-mel (module docstring)."""

    config_class = AcousticConfig
    config: AcousticConfig
    mel_mean: Tensor
    mel_std: Tensor

    def __init__(self, config: AcousticConfig):
        super().__init__()
        self.config = cfg = config
        if len(cfg.symbols) < 2:
            raise ValueError("the config needs the token inventory (symbols)")
        h = cfg.hidden
        self.token_emb = nn.Embedding(len(cfg.symbols), h, padding_idx=0)
        self.stress_emb = nn.Embedding(3, h)
        self.word_emb = nn.Embedding(2, h)
        self.encoder = nn.ModuleList([FFTBlock(h, cfg.heads, cfg.ffn_hidden, cfg.ffn_kernel,
                                               cfg.dropout) for _ in range(cfg.encoder_layers)])
        args = (h, cfg.predictor_hidden, cfg.predictor_kernel, cfg.dropout)
        self.duration_predictor = VariancePredictor(*args)
        self.pitch_predictor = VariancePredictor(*args)
        self.energy_predictor = VariancePredictor(*args)
        self.pitch_emb = nn.Conv1d(1, h, 3, padding=1)
        self.energy_emb = nn.Conv1d(1, h, 3, padding=1)
        self.net = WaveNet(cfg.denoiser_config())
        self.register_buffer("mel_mean", torch.tensor(cfg.mel_mean or [0.0] * cfg.n_mels),
                             persistent=False)
        self.register_buffer("mel_std", torch.tensor(cfg.mel_std or [1.0] * cfg.n_mels),
                             persistent=False)

    # ------------------------------------------------------------------ pieces
    @property
    def process(self) -> VPLinear:
        return prodiff_process(self.config.beta_min, self.config.beta_max)

    def denoiser(self, net: nn.Module | None = None) -> ModelDenoiser:
        """Core's x0-predicting denoiser around ``net`` (default: this model's decoder; a
        distilled student's WaveNet otherwise); call it with ``cond=frame_states``."""
        return ModelDenoiser(net if net is not None else self.net, self.process,
                             prediction_type="sample")

    def normalize_mel(self, logmel: Tensor) -> Tensor:
        return (logmel - self.mel_mean) / self.mel_std

    def denormalize_mel(self, mel: Tensor) -> Tensor:
        return mel * self.mel_std + self.mel_mean

    def encode(self, ids: Tensor, stress: Tensor, word_start: Tensor, mask: Tensor) -> Tensor:
        """``(B, N, hidden)`` token states."""
        x = self.token_emb(ids) + self.stress_emb(stress) + self.word_emb(word_start.long())
        x = x + _sinusoid(ids.shape[1], x.shape[-1], x.device)[None]
        x = x * mask[..., None].to(x.dtype)
        for block in self.encoder:
            x = block(x, mask)
        return x

    def adapt(self, h: Tensor, mask: Tensor, *, durations: Tensor | None = None,
              pitch: Tensor | None = None, energy: Tensor | None = None,
              pace: float = 1.0) -> dict[str, Tensor]:
        """The variance adaptor: predictions (``log_dur``, ``pitch``, ``energy``, per token)
        and the frame states ``cond`` ``(B, hidden, T)`` with ``frame_mask`` ``(B, T)``. Given
        targets are used (teacher forcing); otherwise the predictions (durations rounded,
        at least one frame per real token, scaled by ``pace``)."""
        log_dur = self.duration_predictor(h, mask)
        p_hat = self.pitch_predictor(h, mask)
        e_hat = self.energy_predictor(h, mask)
        if durations is None:
            durations = torch.clamp(torch.round(torch.expm1(log_dur.clamp(max=8.0)) * pace),
                                    min=1.0).long() * mask.long()
        p = p_hat if pitch is None else pitch
        e = e_hat if energy is None else energy
        h = h + self.pitch_emb(p[:, None]).transpose(1, 2) \
            + self.energy_emb(e[:, None]).transpose(1, 2)
        frames, frame_mask = length_regulate(h * mask[..., None].to(h.dtype), durations)
        return {"log_dur": log_dur, "pitch": p_hat, "energy": e_hat, "durations": durations,
                "cond": frames.transpose(1, 2), "frame_mask": frame_mask}

    def regress(self, cond: Tensor) -> Tensor:
        """The regression decoder: ``(B, n_mels, T)`` normalised mel from the frame states."""
        x = torch.zeros(cond.shape[0], self.config.n_mels, cond.shape[-1], device=cond.device,
                        dtype=cond.dtype)
        return self.net(x, torch.zeros(cond.shape[0], device=cond.device), cond=cond)

    def forward(self, ids: Tensor, stress: Tensor, word_start: Tensor, mask: Tensor,
                **targets: Any) -> dict[str, Tensor]:
        """Encoder and variance adaptor (see :meth:`adapt`)."""
        return self.adapt(self.encode(ids, stress, word_start, mask), mask, **targets)


VOCODER_CONDITIONS = ("mel", "mel+gl")


@dataclass
class VocoderConfig:
    """Settings of :class:`DiffVocoder`. ``condition``: ``"mel"`` (DiffWave's: the mel alone)
    or ``"mel+gl"`` (the mel and the Griffin-Lim wave of the same mel, folded like the
    output, ``gl_iters`` iterations). Sampling: ``steps`` of core's DDIM with ``eta``
    (1: ancestral) on a ``grid`` of core's kinds (``"uniform"`` down to ``t = 0``;
    ``"logsnr"``: log-SNR spacing down to ``t_end``, then a last step to ``t = 0``)."""

    sample_rate: int = 8000
    hop_length: int = 128
    n_mels: int = 80
    fold: int = 32
    channels: int = 48
    layers: int = 8
    cycle: int = 4
    time_hidden: int = 128
    beta_min: float = 0.1
    beta_max: float = 20.0
    prediction: str = "epsilon"
    steps: int = 4
    eta: float = 1.0
    wave_scale: float = 4.0
    mel_mean: tuple[float, ...] = ()
    mel_std: tuple[float, ...] = ()
    condition: str = "mel"
    n_fft: int = 512
    win_length: int = 512
    gl_iters: int = 32
    grid: str = "uniform"
    t_end: float = 1e-3

    def __post_init__(self) -> None:
        if self.hop_length % self.fold:
            raise ValueError(f"fold {self.fold} must divide the hop length {self.hop_length}")
        if self.condition not in VOCODER_CONDITIONS:
            raise ValueError(f"condition must be one of {VOCODER_CONDITIONS}, got "
                             f"{self.condition!r}")
        if self.grid not in ("uniform", "logsnr"):
            raise ValueError(f"grid must be 'uniform' or 'logsnr', got {self.grid!r}")

    @property
    def mel(self) -> MelConfig:
        return MelConfig(self.sample_rate, self.n_fft, self.win_length, self.hop_length,
                         self.n_mels)

    @property
    def cond_channels(self) -> int:
        return self.n_mels + (self.fold if self.condition == "mel+gl" else 0)


@register_model
class DiffVocoder(PretrainedMixin, nn.Module):
    """Mel -> wave with a few-step diffusion model (module docstring). The wave is scaled by
    ``wave_scale`` (speech peaks near 0.25) so the data have roughly unit scale."""

    config_class = VocoderConfig
    config: VocoderConfig
    mel_mean: Tensor
    mel_std: Tensor

    def __init__(self, config: VocoderConfig):
        super().__init__()
        self.config = cfg = config
        self.net = WaveNet(WaveNetConfig(in_channels=cfg.fold, residual_channels=cfg.channels,
                                         num_layers=cfg.layers, dilation_cycle=cfg.cycle,
                                         time_embed_dim=64, time_hidden=cfg.time_hidden,
                                         cond_channels=cfg.cond_channels))
        self.register_buffer("mel_mean", torch.tensor(cfg.mel_mean or [0.0] * cfg.n_mels),
                             persistent=False)
        self.register_buffer("mel_std", torch.tensor(cfg.mel_std or [1.0] * cfg.n_mels),
                             persistent=False)

    @property
    def process(self) -> VPLinear:
        return VPLinear(beta_min=self.config.beta_min, beta_max=self.config.beta_max)

    def denoiser(self) -> ModelDenoiser:
        return ModelDenoiser(self.net, self.process, prediction_type=self.config.prediction)

    def fold(self, wave: Tensor) -> Tensor:
        """``(B, samples)`` -> ``(B, fold, samples / fold)`` scaled by ``wave_scale``."""
        b, n = wave.shape
        f = self.config.fold
        return wave.reshape(b, n // f, f).transpose(1, 2) * self.config.wave_scale

    def unfold(self, x: Tensor) -> Tensor:
        return x.transpose(1, 2).reshape(x.shape[0], -1) / self.config.wave_scale

    def griffin_lim(self, logmel: Tensor) -> Tensor:
        """``(B, frames, n_mels)`` log-mel -> ``(B, frames * hop)`` Griffin-Lim waves (the
        ``"mel+gl"`` condition; zero-padded by the last hop)."""
        from polydiff.speech.prodiff.features import griffin_lim

        n = logmel.shape[1] * self.config.hop_length
        waves = [F.pad(w, (0, max(n - w.numel(), 0)))[:n] for w in
                 (griffin_lim(lm, self.config.mel, self.config.gl_iters) for lm in logmel)]
        return torch.stack(waves).to(logmel.device)

    def cond(self, logmel: Tensor, gl: Tensor | None = None) -> Tensor:
        """``(B, frames, n_mels)`` log-mel -> ``(B, cond_channels, frames * hop / fold)``: the
        normalised mel repeated to the folded rate, then (``"mel+gl"``) the folded
        Griffin-Lim wave ``gl`` ``(B, frames * hop)`` (computed here when not given)."""
        m = (logmel - self.mel_mean) / self.mel_std
        rep = self.config.hop_length // self.config.fold
        c = m.transpose(1, 2).repeat_interleave(rep, dim=-1)
        if self.config.condition == "mel+gl":
            c = torch.cat([c, self.fold(self.griffin_lim(logmel) if gl is None else gl)], 1)
        return c

    def sampling_grid(self, steps: int | None = None, device: torch.device | None = None
                      ) -> Tensor:
        """The descending time grid of ``steps`` (default ``config.steps``) sampling steps."""
        from polydiff.core.grids import time_grid

        cfg, n = self.config, steps or self.config.steps
        if cfg.grid == "logsnr" and n > 1:
            return time_grid(self.process, n, "logsnr", t_end=cfg.t_end, final_zero=True,
                             device=device)
        return time_grid(self.process, n, "uniform", t_end=0.0, device=device)

    @torch.no_grad()
    def vocode(self, logmel: Tensor, *, steps: int | None = None,
               generator: torch.Generator | None = None) -> Tensor:
        """A wave ``(frames * hop,)`` from a ``(frames, n_mels)`` log-mel (natural log)."""
        from polydiff.core.samplers import sample_ddim

        cfg = self.config
        c = self.cond(logmel.float()[None].to(self.mel_mean.device))
        proc = self.process
        x = proc.prior_sample((1, cfg.fold, c.shape[-1]), generator=generator,
                              device=c.device)
        ts = self.sampling_grid(steps, c.device)
        x = sample_ddim(self.denoiser(), x, ts, cond={"cond": c}, eta=cfg.eta,
                        generator=generator, disable=True)
        return self.unfold(x)[0].clamp(-1.0, 1.0)
