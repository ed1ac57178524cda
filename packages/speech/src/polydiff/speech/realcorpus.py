"""A speech-enhancement corpus of real human speech (Debian's voice prompts), 8 or 16 kHz.

The clean speech is real: the professional telephony prompts of
:mod:`polydiff.speech.realspeech` (one speaker per package; es, fr, it, ru and a second
Italian speaker as 8 kHz WAV, two more speakers as GSM 06.10). Splits are **by speaker**
(:data:`TRAIN_SPEAKERS`, :data:`VALID_SPEAKERS`, :data:`TEST_SPEAKERS`): by default the
validation speaker is French (fr_CA) and the test speaker Russian, a language no training
speaker speaks; the two GSM speakers (:data:`BABBLE_SPEAKERS`) only ever appear as babble in
training (their codec artefacts would otherwise become part of the "clean" target).

Two parts, both written by :func:`build_real_corpus` into one folder:

* ``sources/``: the compact *sources pack* (:class:`Sources`): per speaker, a selection of
  prompts with their leading and trailing silence trimmed (:func:`trim_silence`), stored
  back to back as one 16-bit FLAC file with an index of prompt boundaries, plus a bank of
  simulated room impulse responses (``rirs.npz``). It is fetched and built once (the Debian
  packages come through :func:`polydiff.core.utils.fetch_debian_package`) and is small
  enough (about 20 MB with the defaults) to travel to a machine without network; everything
  else is made from it, deterministically, there.
* ``valid/`` and ``test/``: fixed mixtures in the standard paired layout
  (``<split>/{clean,noisy}/<name>.wav``, so :func:`polydiff.speech.data.iter_pairs` and
  ``sgmse evaluate`` read them): each held-out utterance (1-3 consecutive prompts with short
  pauses) mixed with one noise at **every** SNR of ``eval_snrs`` (default 0, 5, 10 dB;
  the same clean utterance and noise at each SNR, so SNRs compare pairwise); file names
  carry the SNR (``snr05_0003``); ``manifest.json`` lists speaker, prompts, noise type and
  SNR of every file.

Training pairs are mixed **on the fly** (:class:`MixingSource`, a data source for core's
:class:`~polydiff.core.training.data.SampledData`): random crops of the training speakers'
speech, with probability ``reverb_prob`` through a random room impulse response (the target
is the reverberant speech: the task is denoising), plus a random crop of a random noise type
at an SNR uniform in ``snr_db``, normalised by the noisy peak. Crops, noise types and SNRs
are drawn with the training loop's per-step generator, on the training device, so a GPU is
not starved by the data and a resumed run sees the same batches.

Noise types (:data:`NOISE_TYPES`): ``white``, ``pink``, ``brown`` (coloured Gaussian noise),
``bursty`` (coloured noise under a random on/off envelope) and ``hum`` (mains hum with
clicks), as in the formant corpus (:func:`polydiff.speech.corpus.make_noise`); ``babble``:
3-7 *real* talkers summed, from other speakers than the target (training: the training and
GSM speakers; validation/test: held-out prompts of the held-out speakers, never the target
utterance's prompts); ``ssn``: speech-shaped noise (the long-term spectrum of real babble)
under a slow random amplitude modulation; ``tonal``: synthetic music-like noise (random
harmonic notes and chords with decaying envelopes over a quiet noise floor).

Sample rates: the prompts are 8 kHz. An 8 kHz corpus is native; a 16 kHz corpus resamples
the speech (its content stays below 4 kHz) and draws the noise at 16 kHz (full band), so a
16 kHz model also learns to remove noise above 4 kHz. Score 8 kHz material with narrow-band
PESQ (:func:`polydiff.speech.metrics.pesq`, ``mode="nb"``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from polydiff.core.utils import atomic_write, cache_dir, one_line
from polydiff.speech.corpus import active_power, make_noise, mix_at_snr

__all__ = [
    "BABBLE_SPEAKERS", "CORPUS_FORMAT", "NOISE_TYPES", "TEST_SPEAKERS", "TRAIN_SPEAKERS",
    "VALID_SPEAKERS", "MixingSource", "RealCorpusSpec", "Sources", "SourcesSpec",
    "build_real_corpus", "build_sources", "cached_real_corpus", "is_real_corpus",
    "make_real_noise", "read_real_manifest", "trim_silence",
]

#: Bump when the builder changes what it writes (part of the cache key).
SOURCES_VERSION = 1
CORPUS_VERSION = 1
CORPUS_FORMAT = "polydiff-speech-real-corpus"
SOURCE_RATE = 8000
RIR_RATE = 16000

TRAIN_SPEAKERS: tuple[str, ...] = ("es_MX_f_Allison", "it_IT_m_Carlo", "it_IT_f_Menardi")
VALID_SPEAKERS: tuple[str, ...] = ("fr_CA_f_June",)
TEST_SPEAKERS: tuple[str, ...] = ("ru_RU_f_IvrvoiceRU",)
BABBLE_SPEAKERS: tuple[str, ...] = ("fr_FR_f_Armelle", "es_CO_f_July")
NOISE_TYPES: tuple[str, ...] = ("white", "pink", "brown", "bursty", "hum", "babble", "ssn",
                                "tonal")
#: Active-speech level of held-out clean utterances before peak safety (dB re full scale).
SPEECH_LEVEL_DBFS = -26.0


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)) + 1e-20))


def _seeded(*values: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(v) % 2**63 for v in values]))


def _key(obj: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def trim_silence(x: np.ndarray, sample_rate: int, *, threshold_db: float = -40.0,
                 margin_s: float = 0.05, frame_s: float = 0.01) -> np.ndarray:
    """``x`` without its leading and trailing silence: from ``margin_s`` before the first to
    ``margin_s`` after the last 10 ms frame whose power is within ``threshold_db`` of the
    loudest frame. An all-zero input gives an empty array."""
    flen = max(1, int(frame_s * sample_rate))
    nf = x.size // flen
    if nf == 0 or not np.any(x):
        return x[:0]
    power = np.square(x[:nf * flen].astype(np.float64)).reshape(nf, flen).mean(axis=1)
    active = np.flatnonzero(power >= power.max() * 10.0 ** (threshold_db / 10.0))
    margin = int(margin_s * sample_rate)
    start = max(0, active[0] * flen - margin)
    end = min(x.size, (active[-1] + 1) * flen + margin)
    return x[start:end]


# ----------------------------------------------------------------------------- sources
@dataclass(frozen=True)
class SourcesSpec:
    """What goes into the sources pack (its cache key).

    Attributes:
        train_speakers, valid_speakers, test_speakers: the clean speech of each split (no
            speaker in two of them).
        babble_speakers: speakers used only as babble noise in training.
        train_seconds, heldout_seconds, babble_seconds: seconds of trimmed speech kept per
            training / held-out / babble speaker (prompts in a seeded random order until the
            total is reached; ``None`` keeps all).
        min_seconds: prompts shorter than this after trimming are skipped.
        n_rirs, rt60: the bank of simulated room impulse responses.
        seed: prompt selection and RIR seed.
    """

    train_speakers: tuple[str, ...] = TRAIN_SPEAKERS
    valid_speakers: tuple[str, ...] = VALID_SPEAKERS
    test_speakers: tuple[str, ...] = TEST_SPEAKERS
    babble_speakers: tuple[str, ...] = BABBLE_SPEAKERS
    train_seconds: float | None = 480.0
    heldout_seconds: float | None = 180.0
    babble_seconds: float | None = 90.0
    min_seconds: float = 0.3
    n_rirs: int = 48
    rt60: tuple[float, float] = (0.2, 0.8)
    seed: int = 0

    def __post_init__(self) -> None:
        from polydiff.speech.realspeech import SPEAKERS

        fix = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        for name in ("train_speakers", "valid_speakers", "test_speakers", "babble_speakers",
                     "rt60"):
            value = getattr(self, name)
            fix(name, (value,) if isinstance(value, str) else tuple(value))
        roles = self.roles()
        unknown = [s for s in roles if s not in SPEAKERS]
        if unknown:
            raise ValueError(f"unknown speaker {unknown[0]!r} (choose from "
                             f"{', '.join(SPEAKERS)})")
        every = (self.train_speakers + self.valid_speakers + self.test_speakers
                 + self.babble_speakers)
        if len(every) != len(set(every)):
            raise ValueError("a speaker appears in two roles; splits must be by speaker")
        if not (self.train_speakers and self.valid_speakers and self.test_speakers):
            raise ValueError("need at least one train, one valid and one test speaker")
        if self.n_rirs < 1 or not 0.05 < self.rt60[0] <= self.rt60[1]:
            raise ValueError("need n_rirs >= 1 and 0.05 < rt60 low <= high")

    def roles(self) -> dict[str, str]:
        """``speaker -> role`` (``train``, ``valid``, ``test``, ``babble``)."""
        out: dict[str, str] = {}
        for role in ("train", "valid", "test", "babble"):
            for s in getattr(self, f"{role}_speakers"):
                out[s] = role
        return out

    def key(self) -> str:
        return _key({"spec": asdict(self), "version": SOURCES_VERSION})


def _select(prompts: list[Any], seconds: float | None, min_seconds: float,
            rng: np.random.Generator) -> list[tuple[str, np.ndarray]]:
    from polydiff.speech.realspeech import load_prompt

    out: list[tuple[str, np.ndarray]] = []
    total = 0.0
    for i in rng.permutation(len(prompts)):
        p = prompts[int(i)]
        x, sr = load_prompt(p)
        if sr != SOURCE_RATE:
            from polydiff.speech.audio import resample

            x = resample(x, sr, SOURCE_RATE)
        x = trim_silence(x, SOURCE_RATE)
        if x.size < min_seconds * SOURCE_RATE:
            continue
        out.append((p.name, x.astype(np.float32)))
        total += x.size / SOURCE_RATE
        if seconds is not None and total >= seconds:
            break
    return out


def build_sources(out_dir: str | os.PathLike[str], spec: SourcesSpec | None = None, *,
                  root: str | os.PathLike[str] | None = None,
                  show_progress: bool | None = None) -> Path:
    """Write the sources pack of ``spec`` into ``out_dir`` (atomically; fetching the Debian
    packages into the cache on first use, ``root`` overriding where they are unpacked).
    Returns ``out_dir``."""
    import soundfile as sf

    from polydiff.core.utils import atomic_dir, progress
    from polydiff.speech.corpus import simulate_rir
    from polydiff.speech.realspeech import SPEAKERS, prompts

    spec = spec or SourcesSpec()
    out = Path(out_dir)
    roles = spec.roles()
    index: dict[str, Any] = {"format": "polydiff-speech-real-sources",
                             "version": SOURCES_VERSION, "sample_rate": SOURCE_RATE,
                             "spec": asdict(spec), "speakers": {}}
    with atomic_dir(out) as tmp:
        for k, speaker in enumerate(progress(list(roles), total=len(roles), desc="sources",
                                             disable=None if show_progress is None
                                             else not show_progress)):
            role = roles[speaker]
            cap = {"train": spec.train_seconds, "babble": spec.babble_seconds}.get(
                role, spec.heldout_seconds)
            chosen = _select(prompts([speaker], root=root), cap, spec.min_seconds,
                             _seeded(spec.seed, k, 0x50C))
            if not chosen:
                raise ValueError(f"{speaker}: no usable prompts")
            audio = np.concatenate([x for _, x in chosen])
            bounds = np.cumsum([0] + [x.size for _, x in chosen]).tolist()
            sf.write(str(tmp / f"{speaker}.flac"), np.clip(audio, -1, 1), SOURCE_RATE,
                     subtype="PCM_16", format="FLAC")
            index["speakers"][speaker] = {
                "role": role, "language": SPEAKERS[speaker][2], "file": f"{speaker}.flac",
                "seconds": round(audio.size / SOURCE_RATE, 3),
                "prompts": [[name, int(bounds[i]), int(bounds[i + 1])]
                            for i, (name, _) in enumerate(chosen)]}
        rng = _seeded(spec.seed, 0x818)
        rirs, infos = [], []
        for _ in range(spec.n_rirs):
            h, _, info = simulate_rir(rng, float(rng.uniform(*spec.rt60)), RIR_RATE,
                                      max_order=8)
            rirs.append(h.astype(np.float32))
            infos.append({"rt60": round(info["rt60"], 4), "room": info["room"]})
        n = max(h.size for h in rirs)
        bank = np.zeros((len(rirs), n), dtype=np.float16)
        for i, h in enumerate(rirs):
            bank[i, :h.size] = h / max(1e-9, float(np.abs(h).max()))  # peak 1 (float16 range)
        np.savez_compressed(tmp / "rirs.npz", rirs=bank,
                            lengths=np.array([h.size for h in rirs]),
                            gains=np.array([float(np.abs(h).max()) for h in rirs]),
                            sample_rate=np.array(RIR_RATE))
        index["rirs"] = {"file": "rirs.npz", "count": len(rirs), "sample_rate": RIR_RATE,
                         "rooms": infos}
        atomic_write(tmp / "index.json", json.dumps(index, indent=1) + "\n")
    return out


class Sources:
    """A sources pack on disk (see :func:`build_sources`), read lazily."""

    def __init__(self, folder: str | os.PathLike[str]):
        self.folder = Path(folder)
        path = self.folder / "index.json"
        if not path.is_file():
            raise FileNotFoundError(f"{self.folder}: not a sources pack (no index.json)")
        self.index = json.loads(path.read_text())
        self._audio: dict[str, np.ndarray] = {}

    @property
    def speakers(self) -> dict[str, dict[str, Any]]:
        return self.index["speakers"]

    def with_role(self, role: str) -> list[str]:
        return [s for s, v in self.speakers.items() if v["role"] == role]

    def audio(self, speaker: str) -> np.ndarray:
        """All kept prompts of ``speaker`` back to back (float32, 8 kHz)."""
        if speaker not in self._audio:
            import soundfile as sf

            x, sr = sf.read(str(self.folder / self.speakers[speaker]["file"]), dtype="float32")
            if sr != SOURCE_RATE:
                raise ValueError(f"{self.folder}: {speaker} is at {sr} Hz, not {SOURCE_RATE}")
            self._audio[speaker] = x
        return self._audio[speaker]

    def prompts(self, speaker: str) -> list[tuple[str, np.ndarray]]:
        """``(name, wave)`` of every kept prompt of ``speaker``, in the pack's order."""
        x = self.audio(speaker)
        return [(name, x[a:b]) for name, a, b in self.speakers[speaker]["prompts"]]

    def rirs(self, sample_rate: int) -> list[np.ndarray]:
        """The room impulse responses at ``sample_rate`` (direct path of unit gain)."""
        from polydiff.speech.audio import resample

        data = np.load(self.folder / self.index["rirs"]["file"])
        out = []
        for h, n, g in zip(data["rirs"], data["lengths"], data["gains"], strict=True):
            h = h[:int(n)].astype(np.float64) * float(g)
            out.append(resample(h, int(data["sample_rate"]), sample_rate).astype(np.float32))
        return out

    def nbytes(self) -> int:
        return sum(f.stat().st_size for f in self.folder.iterdir() if f.is_file())


