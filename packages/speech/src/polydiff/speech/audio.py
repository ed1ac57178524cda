"""Audio files for the speech apps: reading with validation, resampling, atomic writing.

NumPy, SciPy and ``soundfile`` only (no torch), so evaluation can run without it.

Reading (:func:`read_audio`) returns a mono ``float32`` array ``(T,)`` and its sample rate,
and rejects bad input with one line naming the file and the problem (:class:`AudioError`, a
``ValueError``, so ``polydiff.core.cli.run_cli`` reports it with exit code 2):

* a missing file, a folder, or a file ``soundfile`` cannot decode ("not audio");
* an empty file (0 samples) or one shorter than ``min_samples`` (after resampling);
* a silent file (every sample exactly zero): nothing to enhance or to score, and it would
  make peak normalisation divide by zero; pass ``allow_silent=True`` to accept it;
* NaN or infinite samples (float WAV files can hold them);
* a sample rate below :data:`MIN_SAMPLE_RATE` (1 kHz); any other positive rate is accepted
  and resampled exactly (polyphase, rational factor ``sample_rate / rate``) if
  ``sample_rate`` is given;
* several channels: averaged to mono with ``mono="downmix"`` (the default), rejected with
  ``mono="error"``.

Writing (:func:`write_audio`) goes through a temporary file renamed into place, so a failed
or interrupted write never leaves a partial file; samples outside ``[-1, 1]`` are clipped,
counted, logged and the count returned.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from polydiff.core.utils import atomic_path

__all__ = [
    "AUDIO_EXTENSIONS", "MIN_SAMPLE_RATE", "AudioError", "audio_info", "list_audio",
    "read_audio", "resample", "write_audio",
]

logger = logging.getLogger(__name__)

#: File name suffixes treated as audio by :func:`list_audio` (what libsndfile reads).
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
#: Lowest sample rate accepted (Hz); lower rates are almost surely a wrong header.
MIN_SAMPLE_RATE = 1000

_SUBTYPES = {"PCM_16": "PCM_16", "PCM_24": "PCM_24", "FLOAT": "FLOAT", "float": "FLOAT",
             "pcm16": "PCM_16", "int16": "PCM_16"}


class AudioError(ValueError):
    """An audio file that cannot be used; the message is one line naming the file."""


def _as_numpy(wave: Any) -> np.ndarray:
    if hasattr(wave, "detach"):  # a torch tensor, without importing torch
        wave = wave.detach().cpu().numpy()
    return np.asarray(wave)


def resample(wave: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Resample along the last axis by the exact rational factor ``new_rate / orig_rate``
    (polyphase FIR filtering, ``scipy.signal.resample_poly``); output length
    ``ceil(T new_rate / orig_rate)``. Returns the input unchanged when the rates match."""
    orig_rate, new_rate = int(orig_rate), int(new_rate)
    if orig_rate <= 0 or new_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_rate} -> {new_rate}")
    if orig_rate == new_rate:
        return wave
    from scipy.signal import resample_poly

    g = math.gcd(orig_rate, new_rate)
    out = resample_poly(np.asarray(wave, dtype=np.float64), new_rate // g, orig_rate // g,
                        axis=-1)
    return out.astype(wave.dtype if wave.dtype in (np.float32, np.float64) else np.float32)


def audio_info(path: str | os.PathLike[str]) -> tuple[int, int, int]:
    """``(frames, sample_rate, channels)`` from the file header, without decoding."""
    import soundfile as sf

    p = Path(path)
    _check_path(p)
    try:
        info = sf.info(str(p))
    except (RuntimeError, sf.SoundFileError) as e:  # LibsndfileError is a RuntimeError
        raise AudioError(f"{p}: not a readable audio file ({_reason(e)})") from None
    return int(info.frames), int(info.samplerate), int(info.channels)


def _reason(e: BaseException) -> str:
    text = getattr(e, "error_string", None) or str(e)  # libsndfile's own words if present
    return " ".join(str(text).split()).rstrip(".") or type(e).__name__


def _check_path(p: Path) -> None:
    if not p.exists():
        raise AudioError(f"{p}: no such audio file")
    if p.is_dir():
        raise AudioError(f"{p}: is a folder, not an audio file")


