"""Acoustic features and measures: log-mel spectrograms, Griffin-Lim, F0 (YIN), energy, and
the scores of the benchmark (mel-cepstral distortion and log-F0 error after DTW).

* :class:`MelConfig` / :func:`log_mel`: natural-log mel spectrogram (magnitude STFT, periodic
  Hann window, mel filter bank of torchaudio, floor ``1e-5``); 80 bins by default.
* :func:`griffin_lim`: the mel inverted to a linear magnitude (least squares) and its phase
  by Griffin & Lim (1984) through ``torchaudio.transforms.GriffinLim``.
* :func:`yin_f0`: per-frame F0 by YIN (de Cheveigné & Kawahara 2002, steps 1-4: difference
  function, cumulative-mean normalisation, absolute threshold, first local minimum), 0 for
  unvoiced or silent frames.
* :func:`mcd_dtw`: mel-cepstral distortion (Kubichek 1993) between two waves, on cepstra
  ``c_1..c_24`` (DCT-II of the log-mel, ``c_0`` left out) aligned by dynamic time warping;
  in dB, ``(10 / ln 10) sqrt(2 sum (c - c')^2)`` averaged over the path. These cepstra are not
  SPTK's mel-generalised cepstra: values are comparable within polydiff, not across papers.
* :func:`f0_rmse_dtw`: RMSE of F0 in cents (``1200 log2``) over the DTW path's frames voiced in
  both waves, and the voicing-decision error rate.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["DEFAULT_MEL", "MelConfig", "compare_dtw", "dtw_path", "energy", "f0_rmse_dtw",
           "griffin_lim", "log_mel", "mcd_dtw", "mel_cepstrum", "yin_f0"]

LOG_FLOOR = 1e-5


@dataclass(frozen=True)
class MelConfig:
    """STFT and mel settings (defaults suit 8 kHz telephone-band speech: 16 ms hop)."""

    sample_rate: int = 8000
    n_fft: int = 512
    win_length: int = 512
    hop_length: int = 128
    n_mels: int = 80
    f_min: float = 0.0
    f_max: float | None = None

    @property
    def frames_per_second(self) -> float:
        return self.sample_rate / self.hop_length

    def num_frames(self, num_samples: int) -> int:
        """Frames of a wave of ``num_samples`` samples (centred STFT)."""
        return num_samples // self.hop_length + 1


#: The default settings (8 kHz, 80 bins, 16 ms hop).
DEFAULT_MEL = MelConfig()


@functools.lru_cache(maxsize=8)
def _mel_fb(cfg: MelConfig) -> Tensor:
    import torchaudio

    return torchaudio.functional.melscale_fbanks(
        cfg.n_fft // 2 + 1, cfg.f_min, cfg.f_max or cfg.sample_rate / 2, cfg.n_mels,
        cfg.sample_rate, norm="slaney", mel_scale="slaney")  # (freqs, mels)


@functools.lru_cache(maxsize=8)
def _window(win_length: int) -> Tensor:
    return torch.hann_window(win_length)


def _magnitude(wave: Tensor, cfg: MelConfig) -> Tensor:
    spec = torch.stft(wave, cfg.n_fft, cfg.hop_length, cfg.win_length,
                      _window(cfg.win_length).to(wave.device), center=True,
                      return_complex=True)
    return spec.abs()


def log_mel(wave: np.ndarray | Tensor, cfg: MelConfig = DEFAULT_MEL) -> Tensor:
    """``(frames, n_mels)`` natural-log mel spectrogram of a mono wave (float32)."""
    x = torch.as_tensor(np.asarray(wave, dtype=np.float32) if not torch.is_tensor(wave)
                        else wave, dtype=torch.float32)
    mel = _magnitude(x, cfg).T @ _mel_fb(cfg).to(x.device)
    return torch.log(mel.clamp_min(LOG_FLOOR))


def energy(wave: np.ndarray | Tensor, cfg: MelConfig = DEFAULT_MEL) -> Tensor:
    """``(frames,)`` log of the L2 norm of each STFT frame's magnitude (FastSpeech 2's
    energy, in log units)."""
    x = torch.as_tensor(np.asarray(wave, dtype=np.float32) if not torch.is_tensor(wave)
                        else wave, dtype=torch.float32)
    return torch.log(_magnitude(x, cfg).norm(dim=0).clamp_min(LOG_FLOOR))


@functools.lru_cache(maxsize=4)
def _griffin_lim_ops(cfg: MelConfig, n_iter: int):
    import torchaudio

    inv = torch.linalg.pinv(_mel_fb(cfg).double()).float()  # (mels, freqs), computed once
    gl = torchaudio.transforms.GriffinLim(cfg.n_fft, n_iter, cfg.win_length, cfg.hop_length,
                                          power=1.0, momentum=0.99, rand_init=False)
    return inv, gl


@torch.no_grad()
def griffin_lim(logmel: Tensor, cfg: MelConfig = DEFAULT_MEL, n_iter: int = 32) -> Tensor:
    """A wave ``(samples,)`` from a ``(frames, n_mels)`` log-mel: the linear magnitude by the
    filter bank's pseudo-inverse (least squares, clipped at 0), the phase by Griffin & Lim
    (1984) through ``torchaudio.transforms.GriffinLim`` (32 iterations, momentum 0.99)."""
    inv, gl = _griffin_lim_ops(cfg, n_iter)
    mag = (torch.exp(logmel.float().cpu()) @ inv).clamp_min(0.0).T
    wave = gl(mag.unsqueeze(0))[0]
    peak = float(wave.abs().max())
    return wave / peak * 0.95 if peak > 0.95 else wave


def yin_f0(wave: np.ndarray | Tensor, cfg: MelConfig = DEFAULT_MEL, *, f_min: float = 60.0,
           f_max: float = 500.0, threshold: float = 0.15, silence_db: float = -45.0
           ) -> Tensor:
    """``(frames,)`` F0 in Hz by YIN (module docstring), frames aligned with :func:`log_mel`
    (centred, hop ``cfg.hop_length``); 0 where unvoiced or more than ``-silence_db`` below
    the loudest frame."""
    x = torch.as_tensor(np.asarray(wave, dtype=np.float32) if not torch.is_tensor(wave)
                        else wave, dtype=torch.float32)
    sr = cfg.sample_rate
    tau_min = max(2, int(sr / f_max))
    tau_max = int(math.ceil(sr / f_min))
    w = max(cfg.win_length // 2, tau_max)  # integration window
    span = w + tau_max
    n_frames = cfg.num_frames(x.numel())
    pad = torch.nn.functional.pad(x, (span // 2, span))
    idx = torch.arange(n_frames)[:, None] * cfg.hop_length + torch.arange(span)[None]
    frames = pad[idx]  # (N, span)
    n = 1 << (2 * span - 1).bit_length()
    fa = torch.fft.rfft(frames, n)
    fb = torch.fft.rfft(frames[:, :w], n)
    r = torch.fft.irfft(fa * fb.conj(), n)[:, : tau_max + 1]  # sum_j x_j x_{j+tau}, j < w
    sq = torch.cumsum(frames.square(), 1)
    sq = torch.cat([torch.zeros(n_frames, 1), sq], 1)
    e0 = sq[:, w:w + 1]
    taus = torch.arange(tau_max + 1)
    e_tau = sq[:, taus + w] - sq[:, taus]
    d = (e0 + e_tau - 2 * r).clamp_min(0.0)
    d[:, 0] = 0.0
    cum = torch.cumsum(d[:, 1:], 1) / taus[1:]
    dn = torch.ones_like(d)
    dn[:, 1:] = d[:, 1:] / cum.clamp_min(1e-12)
    lags = dn[:, tau_min:]
    below = lags < threshold
    has = below.any(1)
    first = torch.where(has, below.float().argmax(1), lags.argmin(1))
    # descend to the local minimum that follows the first dip below the threshold
    best = first.clone()
    for _ in range(tau_max):
        nxt = (best + 1).clamp(max=lags.shape[1] - 1)
        go = lags.gather(1, nxt[:, None])[:, 0] < lags.gather(1, best[:, None])[:, 0]
        if not bool(go.any()):
            break
        best = torch.where(go, nxt, best)
    tau = (best + tau_min).float()
    # parabolic interpolation of the minimum
    i = best.clamp(1, lags.shape[1] - 2)
    a, b, c = (lags.gather(1, (i + k)[:, None])[:, 0] for k in (-1, 0, 1))
    den = a - 2 * b + c
    shift = torch.where(den.abs() > 1e-9, 0.5 * (a - c) / den, torch.zeros_like(den))
    tau = torch.where((best >= 1) & (best <= lags.shape[1] - 2), tau + shift.clamp(-1, 1), tau)
    f0 = sr / tau
    level = 10 * torch.log10(e0[:, 0] / w + 1e-12)
    voiced = has & (level > level.max() + silence_db) & (f0 >= f_min) & (f0 <= f_max)
    return torch.where(voiced, f0, torch.zeros_like(f0))


def mel_cepstrum(wave: np.ndarray | Tensor, cfg: MelConfig = DEFAULT_MEL,
                 n_coef: int = 24) -> np.ndarray:
    """``(frames, n_coef)`` cepstra ``c_1..c_n`` of the log-mel (natural log of magnitude):
    the DCT-II scaled so that ``log|H| = c_0 / 2 + sum_k c_k cos(pi k (n + 1/2) / N)``, the
    convention under which MCD approximates the log-spectral distance in dB."""
    from scipy.fft import dct

    lm = log_mel(wave, cfg).numpy().astype(np.float64)
    # the cepstrum convention log|H| = c_0 / 2 + sum_k c_k cos(.): sqrt(2 / N) x orthonormal
    return math.sqrt(2.0 / lm.shape[1]) * dct(lm, type=2, norm="ortho", axis=1)[:, 1:n_coef + 1]


def dtw_path(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The minimum-cost monotonic path (steps (1,0), (0,1), (1,1)) through ``cost`` (N, M),
    computed by anti-diagonals; returns index arrays ``(i, j)`` from (0, 0) to (N-1, M-1)."""
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    for k in range(2, n + m + 1):  # cells with i + j = k (1-based)
        i = np.arange(max(1, k - m), min(n, k - 1) + 1)
        j = k - i
        acc[i, j] = cost[i - 1, j - 1] + np.minimum(np.minimum(acc[i - 1, j], acc[i, j - 1]),
                                                    acc[i - 1, j - 1])
    i, j = n, m
    pi, pj = [], []
    while i > 0 and j > 0:
        pi.append(i - 1)
        pj.append(j - 1)
        steps = (acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1])
        k = int(np.argmin(steps))
        i, j = (i - 1, j - 1) if k == 0 else (i - 1, j) if k == 1 else (i, j - 1)
    return np.array(pi[::-1]), np.array(pj[::-1])


