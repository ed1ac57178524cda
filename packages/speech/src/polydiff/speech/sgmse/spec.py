"""SGMSE+'s complex-spectrogram representation (pure functions under a thin wrapper).

The score model of SGMSE / SGMSE+ works on complex STFT coefficients (Welker, Richter and
Gerkmann, "Speech Enhancement with Score-Based Generative Models in the Complex STFT Domain",
Interspeech 2022; Richter, Welker, Lemercier, Lay and Gerkmann, "Speech Enhancement and
Dereverberation with Diffusion-Based Generative Models", IEEE/ACM TASLP 2023, Sec. IV-B):

* STFT with a window of 510 samples (``n_fft=510``), hop 128 and a periodic Hann window,
  centred (the signal is reflect-padded by ``n_fft // 2`` on both sides), so 16 kHz audio
  gives ``n_fft // 2 + 1 = 256`` frequency bins, a size that halves cleanly in a U-Net;
* amplitude compression of every coefficient, ``c~ = beta |c|^alpha e^{i angle(c)}`` with
  ``alpha = 0.5`` and ``beta = 0.15`` (Richter et al. 2023, Eq. 29), undone exactly by
  ``c = (|c~| / beta)^{1/alpha} e^{i angle(c~)}``;
* the time-domain input is normalised by the noisy signal's peak before the transform, and
  the estimate is multiplied back by the same factor (:func:`normalize_by_noisy`);
* at inference the frame axis is zero-padded on the right to a multiple the network needs
  (:func:`pad_frames`) and cropped afterwards (:func:`crop_frames`).

Shapes: waves are ``(..., T)``, spectrograms ``(..., F, N)`` with ``F = n_fft // 2 + 1``
frequency bins and ``N = 1 + T // hop_length`` frames; leading (batch/channel) dimensions are
kept, so ``(B, T) -> (B, F, N)`` and ``(T,) -> (F, N)``. Float32 and float64 both work (the
spectrogram is complex64 or complex128 accordingly).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "WINDOWS", "Representation", "SpecConfig", "compress", "crop_frames", "decompress",
    "denormalize", "get_window", "normalize_by_noisy", "pad_frames", "to_spec", "to_wave",
]

WINDOWS = ("hann", "sqrthann")


@dataclass
class SpecConfig:
    """SGMSE+'s STFT and compression settings (Richter et al. 2023, Sec. IV-B).

    Attributes:
        n_fft: window and FFT length in samples (510: 256 frequency bins).
        hop_length: frame shift in samples (128).
        window: ``"hann"`` (periodic Hann, the paper's) or ``"sqrthann"`` (its square root).
        alpha: compression exponent of the magnitude (0.5); 1 disables compression.
        beta: scale applied after compression (0.15).
        sample_rate: the rate the model works at, in Hz (16000); audio is resampled to it.
        pad_mode: how :func:`torch.stft` pads the ends when centring (``"reflect"``, as
            ``torch.stft``'s default; ``"constant"`` pads zeros and accepts short inputs).
    """

    n_fft: int = 510
    hop_length: int = 128
    window: str = "hann"
    alpha: float = 0.5
    beta: float = 0.15
    sample_rate: int = 16000
    pad_mode: str = "reflect"

    def __post_init__(self) -> None:
        if self.n_fft < 2:
            raise ValueError(f"n_fft must be >= 2, got {self.n_fft}")
        if not 1 <= self.hop_length <= self.n_fft:
            raise ValueError(f"hop_length must be in [1, n_fft={self.n_fft}], "
                             f"got {self.hop_length}")
        if self.window not in WINDOWS:
            raise ValueError(f"window must be one of {', '.join(WINDOWS)}, got {self.window!r}")
        if not (self.alpha > 0 and math.isfinite(self.alpha)):
            raise ValueError(f"alpha must be positive, got {self.alpha}")
        if not (self.beta > 0 and math.isfinite(self.beta)):
            raise ValueError(f"beta must be positive, got {self.beta}")
        if self.sample_rate < 1000:
            raise ValueError(f"sample_rate must be >= 1000 Hz, got {self.sample_rate}")
        if self.pad_mode not in ("reflect", "constant", "replicate", "circular"):
            raise ValueError(f"pad_mode must be reflect, constant, replicate or circular, "
                             f"got {self.pad_mode!r}")

    @property
    def n_freq(self) -> int:
        """Number of frequency bins, ``n_fft // 2 + 1`` (256 for the defaults)."""
        return self.n_fft // 2 + 1

    def num_frames(self, length: int) -> int:
        """Frames of a centred STFT of ``length`` samples: ``1 + length // hop_length``."""
        return 1 + int(length) // self.hop_length

    @classmethod
    def for_sample_rate(cls, sample_rate: int, **overrides: object) -> SpecConfig:
        """The paper's settings scaled to ``sample_rate``: the same 32 ms window and 8 ms hop
        (``n_fft = 510``, hop 128 at 16 kHz; ``n_fft = 254``, hop 64 and 128 bins at 8 kHz;
        ``n_fft`` kept even with ``n_fft // 2 + 1`` a power of two where possible)."""
        sr = int(sample_rate)
        if sr == 16000:
            base = cls()
        else:
            bins = 1 << max(3, round(math.log2(256 * sr / 16000)))
            base = cls(n_fft=2 * (bins - 1), hop_length=max(1, round(128 * sr / 16000)),
                       sample_rate=sr)
        return cls(**{**base.__dict__, **overrides})  # type: ignore[arg-type]

    def segment_length(self, frames: int) -> int:
        """Samples whose centred STFT has exactly ``frames`` frames and no partial last hop:
        ``(frames - 1) * hop_length`` (SGMSE's training length; 32640 for 256 frames)."""
        return (int(frames) - 1) * self.hop_length


def _config(config: SpecConfig | None) -> SpecConfig:
    return SpecConfig() if config is None else config


def get_window(kind: str, n_fft: int, *, dtype: torch.dtype = torch.float32,
               device: torch.device | str | None = None) -> Tensor:
    """The analysis/synthesis window: periodic Hann ``w[n] = sin^2(pi n / n_fft)``
    (``"hann"``) or its square root (``"sqrthann"``)."""
    w = torch.hann_window(n_fft, periodic=True, dtype=dtype, device=device)
    if kind == "hann":
        return w
    if kind == "sqrthann":
        return w.sqrt()
    raise ValueError(f"window must be one of {', '.join(WINDOWS)}, got {kind!r}")


def _real_dtype(x: Tensor) -> torch.dtype:
    if x.is_complex():
        return torch.float64 if x.dtype == torch.complex128 else torch.float32
    return x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32


def to_spec(wave: Tensor, config: SpecConfig | None = None) -> Tensor:
    """Complex centred STFT ``X[..., f, n] = sum_m x_pad[n hop + m] w[m] e^{-2 pi i f m / n_fft}``
    of ``wave`` ``(..., T)`` -> ``(..., F, N)`` (no compression; see :func:`compress`)."""
    cfg = _config(config)
    if wave.is_complex():
        raise TypeError("to_spec expects a real waveform, got a complex tensor")
    if wave.ndim < 1:
        raise ValueError("to_spec expects a waveform of shape (..., T)")
    dtype = _real_dtype(wave)
    x = wave.to(dtype)
    length = x.shape[-1]
    if cfg.pad_mode == "reflect" and length <= cfg.n_fft // 2:
        raise ValueError(f"waveform of {length} samples is too short for a centred STFT with "
                         f"reflect padding (need > {cfg.n_fft // 2}); use pad_mode='constant'")
    lead = x.shape[:-1]
    spec = torch.stft(x.reshape(-1, length), n_fft=cfg.n_fft, hop_length=cfg.hop_length,
                      win_length=cfg.n_fft,
                      window=get_window(cfg.window, cfg.n_fft, dtype=dtype, device=x.device),
                      center=True, pad_mode=cfg.pad_mode, normalized=False, onesided=True,
                      return_complex=True)
    return spec.reshape(*lead, *spec.shape[-2:])


def to_wave(spec: Tensor, length: int, config: SpecConfig | None = None) -> Tensor:
    """Inverse of :func:`to_spec` (weighted overlap-add, ``torch.istft``): ``(..., F, N)`` ->
    ``(..., length)``. Exact (to rounding) for spectrograms of real signals."""
    cfg = _config(config)
    if not spec.is_complex():
        raise TypeError("to_wave expects a complex spectrogram")
    if spec.ndim < 2 or spec.shape[-2] != cfg.n_freq:
        raise ValueError(f"to_wave expects a spectrogram (..., {cfg.n_freq}, N), "
                         f"got shape {tuple(spec.shape)}")
    lead = spec.shape[:-2]
    dtype = _real_dtype(spec)
    wave = torch.istft(spec.reshape(-1, *spec.shape[-2:]), n_fft=cfg.n_fft,
                       hop_length=cfg.hop_length, win_length=cfg.n_fft,
                       window=get_window(cfg.window, cfg.n_fft, dtype=dtype, device=spec.device),
                       center=True, normalized=False, onesided=True, length=int(length))
    return wave.reshape(*lead, int(length))


def compress(spec: Tensor, alpha: float = 0.5, beta: float = 0.15) -> Tensor:
    """Amplitude compression ``beta |c|^alpha e^{i angle(c)}`` (Richter et al. 2023, Eq. 29);
    zero stays zero (the phase of 0 is taken as 0, no NaN)."""
    if alpha == 1.0:
        return spec * beta
    return torch.polar(spec.abs().pow(alpha) * beta, spec.angle())


def decompress(spec: Tensor, alpha: float = 0.5, beta: float = 0.15) -> Tensor:
    """Exact inverse of :func:`compress`: ``(|c~| / beta)^{1/alpha} e^{i angle(c~)}``."""
    if alpha == 1.0:
        return spec / beta
    return torch.polar((spec.abs() / beta).pow(1.0 / alpha), spec.angle())


def pad_frames(spec: Tensor, multiple: int) -> tuple[Tensor, int]:
    """Zero-pad the frame (last) axis on the right to a multiple of ``multiple`` (the
    network's down-sampling factor); returns the padded spectrogram and the original number
    of frames for :func:`crop_frames`."""
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    n = spec.shape[-1]
    extra = (-n) % multiple
    if extra:
        spec = torch.nn.functional.pad(spec, (0, extra))
    return spec, n


def crop_frames(spec: Tensor, n: int) -> Tensor:
    """Undo :func:`pad_frames`: keep the first ``n`` frames."""
    return spec[..., :n]


def normalize_by_noisy(noisy: Tensor, *others: Tensor) -> tuple[tuple[Tensor, ...], Tensor]:
    """Divide ``noisy`` and every other wave ``(..., T)`` by the noisy input's peak
    ``max_t |y[t]|`` (per example over the time axis, as SGMSE's ``normalize="noisy"``).

    Returns ``((noisy / f, *others / f), f)`` with ``f`` of shape ``(..., 1)``; multiply an
    estimate by ``f`` (:func:`denormalize`) to return to the input's scale. A silent input
    gets ``f = 1`` (nothing to normalise; no division by zero).
    """
    f = noisy.abs().amax(dim=-1, keepdim=True)
    f = torch.where(f > 0, f, torch.ones_like(f))
    return (noisy / f, *(o / f for o in others)), f


def denormalize(wave: Tensor, factor: Tensor) -> Tensor:
    """Undo :func:`normalize_by_noisy`: ``wave * factor``."""
    return wave * factor


class Representation:
    """SGMSE+'s forward and inverse representation: ``forward(wave)`` is
    ``compress(to_spec(wave))`` and ``inverse(spec, length)`` is
    ``to_wave(decompress(spec), length)`` (Richter et al. 2023, Sec. IV-B).

    Stateless apart from its :class:`SpecConfig` (the window is built per call in the
    input's dtype and device), so it needs no place in a checkpoint beyond the config.
    """

    def __init__(self, config: SpecConfig | None = None):
        self.config = _config(config)

    @property
    def n_freq(self) -> int:
        """Frequency bins of the spectrogram (256 for the defaults)."""
        return self.config.n_freq

    def num_frames(self, length: int) -> int:
        """Frames of the spectrogram of ``length`` samples."""
        return self.config.num_frames(length)

    def forward(self, wave: Tensor) -> Tensor:
        """``(..., T)`` real wave -> ``(..., F, N)`` compressed complex spectrogram."""
        cfg = self.config
        return compress(to_spec(wave, cfg), cfg.alpha, cfg.beta)

    __call__ = forward

    def inverse(self, spec: Tensor, length: int) -> Tensor:
        """``(..., F, N)`` compressed complex spectrogram -> ``(..., length)`` real wave."""
        cfg = self.config
        return to_wave(decompress(spec, cfg.alpha, cfg.beta), length, cfg)

    def __repr__(self) -> str:
        return f"Representation({self.config!r})"