# ----------------------------------------------------------------------------- noises
def _tonal(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Music-like noise: random harmonic notes and chords with exponential decays."""
    out = 0.02 * rng.standard_normal(n)
    t = 0
    while t < n:
        dur = int(rng.uniform(0.12, 0.7) * sr)
        for _ in range(int(rng.integers(1, 4))):  # a note or a chord
            f0 = 440.0 * 2.0 ** ((int(rng.integers(36, 84)) - 69) / 12.0)
            m = min(int(dur * rng.uniform(1.0, 2.5)), n - t)
            tt = np.arange(m) / sr
            env = np.exp(-tt / rng.uniform(0.08, 0.6)) * np.minimum(1.0, tt / 0.01)
            tone = np.zeros(m)
            for h in range(1, int(rng.integers(2, 8))):
                if h * f0 < 0.45 * sr:
                    tone += rng.uniform(0.2, 1.0) / h * np.sin(
                        2 * np.pi * h * f0 * tt + rng.uniform(0, 2 * np.pi))
            out[t:t + m] += rng.uniform(0.3, 1.0) * env * tone
        t += dur
    return out


def _crop(pool: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    if pool.size <= n:
        pool = np.tile(pool, n // max(1, pool.size) + 2)
    start = int(rng.integers(0, pool.size - n))
    return pool[start:start + n]


def _babble(rng: np.random.Generator, n: int, sr: int, pool: np.ndarray) -> np.ndarray:
    out = np.zeros(n)
    for _ in range(int(rng.integers(3, 8))):
        seg = _crop(pool, n, rng).astype(np.float64)
        out += seg / math.sqrt(active_power(seg, sr))
    return out


def _ssn(rng: np.random.Generator, n: int, sr: int, pool: np.ndarray) -> np.ndarray:
    """Speech-shaped noise (the long-term spectrum of a 4 s crop of real speech) under a
    slow random amplitude modulation."""
    from scipy.fft import irfft, next_fast_len, rfft, rfftfreq
    from scipy.signal import welch

    m = next_fast_len(n, real=True)
    f, psd = welch(_crop(pool, min(pool.size - 1, 4 * sr), rng), fs=sr, nperseg=256)
    shape = np.sqrt(np.interp(rfftfreq(m, 1.0 / sr), f, psd, right=psd[-1] * 1e-3))
    x = irfft(rfft(rng.standard_normal(m)) * shape, m)[:n]
    tt = np.arange(n) / sr
    env = 1.0 + rng.uniform(0.0, 0.9) * np.sin(2 * np.pi * rng.uniform(0.5, 6.0) * tt
                                               + rng.uniform(0, 2 * np.pi))
    return x * env


def make_real_noise(kind: str, n: int, rng: np.random.Generator, sample_rate: int,
                    pool: np.ndarray | None = None) -> np.ndarray:
    """``n`` samples of noise type ``kind`` (:data:`NOISE_TYPES`) at unit RMS; ``pool`` is
    the real speech (at ``sample_rate``) that ``babble`` and ``ssn`` draw from."""
    if kind in ("babble", "ssn"):
        if pool is None or pool.size < sample_rate:
            raise ValueError(f"noise type {kind!r} needs a pool of at least 1 s of speech")
        x = (_babble if kind == "babble" else _ssn)(rng, n, sample_rate, pool)
    elif kind == "tonal":
        x = _tonal(rng, n, sample_rate)
    elif kind in NOISE_TYPES:
        x = make_noise(kind, n, rng, sample_rate)
    else:
        raise ValueError(f"unknown noise type {kind!r} (known: {', '.join(NOISE_TYPES)})")
    return (x / _rms(x)).astype(np.float64)


# ----------------------------------------------------------------------------- corpus
@dataclass(frozen=True)
class RealCorpusSpec:
    """Everything that determines a real-speech corpus (its cache key).

    Attributes:
        sources: the :class:`SourcesSpec`.
        sample_rate: 8000 (native) or 16000 (speech resampled, noise full band).
        noises: the noise types of every split.
        snr_db: training SNR range (uniform, dB); eval_snrs: the SNRs of every held-out
            utterance in ``valid/`` and ``test/``.
        n_valid, n_test: held-out clean utterances (each at every SNR of ``eval_snrs``).
        seconds: length range of held-out utterances (s).
        reverb_prob: probability that a training example is reverberant (held-out splits
            are not).
        seed: mixing seed.
    """

    sources: SourcesSpec = field(default_factory=SourcesSpec)
    sample_rate: int = 8000
    noises: tuple[str, ...] = NOISE_TYPES
    snr_db: tuple[float, float] = (-5.0, 15.0)
    eval_snrs: tuple[float, ...] = (0.0, 5.0, 10.0)
    n_valid: int = 12
    n_test: int = 20
    seconds: tuple[float, float] = (2.0, 4.0)
    reverb_prob: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        fix = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        if isinstance(self.sources, dict):
            fix("sources", SourcesSpec(**self.sources))
        for name in ("noises", "snr_db", "eval_snrs", "seconds"):
            value = getattr(self, name)
            fix(name, (value,) if isinstance(value, str | int | float) else tuple(value))
        bad = [k for k in self.noises if k not in NOISE_TYPES]
        if bad or not self.noises:
            raise ValueError(f"unknown noise type {bad[0] if bad else None!r} (known: "
                             f"{', '.join(NOISE_TYPES)})")
        if self.sample_rate not in (8000, 16000):
            raise ValueError(f"sample_rate must be 8000 or 16000, got {self.sample_rate}")
        if len(self.snr_db) != 2 or self.snr_db[0] > self.snr_db[1]:
            raise ValueError(f"snr_db must be a (low, high) range, got {self.snr_db}")
        if min(self.n_valid, self.n_test) < 0 or not self.eval_snrs:
            raise ValueError("need n_valid, n_test >= 0 and at least one eval SNR")
        if not 0.5 <= self.seconds[0] <= self.seconds[1]:
            raise ValueError(f"seconds must be a range above 0.5 s, got {self.seconds}")
        if not 0.0 <= self.reverb_prob <= 1.0:
            raise ValueError(f"reverb_prob must be in [0, 1], got {self.reverb_prob}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def key(self) -> str:
        return _key({"spec": self.to_dict(), "version": CORPUS_VERSION,
                     "sources": SOURCES_VERSION})


def _stream(parts: Sequence[np.ndarray], rng: np.random.Generator, sr: int,
            gap: tuple[float, float] = (0.1, 0.35)) -> np.ndarray:
    """The parts back to back with random pauses between them."""
    out: list[np.ndarray] = []
    for x in parts:
        out += [x, np.zeros(int(rng.uniform(*gap) * sr), dtype=np.float32)]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def _at_rate(x: np.ndarray, sr: int) -> np.ndarray:
    from polydiff.speech.audio import resample

    return resample(x.astype(np.float32), SOURCE_RATE, sr) if sr != SOURCE_RATE else x


def _heldout(sources: Sources, speakers: Sequence[str]
             ) -> tuple[dict[str, list[tuple[str, np.ndarray]]], list[np.ndarray]]:
    """Held-out speakers' prompts split in two: targets (first 60%) and babble (the rest)."""
    targets, babble = {}, []
    for s in speakers:
        ps = sources.prompts(s)
        cut = max(1, int(0.6 * len(ps)))
        targets[s] = ps[:cut]
        babble += [x for _, x in ps[cut:]]
    return targets, babble


def _utterance(prompts: list[tuple[str, np.ndarray]], pos: int, n: int,
               rng: np.random.Generator) -> tuple[np.ndarray, list[str], int]:
    """Consecutive prompts from ``pos`` (wrapping) with pauses until ``n`` samples."""
    parts, names = [], []
    total = 0
    while total < n:
        name, x = prompts[pos % len(prompts)]
        pos += 1
        pause = np.zeros(int(rng.uniform(0.1, 0.3) * SOURCE_RATE), dtype=np.float32)
        parts += [x, pause]
        names.append(name)
        total += x.size + pause.size
        if len(names) > 50:
            break
    lead = np.zeros(int(rng.uniform(0.05, 0.2) * SOURCE_RATE), dtype=np.float32)
    return np.concatenate([lead, *parts])[:n], names, pos


def _eval_split(sources: Sources, spec: RealCorpusSpec, split: str, count: int,
                out: Path) -> list[dict[str, Any]]:
    from polydiff.speech.audio import write_audio

    sr = spec.sample_rate
    speakers = sources.with_role(split)
    heldout = sources.with_role("valid") + sources.with_role("test")
    targets, _ = _heldout(sources, speakers)
    _, babble = _heldout(sources, heldout)  # babble: held-out prompts of every held-out talker
    pool = _at_rate(_stream(babble, _seeded(spec.seed, 0xBAB, len(split)), SOURCE_RATE), sr)
    rows: list[dict[str, Any]] = []
    cursor = dict.fromkeys(speakers, 0)
    for i in range(count):
        rng = _seeded(spec.seed, 0xE7A1, 1 if split == "valid" else 2, i)
        speaker = speakers[i % len(speakers)]
        n8 = int(rng.uniform(*spec.seconds) * SOURCE_RATE)
        clean8, names, cursor[speaker] = _utterance(targets[speaker], cursor[speaker], n8, rng)
        fade = int(0.02 * SOURCE_RATE)
        clean8 = clean8.astype(np.float64)
        clean8[-fade:] *= np.linspace(1.0, 0.0, fade)
        clean = _at_rate(clean8, sr).astype(np.float64)
        clean *= 10.0 ** (SPEECH_LEVEL_DBFS / 20.0) / math.sqrt(active_power(clean, sr))
        kind = spec.noises[i % len(spec.noises)]
        noise = make_real_noise(kind, clean.size, rng, sr, pool)
        for snr in spec.eval_snrs:
            target, noisy = mix_at_snr(clean, noise, float(snr), sr)
            uid = f"snr{int(round(snr)):02d}_{i:04d}" if float(snr).is_integer() and snr >= 0 \
                else f"snr{snr:+g}_{i:04d}".replace(".", "p")
            rel = {k: f"{split}/{k}/{uid}.wav" for k in ("clean", "noisy")}
            write_audio(out / rel["clean"], target, sr)
            write_audio(out / rel["noisy"], noisy, sr)
            rows.append({"id": uid, **rel, "speaker": speaker,
                         "language": sources.speakers[speaker]["language"], "prompts": names,
                         "noise": kind, "snr_db": float(snr),
                         "seconds": round(clean.size / sr, 4)})
    return rows


def is_real_corpus(root: str | os.PathLike[str]) -> bool:
    """True where ``root`` holds a finished real-speech corpus."""
    path = Path(root) / "manifest.json"
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text()).get("format") == CORPUS_FORMAT
    except (OSError, ValueError):
        return False