def compare_dtw(ref: np.ndarray | Tensor, test: np.ndarray | Tensor,
                cfg: MelConfig = DEFAULT_MEL) -> dict[str, float]:
    """``{"mcd_db", "f0_rmse_cents", "vde"}`` of ``test`` against ``ref`` along one cepstral
    DTW path (the module docstring's measures, computed together)."""
    a, b = mel_cepstrum(ref, cfg), mel_cepstrum(test, cfg)
    cost = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    i, j = dtw_path(cost)
    mcd = float(10.0 / math.log(10.0) * math.sqrt(2.0) * cost[i, j].mean())
    fa, fb = yin_f0(ref, cfg).numpy()[i], yin_f0(test, cfg).numpy()[j]
    both = (fa > 0) & (fb > 0)
    vde = float(np.mean((fa > 0) != (fb > 0)))
    rmse = float(np.sqrt(np.mean((1200.0 * np.log2(fb[both] / fa[both])) ** 2))) \
        if both.any() else float("nan")
    return {"mcd_db": mcd, "f0_rmse_cents": rmse, "vde": vde}


def mcd_dtw(ref: np.ndarray | Tensor, test: np.ndarray | Tensor,
            cfg: MelConfig = DEFAULT_MEL) -> float:
    """Mel-cepstral distortion in dB after DTW (module docstring)."""
    a, b = mel_cepstrum(ref, cfg), mel_cepstrum(test, cfg)
    cost = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    i, j = dtw_path(cost)
    return float(10.0 / math.log(10.0) * math.sqrt(2.0) * cost[i, j].mean())


def f0_rmse_dtw(ref: np.ndarray | Tensor, test: np.ndarray | Tensor,
                cfg: MelConfig = DEFAULT_MEL) -> tuple[float, float]:
    """``(F0 RMSE in cents, voicing decision error)`` along the cepstral DTW path."""
    out = compare_dtw(ref, test, cfg)
    return out["f0_rmse_cents"], out["vde"]
