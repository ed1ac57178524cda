"""An offline, seeded corpus for speech enhancement and dereverberation (SGMSE-style pairs).

Everything is generated on this machine from a seed; nothing is downloaded:

* **Clean speech** is synthesised with the espeak-ng formant synthesiser (the library and its
  voice data ship in the ``espeakng-loader`` wheel; install ``polydiff-speech[corpus]``),
  driven through ``ctypes`` (:func:`synthesize`), from a built-in list of a few hundred
  English sentences made combinatorially from word lists (:data:`SENTENCES`), in many voices:
  English accents, other languages' voices reading English, and espeak's speaker variants
  (``+f1``, ``+m2``, ``+Annie``, ...), with random rate, pitch and pitch range. Variants
  with breath noise (``+f2``, ``+f3``, ``+f5``) are refused by the builder: espeak-ng 1.52's
  output for them depends on the process's memory layout (:func:`is_reproducible`).
  **Formant speech is not natural speech**: it is buzzier, more regular and less varied
  than recorded talkers, so metrics (PESQ, ESTOI, SI-SDR) measured on this corpus are not
  comparable with VoiceBank-DEMAND or WSJ0 numbers, and a model trained here will not
  transfer as-is to real recordings.
* **Noise** comes in named types (:data:`NOISES`), so held-out types can be kept for test:
  ``white``, ``pink``, ``brown`` (spectrally shaped Gaussian noise), ``babble`` (3-8
  synthetic talkers summed), ``bursty`` (noise under a random on/off envelope) and ``hum``
  (mains hum with harmonics, clicks and a noise floor).
* **Mixing** (:func:`mix_at_snr`) sets the SNR from the *active-speech* power of the clean
  signal (mean power of 20 ms frames within 40 dB of the loudest frame; a simple frame
  energy detector, not ITU-T P.56) over the mean power of the noise, then scales clean and
  noisy by one common factor so that neither clips.
* **Reverberation** (:func:`simulate_rir`) uses the image-source model (Allen & Berkley,
  "Image method for efficiently simulating small-room acoustics", JASA 1979) of
  ``pyroomacoustics`` in random shoebox rooms whose wall absorption gives the drawn RT60 by
  Sabine's formula (``pra.inverse_sabine``). To stay fast the image sources stop at order
  ``max_order``; when the RT60 needs more, the late part is an exponentially decaying
  Gaussian tail with exactly the target decay rate (the stochastic late-reverberation model
  of Moorer, "About this reverberation business", CMJ 1979), level-matched to the image
  sources at the crossover. As in SGMSE's WSJ0-Reverb recipe (Richter et al., 2023), the
  target ("anechoic") is the dry speech through the direct path only, so target and
  reverberant input are aligned at the direct-path delay; that integer delay is removed from
  both, so the target is the clean utterance delayed by under one sample.

:func:`build_corpus` writes ``<out>/{train,valid,test}/{clean,noisy}/<id>.wav`` (dereverb:
``{anechoic,reverb}``; 16-bit PCM) and ``<out>/manifest.json`` (per file: voice, text,
rate, pitch, noise type, SNR, RT60, room, seed; ``text`` is what was read, its end possibly
cut off, since utterances are cropped to their drawn length). It writes into
``<out>.tmp-<pid>`` and renames that folder to ``<out>`` only once the manifest is written,
so a crash never leaves a half-written corpus under ``<out>``; a folder without
``manifest.json`` is incomplete.
:func:`cached_corpus` builds once per parameter set under the cache folder and reuses it.
The same spec and seed give byte-identical files, across processes too (same library
versions); every item has its own seed, so :func:`make_item` regenerates any one alone.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from polydiff.core.utils import cache_dir as polydiff_cache_dir
from polydiff.speech.espeak import (  # re-exported
    _LOCK,
    EspeakError,
    _engine,
    espeak_info,
    is_reproducible,
    synthesize,
)

__all__ = [
    "CORPUS_VERSION", "DEFAULT_VOICES_TEST", "DEFAULT_VOICES_TRAIN", "NOISES", "SENTENCES",
    "CorpusSpec", "EspeakError", "active_power", "build_corpus", "cache_root",
    "cached_corpus", "coloured_noise", "espeak_info", "is_complete", "is_reproducible",
    "make_item", "make_noise",
    "make_sentences", "mix_at_snr", "read_manifest", "reverberate", "simulate_rir",
    "synthesize",
]

#: Bump when the generator changes what it writes (it is part of the cache key).
CORPUS_VERSION = 1
#: Active-speech level of clean utterances before peak safety, in dB re full scale.
SPEECH_LEVEL_DBFS = -25.0


# ----------------------------------------------------------------------------- sentences
_SUBJECTS = (
    "the old man", "a young girl", "my brother", "the teacher", "our neighbour", "the small dog",
    "a tired farmer", "the pilot", "her cousin", "the baker", "the new doctor", "a quiet student",
    "the captain", "his grandmother", "the driver", "a friendly nurse", "the gardener",
    "my sister", "the tall painter", "an angry customer")
_VERBS = (
    "painted", "carried", "found", "opened", "cleaned", "sold", "watched", "borrowed", "fixed",
    "dropped", "packed", "bought", "hid", "measured", "described", "returned", "repaired",
    "noticed", "wrapped", "counted")
_OBJECTS = (
    "a red box", "the heavy door", "an old map", "the wooden chair", "seven apples",
    "a broken clock", "the blue kettle", "two letters", "a paper boat", "the silver key",
    "a loaf of bread", "the green bicycle", "three candles", "a warm blanket", "the photograph",
    "a bag of rice", "the yellow kite", "an empty bottle", "the garden gate", "a pair of boots")
_PLACES = (
    "near the river", "in the kitchen", "behind the station", "at the market",
    "under the bridge", "beside the window", "on the top shelf", "in the library",
    "across the street", "by the harbour", "inside the barn", "at the end of the hall")
_TIMES = (
    "yesterday", "last winter", "every morning", "before dinner", "on Sunday", "at midnight",
    "after the storm", "early today", "in the spring", "two weeks ago")
_BASES = ("find", "open", "clean", "sell", "watch", "fix", "carry", "paint", "move", "hide")
_NUMBERS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
            "eleven", "twelve")
_TEMPLATES = (
    "{S} {V} {O} {P}.", "{S} {V} {O} {T}.", "{T}, {s} {V} {O} {P}.",
    "Why did {s} {B} {O} {P}?", "{S} said that {s2} {V} {O}.", "Please {B} {O} {P}.",
    "{S} {V} {O}, and then {s2} {V2} {O2}.", "The train leaves at {n} {m}, not at {n2}.",
    "Did {s} {B} {O} {T}?", "If it rains, {s} will {B} {O} {P}.",
    "{S} {V} {O} {P}, but nobody noticed.", "Count to {n}, then {B} {O}.")


def make_sentences(n: int = 400, seed: int = 0) -> list[str]:
    """``n`` distinct English sentences filled into fixed templates from word lists with a
    seeded generator (questions, clauses, numbers and commas give varied prosody)."""
    rng = np.random.default_rng(seed)
    out: dict[str, None] = {}
    pick = lambda pool: pool[int(rng.integers(len(pool)))]  # noqa: E731
    while len(out) < n:
        s, s2 = pick(_SUBJECTS), pick(_SUBJECTS)
        text = pick(_TEMPLATES).format(
            S=s[0].upper() + s[1:], s=s, s2=s2, V=pick(_VERBS), V2=pick(_VERBS),
            O=pick(_OBJECTS), O2=pick(_OBJECTS), P=pick(_PLACES), T=pick(_TIMES),
            B=pick(_BASES), n=pick(_NUMBERS), n2=pick(_NUMBERS),
            m=pick(("fifteen", "thirty", "forty", "o'clock")))
        out[text[0].upper() + text[1:]] = None
    return list(out)


#: The built-in sentence list (400 sentences, seed 0).
SENTENCES: tuple[str, ...] = tuple(make_sentences())

#: Voices for training/validation and held-out voices for test (espeak-ng ``name+variant``).
DEFAULT_VOICES_TRAIN: tuple[str, ...] = (
    "en", "en-us", "en-gb-x-rp", "en-029", "en+f1", "en+f4", "en+m2", "en+m4", "en-us+f1",
    "en-us+m3", "en-us+Annie", "en-gb-scotland+m1", "de+m2", "fr+f4", "es+m1", "it+belinda")
DEFAULT_VOICES_TEST: tuple[str, ...] = (
    "en-us-nyc+linda", "en-gb-x-gbclan+m5", "sv+anika", "pl+m6")


# ----------------------------------------------------------------------------- noise
def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)) + 1e-20))


def coloured_noise(n: int, exponent: float, rng: np.random.Generator,
                   sample_rate: int = 16000, f_min: float = 20.0) -> np.ndarray:
    """Gaussian noise with power spectral density ~ ``f**-exponent`` (0 white, 1 pink:
    -3.01 dB/octave, 2 brown: -6.02 dB/octave), by shaping a white spectrum; flat below
    ``f_min`` Hz. Unit RMS."""
    from scipy.fft import next_fast_len

    m = next_fast_len(n, real=True)  # a fast FFT size; crop back to n
    spec = np.fft.rfft(rng.standard_normal(m))
    f = np.maximum(np.fft.rfftfreq(m, 1.0 / sample_rate), f_min)
    x = np.fft.irfft(spec * f ** (-exponent / 2.0), m)[:n]
    return x / _rms(x)


def _speech_stream(rng: np.random.Generator, voice: str, n: int, sample_rate: int
                   ) -> tuple[np.ndarray, list[str], dict[str, int]]:
    """At least ``n`` samples of one talker reading random sentences (usually one espeak
    call), with a random rate, pitch and pitch range."""
    params = {"rate": int(rng.integers(140, 201)), "pitch": int(rng.integers(30, 71)),
              "pitch_range": int(rng.integers(30, 81))}
    parts: list[np.ndarray] = []
    texts: list[str] = []
    total = 0
    while total < n:
        batch, estimate = [], 0.0  # seconds, from the word count at this rate
        while estimate * sample_rate < 1.2 * (n - total):
            batch.append(SENTENCES[int(rng.integers(len(SENTENCES)))])
            estimate += len(batch[-1].split()) * 60.0 / params["rate"] + 0.4
        parts.append(synthesize(" ".join(batch), voice, sample_rate=sample_rate, **params))
        texts, total = texts + batch, total + parts[-1].size
    return np.concatenate(parts), texts, params


def _babble(rng: np.random.Generator, n: int, sr: int, voices: Sequence[str]) -> np.ndarray:
    out = np.zeros(n)
    for _ in range(int(rng.integers(3, 9))):
        voice = voices[int(rng.integers(len(voices)))]
        start = int(rng.uniform(0.0, 1.0) * sr)
        stream = _speech_stream(rng, voice, n + start, sr)[0][start:start + n]
        out += stream / _rms(stream)
    return out


def _bursty(rng: np.random.Generator, n: int, sr: int, voices: Sequence[str]) -> np.ndarray:
    env, t = np.empty(n), 0
    on = bool(rng.integers(2))
    while t < n:  # alternating on/off segments with exponential durations
        length = max(1, int(rng.exponential(0.25 if on else 0.35) * sr))
        env[t:t + length] = rng.uniform(0.4, 1.0) if on else 0.03
        t, on = t + length, not on
    ramp = np.hanning(max(3, int(0.01 * sr)))
    env = np.convolve(env, ramp / ramp.sum(), mode="same")
    return coloured_noise(n, float(rng.uniform(0.0, 1.5)), rng, sr) * env


def _hum(rng: np.random.Generator, n: int, sr: int, voices: Sequence[str]) -> np.ndarray:
    t = np.arange(n) / sr
    f0 = 50.0 if rng.integers(2) else 60.0
    x = sum(rng.uniform(0.3, 1.0) / k * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi))
            for k in range(1, 9) if k * f0 < sr / 2)
    x = np.asarray(x) + 0.03 * rng.standard_normal(n)
    decay = np.exp(-np.arange(int(0.004 * sr)) / (0.0008 * sr))
    for pos in rng.integers(0, n, size=rng.poisson(rng.uniform(2, 8) * n / sr)):
        seg = x[pos:pos + decay.size]
        seg += rng.choice((-1.0, 1.0)) * rng.uniform(1.0, 4.0) * decay[:seg.size]
    return x


NoiseFn = Callable[[np.random.Generator, int, int, Sequence[str]], np.ndarray]
#: Noise types by name: ``fn(rng, n_samples, sample_rate, babble_voices) -> wave``.
NOISES: dict[str, NoiseFn] = {
    "white": lambda rng, n, sr, v: coloured_noise(n, 0.0, rng, sr),
    "pink": lambda rng, n, sr, v: coloured_noise(n, 1.0, rng, sr),
    "brown": lambda rng, n, sr, v: coloured_noise(n, 2.0, rng, sr),
    "babble": _babble,
    "bursty": _bursty,
    "hum": _hum,
}


def make_noise(kind: str, n: int, rng: np.random.Generator, sample_rate: int = 16000,
               voices: Sequence[str] = DEFAULT_VOICES_TRAIN) -> np.ndarray:
    """``n`` samples of the named noise type (:data:`NOISES`), unit RMS; ``voices`` are the
    talkers ``babble`` may use."""
    if kind not in NOISES:
        raise ValueError(f"unknown noise type {kind!r} (known: {', '.join(NOISES)})")
    x = NOISES[kind](rng, n, sample_rate, voices)
    return (x / _rms(x)).astype(np.float64)


# ----------------------------------------------------------------------------- mixing
def active_power(x: np.ndarray, sample_rate: int, frame_s: float = 0.02,
                 threshold_db: float = -40.0) -> float:
    """Mean power of the active frames of ``x``: non-overlapping ``frame_s`` frames whose
    power is within ``threshold_db`` of the loudest frame (a frame-energy detector)."""
    flen = max(1, int(frame_s * sample_rate))
    nf = max(1, x.size // flen)
    frames = np.square(x[:nf * flen].astype(np.float64)).reshape(nf, -1).mean(axis=1)
    active = frames[frames >= frames.max() * 10.0 ** (threshold_db / 10.0)]
    return float(active.mean()) if active.size and active.mean() > 0 else _rms(x) ** 2


def mix_at_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float, sample_rate: int, *,
               peak: float = 0.99) -> tuple[np.ndarray, np.ndarray]:
    """``(clean, noisy)`` with ``noisy = clean + g noise`` where ``g`` makes active-speech
    power (:func:`active_power`) over mean noise power equal ``snr_db``; both are then
    multiplied by one factor (<= 1) so that neither peaks above ``peak``."""
    noise = noise[:clean.size]
    if noise.size < clean.size:
        raise ValueError(f"noise has {noise.size} samples, clean has {clean.size}")
    p_n = float(np.mean(np.square(noise, dtype=np.float64)))
    g = math.sqrt(active_power(clean, sample_rate) / (p_n * 10.0 ** (snr_db / 10.0)))
    noisy = clean + g * noise
    return _peak_safe(clean, noisy, peak)


def _peak_safe(a: np.ndarray, b: np.ndarray, peak: float) -> tuple[np.ndarray, np.ndarray]:
    top = max(float(np.max(np.abs(a))), float(np.max(np.abs(b))), 1e-12)
    s = min(1.0, peak / top)
    return a * s, b * s


# ----------------------------------------------------------------------------- reverberation
def simulate_rir(rng: np.random.Generator, rt60: float, sample_rate: int = 16000, *,
                 max_order: int = 17, room_range: Sequence[tuple[float, float]] = (
                     (3.0, 9.0), (3.0, 7.0), (2.5, 3.5)),
                 ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """A random shoebox room impulse response with reverberation time ``rt60`` seconds.

    Image-source model (Allen & Berkley, JASA 1979) via ``pyroomacoustics`` up to
    ``max_order``; if Sabine's order estimate is higher, an exponentially decaying Gaussian
    tail (Moorer, CMJ 1979) with the target decay rate continues it from the time the
    image sources of order <= ``max_order`` are complete, level-matched there.
    Returns ``(h, h_direct, info)``: both normalised so the direct path has unit gain,
    ``h_direct`` the direct path alone (same delay and fractional-delay filter as in ``h``).
    """
    import pyroomacoustics as pra

    for _ in range(50):
        dims = np.array([rng.uniform(lo, hi) for lo, hi in room_range])
        try:
            e_abs, order = pra.inverse_sabine(rt60, dims)
        except ValueError:  # room too large for this RT60
            continue
        src, mic = (np.array([rng.uniform(0.5, d - 0.5) for d in dims]) for _ in range(2))
        if np.linalg.norm(src - mic) >= 0.75:
            break
    else:
        raise ValueError(f"no shoebox room in {room_range} gives RT60 = {rt60} s")
    order = min(int(order), max_order)

    def ism(k: int) -> np.ndarray:
        room = pra.ShoeBox(dims, fs=sample_rate, materials=pra.Material(float(e_abs)),
                           max_order=k, air_absorption=False, use_rand_ism=False)
        room.add_source(src)
        room.add_microphone(mic)
        room.compute_rir()
        return np.asarray(room.rir[0][0], dtype=np.float64)

    h_direct, h = ism(0), ism(order)
    n = max(h.size, int(1.2 * rt60 * sample_rate) + h_direct.size)
    h = np.pad(h, (0, n - h.size))
    t_c: float | None = None
    if order == max_order:  # image sources stop early: add the late tail
        c = 343.0
        t_c = 0.8 * order / math.sqrt(float(np.sum(1.0 / dims ** 2))) / c  # seconds
        t_c = max(t_c, float(np.linalg.norm(src - mic)) / c + 0.02)
        i_c, w = int(t_c * sample_rate), int(0.01 * sample_rate)
        if i_c + w < n:
            decay = 3.0 * math.log(10.0) / rt60  # amplitude decay rate: 60 dB in rt60
            env = np.exp(-decay * np.arange(n) / sample_rate)
            tail = rng.standard_normal(n) * env
            win = slice(i_c - w, i_c + w)
            gain = math.sqrt(np.mean(h[win] ** 2) / np.mean(tail[win] ** 2))
            fade = np.clip((np.arange(n) - (i_c - w)) / (2 * w), 0.0, 1.0)
            h = h * np.cos(0.5 * np.pi * fade) + gain * tail * np.sin(0.5 * np.pi * fade)
    g = float(np.sum(h_direct))  # direct-path gain 1/(4 pi r)
    info = {"rt60": float(rt60), "room": dims.round(4).tolist(), "source": src.round(4).tolist(),
            "mic": mic.round(4).tolist(), "absorption": round(float(e_abs), 6),
            "max_order": order, "tail_from_s": None if t_c is None else round(t_c, 6)}
    return h / g, h_direct / g, info


def reverberate(clean: np.ndarray, h: np.ndarray, h_direct: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """``(anechoic, reverberant)``: ``clean`` through the direct path and through ``h``,
    both advanced by the direct path's integer delay and cut to ``len(clean)``."""
    from scipy.signal import fftconvolve

    d = int(np.argmax(np.abs(h_direct)))
    wet = fftconvolve(clean, h)[d:d + clean.size]
    dry = fftconvolve(clean, h_direct)[d:d + clean.size]
    return dry, wet