def read_real_manifest(root: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a finished real-speech corpus (one-line error otherwise)."""
    if not is_real_corpus(root):
        raise FileNotFoundError(f"{root}: not a finished real-speech corpus "
                                "(no manifest.json of format polydiff-speech-real-corpus)")
    return json.loads((Path(root) / "manifest.json").read_text())


def build_real_corpus(out_dir: str | os.PathLike[str], spec: RealCorpusSpec | None = None,
                      *, sources: str | os.PathLike[str] | None = None,
                      root: str | os.PathLike[str] | None = None, overwrite: bool = False,
                      show_progress: bool | None = None, **fields: Any) -> dict[str, Any]:
    """Build corpus ``spec`` (keywords override its fields) into ``out_dir``; returns the
    manifest. The sources pack is copied from ``sources`` when given (it must match
    ``spec.sources``), else built (fetching the Debian packages once; ``root``: where they
    are unpacked). Written into a temporary folder renamed into place at the end."""
    from polydiff.core.utils import atomic_dir

    spec = replace(spec or RealCorpusSpec(), **fields)
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out}: already exists (pass overwrite=True to replace it)")
    with atomic_dir(out) as tmp:
        if sources is not None:
            pack = Sources(sources)
            if pack.index["spec"] != json.loads(json.dumps(asdict(spec.sources))):
                raise ValueError(f"{sources}: sources pack built from another SourcesSpec")
            shutil.copytree(sources, tmp / "sources")
        else:
            build_sources(tmp / "sources", spec.sources, root=root,
                          show_progress=show_progress)
        pack = Sources(tmp / "sources")
        splits = {"train": [],
                  "valid": _eval_split(pack, spec, "valid", spec.n_valid, tmp),
                  "test": _eval_split(pack, spec, "test", spec.n_test, tmp)}
        manifest = {"format": CORPUS_FORMAT, "version": CORPUS_VERSION, "task": "denoise",
                    "sample_rate": spec.sample_rate, "target": "clean", "input": "noisy",
                    "spec": spec.to_dict(), "key": spec.key(),
                    "speakers": {s: {k: v for k, v in info.items() if k != "prompts"}
                                 for s, info in pack.speakers.items()},
                    "sources_bytes": pack.nbytes(), "splits": splits}
        text = json.dumps(manifest, indent=1) + "\n"
        atomic_write(tmp / "manifest.json", text)
    return json.loads(text)


def cached_real_corpus(spec: RealCorpusSpec | None = None, *,
                       cache: str | os.PathLike[str] | None = None,
                       show_progress: bool | None = None, **fields: Any) -> Path:
    """The folder of corpus ``spec`` under ``cache`` (default ``cache_dir("speech")``),
    ``real-<sample rate>-<hash>``; built on first use (reusing the sources pack of any
    cached corpus with the same :class:`SourcesSpec`), reused afterwards."""
    spec = replace(spec or RealCorpusSpec(), **fields)
    base = Path(cache) if cache is not None else cache_dir("speech")
    path = base / f"real-{spec.sample_rate // 1000}k-{spec.key()}"
    if is_real_corpus(path):
        return path
    donor = None
    for other in sorted(base.glob("real-*")) if base.is_dir() else []:
        try:
            pack = Sources(other / "sources")
        except (FileNotFoundError, ValueError):
            continue
        if pack.index.get("spec") == json.loads(json.dumps(asdict(spec.sources))):
            donor = other / "sources"
            break
    try:
        build_real_corpus(path, spec, sources=donor, overwrite=path.exists(),
                          show_progress=show_progress)
    except FileExistsError:
        if not is_real_corpus(path):
            raise
    return path


# ----------------------------------------------------------------------------- training
class MixingSource:
    """Training pairs of a real-speech corpus mixed on the fly (see the module docstring).

    ``sample(positions, generator)`` returns ``(clean, noisy)`` float32 tensors ``(B,
    segment_length)`` on the generator's device, normalised by the noisy peak; pass it to
    :class:`~polydiff.core.training.data.SampledData`. Everything random is drawn from
    ``generator`` (the training loop seeds one per step), so batches are reproducible and a
    resumed run continues with the same ones; ``positions`` only set the batch size.

    Args:
        corpus: a corpus folder of :func:`build_real_corpus` (or a sources pack folder).
        sample_rate: the model's rate (default: the corpus's).
        segment_length: samples per example.
        split: whose speakers are the clean speech (``train``; ``valid`` for checks).
        snr_db, reverb_prob, noises: override the corpus spec's training settings.
        bank_seconds: seconds of each noise type generated once (training crops are random
            windows of it; babble and speech-shaped noise from the training pool).
        seed: the seed of the noise banks and of the pauses between prompts.
    """

    def __init__(self, corpus: str | os.PathLike[str], *, segment_length: int,
                 sample_rate: int | None = None, split: str = "train",
                 snr_db: tuple[float, float] | None = None, reverb_prob: float | None = None,
                 noises: Sequence[str] | None = None, bank_seconds: float = 60.0,
                 seed: int = 0):
        import torch

        root = Path(corpus)
        spec = RealCorpusSpec(**read_real_manifest(root)["spec"]) if is_real_corpus(root) \
            else RealCorpusSpec()
        src = Sources(root / "sources" if (root / "sources").is_dir() else root)
        self.sample_rate = sr = int(sample_rate or spec.sample_rate)
        if segment_length < 64:
            raise ValueError(f"segment_length must be >= 64 samples, got {segment_length}")
        self.segment_length = int(segment_length)
        self.snr_db = tuple(float(v) for v in (snr_db or spec.snr_db))
        self.reverb_prob = float(spec.reverb_prob if reverb_prob is None else reverb_prob)
        self.noises = tuple(noises or spec.noises)
        speakers = src.with_role(split)
        if not speakers:
            raise ValueError(f"{root}: no {split} speakers in the sources pack")
        rng = _seeded(seed, 0x7EA1)
        parts = [x for s in speakers for _, x in src.prompts(s)]
        order = rng.permutation(len(parts))
        speech = _at_rate(_stream([parts[i] for i in order], rng, SOURCE_RATE), sr)
        babble_speakers = speakers + (src.with_role("babble") if split == "train" else [])
        pool = _at_rate(_stream([x for s in babble_speakers for _, x in src.prompts(s)], rng,
                                SOURCE_RATE), sr)
        n_bank = int(bank_seconds * sr)
        banks = [make_real_noise(k, n_bank, _seeded(seed, 0xB4, i), sr, pool)
                 for i, k in enumerate(self.noises)]
        rirs = src.rirs(sr)
        width = max(h.size for h in rirs)
        rir_bank = np.zeros((len(rirs), width), dtype=np.float32)
        for i, h in enumerate(rirs):
            rir_bank[i, :h.size] = h
        self._cpu = {"speech": torch.from_numpy(speech.astype(np.float32)),
                     "noise": torch.from_numpy(np.stack(banks).astype(np.float32)),
                     "rirs": torch.from_numpy(rir_bank)}
        self._on: dict[str, dict[str, Any]] = {}
        self.speakers = speakers
        self.seconds_of_speech = speech.size / sr

    def _tensors(self, device: Any) -> dict[str, Any]:
        key = str(device)
        if key not in self._on:
            self._on[key] = {k: v.to(device) for k, v in self._cpu.items()}
        return self._on[key]

    def __len__(self) -> int:  # notional: one "epoch" is the training speech once
        return max(1, int(self.seconds_of_speech * self.sample_rate // self.segment_length))

    def sample(self, positions: Any, generator: Any = None) -> tuple[Any, Any]:
        """A batch of ``len(positions)`` ``(clean, noisy)`` pairs (see the class docstring)."""
        import torch

        b = len(positions)
        dev = generator.device if generator is not None else torch.device("cpu")
        t = self._tensors(dev)
        n, sr = self.segment_length, self.sample_rate
        speech, noise, rirs = t["speech"], t["noise"], t["rirs"]
        ctx = rirs.shape[1]

        def randint(high: int, size: int) -> Any:
            return torch.randint(0, max(1, high), (size,), generator=generator, device=dev)

        def rand(size: int) -> Any:
            return torch.rand(size, generator=generator, device=dev)

        ar = torch.arange(n + ctx, device=dev)
        start = randint(speech.numel() - n - ctx, b)
        seg = speech[(start[:, None] + ar).clamp_max(speech.numel() - 1)]  # (B, n + ctx)
        use = rand(b) < self.reverb_prob
        which = randint(rirs.shape[0], b)
        size = 1 << int(math.ceil(math.log2(n + 2 * ctx)))
        wet = torch.fft.irfft(torch.fft.rfft(seg, size) * torch.fft.rfft(rirs[which], size),
                              size)[:, ctx:ctx + n]
        clean = torch.where(use[:, None], wet, seg[:, ctx:])
        kind = randint(noise.shape[0], b)
        nstart = randint(noise.shape[1] - n, b)
        noisy_part = noise[kind[:, None], (nstart[:, None] + ar[:n])]
        lo, hi = self.snr_db
        snr = lo + (hi - lo) * rand(b)
        flen = max(1, int(0.02 * sr))
        nf = n // flen
        frames = clean[:, :nf * flen].reshape(b, nf, flen).square().mean(-1)
        active = frames >= frames.amax(1, keepdim=True) * 1e-4
        p_s = (frames * active).sum(1) / active.sum(1).clamp_min(1)
        p_n = noisy_part.square().mean(1).clamp_min(1e-12)
        gain = torch.sqrt(p_s / (p_n * 10.0 ** (snr / 10.0)))
        noisy = clean + gain[:, None] * noisy_part
        peak = noisy.abs().amax(1, keepdim=True).clamp_min(1e-8)
        return (clean / peak).float(), (noisy / peak).float()

    def __repr__(self) -> str:
        return (f"MixingSource(speakers={self.speakers}, sample_rate={self.sample_rate}, "
                f"segment_length={self.segment_length}, speech={self.seconds_of_speech:.0f} s, "
                f"noises={self.noises}, snr_db={self.snr_db}, reverb_prob={self.reverb_prob})")


def describe(root: str | os.PathLike[str]) -> str:
    """One line about a real-speech corpus folder."""
    m = read_real_manifest(root)
    sp = m["speakers"]
    roles = {r: [s for s, v in sp.items() if v["role"] == r] for r in ("train", "valid", "test")}
    return one_line(f"real speech at {m['sample_rate']} Hz: train {', '.join(roles['train'])}; "
                    f"valid {', '.join(roles['valid'])}; test {', '.join(roles['test'])}; "
                    f"{len(m['splits']['test'])} test files")