def read_audio(path: str | os.PathLike[str], *, sample_rate: int | None = None,
               mono: str = "downmix", min_samples: int = 1,
               allow_silent: bool = False) -> tuple[np.ndarray, int]:
    """Read a WAV/FLAC/OGG file as mono ``float32`` in ``[-1, 1]`` (integer PCM scaled by
    ``soundfile``), resampled to ``sample_rate`` if given; returns ``(wave (T,), rate)``.

    Args:
        path: the file.
        sample_rate: resample to this rate (Hz); ``None`` keeps the file's rate.
        mono: ``"downmix"`` averages the channels of a multi-channel file; ``"error"``
            rejects it.
        min_samples: the least number of samples accepted (counted after resampling).
        allow_silent: accept an all-zero file instead of raising.

    Raises:
        AudioError: one line naming the file and the problem (see the module docstring).
    """
    import soundfile as sf

    if mono not in ("downmix", "error"):
        raise ValueError(f"mono must be 'downmix' or 'error', got {mono!r}")
    if sample_rate is not None and int(sample_rate) < MIN_SAMPLE_RATE:
        raise ValueError(f"target sample rate {sample_rate} Hz is below {MIN_SAMPLE_RATE} Hz")
    p = Path(path)
    _check_path(p)
    try:
        data, rate = sf.read(str(p), dtype="float32", always_2d=True)
    except (RuntimeError, sf.SoundFileError) as e:
        raise AudioError(f"{p}: not a readable audio file ({_reason(e)})") from None
    if rate < MIN_SAMPLE_RATE:
        raise AudioError(f"{p}: sample rate {rate} Hz is below {MIN_SAMPLE_RATE} Hz "
                         "(a wrong header?)")
    if data.shape[0] == 0:
        raise AudioError(f"{p}: empty audio file (0 samples)")
    if data.shape[1] > 1:
        if mono == "error":
            raise AudioError(f"{p}: has {data.shape[1]} channels, expected mono")
        data = data.mean(axis=1, dtype=np.float64).astype(np.float32)
    else:
        data = data[:, 0]
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise AudioError(f"{p}: {bad} NaN or infinite samples")
    if not allow_silent and not np.any(data):
        raise AudioError(f"{p}: silent audio file (all {data.shape[0]} samples are zero)")
    if sample_rate is not None and int(sample_rate) != rate:
        data = resample(data, rate, int(sample_rate))
        rate = int(sample_rate)
    if data.shape[0] < min_samples:
        raise AudioError(f"{p}: too short ({data.shape[0]} samples at {rate} Hz, "
                         f"need at least {min_samples})")
    return np.ascontiguousarray(data, dtype=np.float32), int(rate)


def write_audio(path: str | os.PathLike[str], wave: Any, sample_rate: int, *,
                subtype: str = "PCM_16") -> int:
    """Write a mono wave ``(T,)`` (NumPy array or torch tensor; ``(1, T)`` accepted) to
    ``path`` atomically (temporary file, then rename; the format follows the suffix).

    Samples outside ``[-1, 1]`` are clipped; their number is logged as a warning and
    returned (0 when nothing was clipped). ``subtype``: ``"PCM_16"`` (default),
    ``"PCM_24"`` or ``"FLOAT"`` (32-bit float WAV; also clipped, for consistency).

    Raises:
        AudioError: NaN/inf samples, an empty or multi-channel wave, or a bad rate.
    """
    import soundfile as sf

    p = Path(path)
    x = _as_numpy(wave)
    if x.ndim == 2 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 1:
        raise AudioError(f"{p}: expected a mono wave of shape (T,), got {tuple(x.shape)}")
    if x.size == 0:
        raise AudioError(f"{p}: refusing to write an empty wave (0 samples)")
    if int(sample_rate) < MIN_SAMPLE_RATE:
        raise AudioError(f"{p}: sample rate {sample_rate} Hz is below {MIN_SAMPLE_RATE} Hz")
    x = x.astype(np.float64 if x.dtype == np.float64 else np.float32, copy=False)
    if not np.isfinite(x).all():
        raise AudioError(f"{p}: wave has {int((~np.isfinite(x)).sum())} NaN or infinite "
                         "samples; not written")
    sub = _SUBTYPES.get(subtype)
    if sub is None:
        raise ValueError(f"subtype must be PCM_16, PCM_24 or FLOAT, got {subtype!r}")
    clipped = int(np.count_nonzero(np.abs(x) > 1.0))
    if clipped:
        logger.warning("%s: clipped %d of %d samples to [-1, 1]", p, clipped, x.size)
        x = np.clip(x, -1.0, 1.0)
    fmt = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG"}.get(p.suffix.lower())
    if fmt is None:
        raise AudioError(f"{p}: unsupported audio suffix (use {', '.join(AUDIO_EXTENSIONS)})")
    if fmt == "OGG":
        sub = "VORBIS"
    elif fmt == "FLAC" and sub == "FLOAT":
        raise AudioError(f"{p}: FLAC cannot store float samples; use PCM_16 or PCM_24")
    with atomic_path(p) as tmp:
        sf.write(str(tmp), x, int(sample_rate), subtype=sub, format=fmt)
    return clipped


def list_audio(folder: str | os.PathLike[str], *, recursive: bool = False) -> list[Path]:
    """Audio files (:data:`AUDIO_EXTENSIONS`, any letter case) in ``folder``, sorted by
    their path; hidden files (``.name``) are skipped. Raises :class:`AudioError` when the
    folder does not exist."""
    d = Path(folder)
    if not d.is_dir():
        raise AudioError(f"{d}: no such folder" if not d.exists() else f"{d}: not a folder")
    it = d.rglob("*") if recursive else d.iterdir()
    return sorted(f for f in it if f.is_file() and not f.name.startswith(".")
                  and f.suffix.lower() in AUDIO_EXTENSIONS)