# ----------------------------------------------------------------------------- corpus spec
_TASKS = {"denoise": ("clean", "noisy"), "dereverb": ("anechoic", "reverb")}
_SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class CorpusSpec:
    """Everything that determines a corpus (its cache key).

    ``snr_db``: ``(low, high)``, a uniform range in dB; a sequence of any other length is a
    set of values drawn with equal probability (moved to ``snr_values``, which can also be
    given directly, e.g. for exactly two values). ``rt60``: uniform range in seconds (dereverb).
    ``seconds``: utterance length range. Valid uses the train voices and noises; test uses
    ``voices_test`` and ``noises_test`` (held out by default).
    """

    task: str = "denoise"
    n_train: int = 200
    n_valid: int = 20
    n_test: int = 50
    sample_rate: int = 16000
    seconds: tuple[float, float] = (2.0, 3.0)
    snr_db: tuple[float, float] = (-5.0, 15.0)
    snr_values: tuple[float, ...] | None = None
    rt60: tuple[float, float] = (0.3, 1.0)
    voices_train: tuple[str, ...] = DEFAULT_VOICES_TRAIN
    voices_test: tuple[str, ...] = DEFAULT_VOICES_TEST
    noises_train: tuple[str, ...] = ("white", "pink", "babble", "bursty")
    noises_test: tuple[str, ...] = ("brown", "hum")
    max_order: int = 17
    seed: int = 0

    def __post_init__(self) -> None:
        fix = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        if len(self.snr_db) != 2:  # a set of values, not a range
            fix("snr_values", tuple(float(v) for v in self.snr_db))
        if self.snr_values is not None:
            if not self.snr_values:
                raise ValueError("snr_values is empty")
            fix("snr_values", tuple(float(v) for v in self.snr_values))
            fix("snr_db", (min(self.snr_values), max(self.snr_values)))
        for name in ("seconds", "snr_db", "rt60"):
            lo, hi = (float(v) for v in getattr(self, name))
            if not lo <= hi:
                raise ValueError(f"{name} must be a (low, high) range, got {(lo, hi)}")
            fix(name, (lo, hi))
        for name in ("voices_train", "voices_test", "noises_train", "noises_test"):
            value = getattr(self, name)
            fix(name, (value,) if isinstance(value, str) else tuple(value))
            if not getattr(self, name):
                raise ValueError(f"{name} is empty")
        if self.task not in _TASKS:
            raise ValueError(f"task must be one of {', '.join(_TASKS)}, got {self.task!r}")
        bad = [k for k in self.noises_train + self.noises_test if k not in NOISES]
        if bad:
            raise ValueError(f"unknown noise type {bad[0]!r} (known: {', '.join(NOISES)})")
        if min(self.n_train, self.n_valid, self.n_test) < 0 or self.sample_rate < 1000:
            raise ValueError("counts must be >= 0 and sample_rate >= 1000")
        if self.seconds[0] <= 0.2 or self.rt60[0] <= 0.05:
            raise ValueError("seconds must exceed 0.2 s and rt60 0.05 s")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def key(self) -> str:
        """A short hash of the spec, the generator version and the espeak-ng version."""
        blob = json.dumps({"spec": self.to_dict(), "version": CORPUS_VERSION,
                           "espeak": espeak_info()["version"]}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _item_seed(spec: CorpusSpec, split: str, index: int) -> int:
    ss = np.random.SeedSequence([spec.seed, _SPLITS.index(split), index])
    return int(ss.generate_state(1)[0])


def make_item(spec: CorpusSpec, split: str, index: int
              ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """One ``(target, input, metadata)`` pair of the corpus, from its own seed (independent
    of the other items, so any item can be regenerated alone)."""
    seed = _item_seed(spec, split, index)
    rng = np.random.default_rng(seed)
    sr = spec.sample_rate
    voices = spec.voices_test if split == "test" else spec.voices_train
    noises = spec.noises_test if split == "test" else spec.noises_train
    n = int(rng.uniform(*spec.seconds) * sr)
    voice = voices[int(rng.integers(len(voices)))]
    lead = np.zeros(int(rng.uniform(0.05, 0.2) * sr))
    stream, texts, params = _speech_stream(rng, voice, n, sr)
    clean = np.concatenate([lead, stream])[:n].astype(np.float64)
    fade = min(n, int(0.02 * sr))
    clean[n - fade:] *= np.linspace(1.0, 0.0, fade)
    clean *= 10.0 ** (SPEECH_LEVEL_DBFS / 20.0) / math.sqrt(active_power(clean, sr))
    meta: dict[str, Any] = {"voice": voice, "text": " ".join(texts), **params, "seed": seed,
                            "seconds": round(n / sr, 6)}
    if spec.task == "denoise":
        kind = noises[int(rng.integers(len(noises)))]
        snr = (float(rng.choice(spec.snr_values)) if spec.snr_values
               else float(rng.uniform(*spec.snr_db)))
        noise = make_noise(kind, n, rng, sr, voices)
        target, inp = mix_at_snr(clean, noise, snr, sr)
        meta.update(noise=kind, snr_db=snr)
    else:
        h, h_direct, info = simulate_rir(rng, float(rng.uniform(*spec.rt60)), sr,
                                         max_order=spec.max_order)
        target, inp = _peak_safe(*reverberate(clean, h, h_direct), 0.99)
        meta.update(info)
    return target, inp, meta


# ----------------------------------------------------------------------------- building
def is_complete(root: str | os.PathLike[str]) -> bool:
    """True where ``root`` holds a finished corpus (its manifest is written last)."""
    return (Path(root) / "manifest.json").is_file()


def read_manifest(root: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a finished corpus; ``FileNotFoundError`` (one line) if incomplete."""
    path = Path(root) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{root}: not a complete corpus (no manifest.json)")
    return json.loads(path.read_text())


def build_corpus(out_dir: str | os.PathLike[str], spec: CorpusSpec | None = None, *,
                 overwrite: bool = False, show_progress: bool | None = None,
                 **fields: Any) -> dict[str, Any]:
    """Build the corpus ``spec`` (fields given as keywords override it) into ``out_dir``;
    returns the manifest. Written into ``<out_dir>.tmp-<pid>`` and renamed into place at
    the end; an existing ``out_dir`` is an error unless ``overwrite``."""
    from polydiff.core.utils import atomic_write, progress
    from polydiff.speech.audio import write_audio

    spec = replace(spec or CorpusSpec(), **fields)
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out}: already exists (pass overwrite=True to replace it)")
    target_name, input_name = _TASKS[spec.task]
    engine = espeak_info()
    for voice in sorted(set(spec.voices_train + spec.voices_test)):  # fail fast
        with _LOCK:
            _engine().set_voice(voice)
        if not is_reproducible(voice):
            raise EspeakError(f"voice {voice!r} adds espeak-ng's breath noise, which is not "
                              "reproducible; use a variant without it (f1, f4, m1-m8, Annie, "
                              "linda, ...)")
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    jobs = [(s, i) for s, n in zip(_SPLITS, (spec.n_train, spec.n_valid, spec.n_test),
                                    strict=True) for i in range(n)]
    splits: dict[str, list[dict[str, Any]]] = {s: [] for s in _SPLITS}
    try:
        for split, i in progress(jobs, total=len(jobs), desc="corpus", disable=(
                None if show_progress is None else not show_progress)):
            target, inp, meta = make_item(spec, split, i)
            uid = f"{split}-{i:05d}"
            rel = {name: f"{split}/{name}/{uid}.wav" for name in (target_name, input_name)}
            write_audio(tmp / rel[target_name], target, spec.sample_rate)
            write_audio(tmp / rel[input_name], inp, spec.sample_rate)
            splits[split].append({"id": uid, **rel, **meta})
        manifest = {"format": "polydiff-speech-corpus", "version": CORPUS_VERSION,
                    "task": spec.task, "sample_rate": spec.sample_rate,
                    "target": target_name, "input": input_name, "spec": spec.to_dict(),
                    "espeak": {"version": engine["version"],
                               "sample_rate": engine["sample_rate"]},
                    "splits": splits}
        text = json.dumps(manifest, indent=1) + "\n"
        manifest = json.loads(text)  # what a reader of the file gets (lists, not tuples)
        atomic_write(tmp / "manifest.json", text)
        _publish(tmp, out, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _publish(tmp: Path, out: Path, overwrite: bool) -> None:
    old = out.with_name(f"{out.name}.old-{os.getpid()}")
    if out.exists():
        if not overwrite:
            raise FileExistsError(f"{out}: appeared while building (another builder?)")
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def cache_root() -> Path:
    """``$POLYDIFF_CACHE/speech``, else ``$XDG_CACHE_HOME/polydiff/speech``, else
    ``~/.cache/polydiff/speech``."""
    return polydiff_cache_dir("speech")


def cached_corpus(spec: CorpusSpec | None = None, *,
                  cache_dir: str | os.PathLike[str] | None = None,
                  show_progress: bool | None = None, **fields: Any) -> Path:
    """The folder of corpus ``spec`` under ``cache_dir`` (default :func:`cache_root`), named
    ``<task>-<hash of the spec>``; built on first use, reused afterwards."""
    spec = replace(spec or CorpusSpec(), **fields)
    path = Path(cache_dir) if cache_dir is not None else cache_root()
    path = path / f"{spec.task}-{spec.key()}"
    if is_complete(path):
        return path
    try:
        build_corpus(path, spec, overwrite=path.exists(), show_progress=show_progress)
    except FileExistsError:
        if not is_complete(path):  # another process won the race with a finished corpus
            raise
    return path
