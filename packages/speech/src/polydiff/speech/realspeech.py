"""Real human speech that works offline: Debian's voice-prompt packages.

Debian ships the professional voice prompts of a telephony system as packages: real
recordings of one speaker per language (8 kHz, 16-bit mono WAV), several hundred prompts
each, with their transcripts in a companion package. :func:`prompts` lists them as
:class:`Prompt` records (name, speaker, language, audio path, transcript), fetching each
package once into polydiff's cache (:func:`polydiff.core.utils.fetch_debian_package`); after
that everything works offline.

================  ==========================================  ====================  =========
speaker           audio package                               transcripts           language
================  ==========================================  ====================  =========
es_MX_f_Allison   ``asterisk-core-sounds-es-wav``             ``...-es``            Spanish
fr_CA_f_June      ``asterisk-core-sounds-fr-wav``             ``...-fr``            French
it_IT_m_Carlo     ``asterisk-core-sounds-it-wav``             ``...-it``            Italian
ru_RU_f_...       ``asterisk-core-sounds-ru-wav``             ``...-ru``            Russian
it_IT_f_Menardi   ``asterisk-prompt-it-menardi-wav``          none                  Italian
fr_FR_f_Armelle   ``asterisk-prompt-fr-armelle`` (GSM)        none                  French
es_CO_f_July      ``asterisk-prompt-es-co`` (GSM)             none                  Spanish
================  ==========================================  ====================  =========

The last two packages hold raw GSM 06.10 files (``.gsm``, 8 kHz, the codec of a telephone
network: audibly band-limited and coded); :func:`load_prompt` decodes them with libsndfile
(``soundfile``'s ``RAW`` format, ``GSM610`` subtype), no other tool needed.

The English prompt packages (``asterisk-core-sounds-en*``) and the music-on-hold packages
(``asterisk-moh-*``) are reserved for independent evaluation of this project: they are
refused here. ``silence/`` files are skipped.
"""

from __future__ import annotations

import gzip
import os
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from polydiff.core.utils import fetch_debian_package

__all__ = ["GSM_SPEAKERS", "LANGUAGES", "SPEAKERS", "Prompt", "is_reserved", "load_prompt",
           "prompts", "read_transcripts"]

# speaker -> (audio package, transcript package or None, language)
SPEAKERS: dict[str, tuple[str, str | None, str]] = {
    "es_MX_f_Allison": ("asterisk-core-sounds-es-wav", "asterisk-core-sounds-es", "es"),
    "fr_CA_f_June": ("asterisk-core-sounds-fr-wav", "asterisk-core-sounds-fr", "fr"),
    "it_IT_m_Carlo": ("asterisk-core-sounds-it-wav", "asterisk-core-sounds-it", "it"),
    "ru_RU_f_IvrvoiceRU": ("asterisk-core-sounds-ru-wav", "asterisk-core-sounds-ru", "ru"),
    "it_IT_f_Menardi": ("asterisk-prompt-it-menardi-wav", None, "it"),
    "fr_FR_f_Armelle": ("asterisk-prompt-fr-armelle", None, "fr"),
    "es_CO_f_July": ("asterisk-prompt-es-co", None, "es"),
}
#: Speakers whose prompts are GSM 06.10 coded (``.gsm``) rather than 16-bit WAV.
GSM_SPEAKERS = ("fr_FR_f_Armelle", "es_CO_f_July")
_AUDIO_SUFFIXES = (".wav", ".gsm")
LANGUAGES = ("es", "fr", "it", "ru")
_RESERVED_PREFIXES = ("asterisk-core-sounds-en", "asterisk-moh-")


def is_reserved(package: str) -> bool:
    """True for packages kept for independent evaluation (English prompts, music on hold)."""
    return package.startswith(_RESERVED_PREFIXES)


@dataclass(frozen=True)
class Prompt:
    """One recorded prompt: ``name`` is its path below the speaker's folder without
    ``.wav`` (e.g. ``digits/7``), ``text`` its transcript (``None`` where the package has
    none)."""

    name: str
    speaker: str
    language: str
    path: Path
    text: str | None


def read_transcripts(path: str | os.PathLike[str]) -> dict[str, str]:
    """``name -> text`` from a ``core-sounds-XX.txt(.gz)`` file (``name: text`` per line,
    ``;`` comments)."""
    p = Path(path)
    opener = gzip.open if p.suffix == ".gz" else open
    out: dict[str, str] = {}
    with opener(p, "rt", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            line = line.strip()
            if not line or line.startswith(";") or ":" not in line:
                continue
            name, text = line.split(":", 1)
            if name.strip() and text.strip():
                out[name.strip()] = " ".join(text.split())
    return out


def _fetch(package: str, root: str | os.PathLike[str] | None) -> Path:
    if is_reserved(package):
        raise ValueError(f"{package} is reserved for independent evaluation and is not used")
    return fetch_debian_package(package, root=root)


def prompts(speakers: Sequence[str] | None = None, *, with_text: bool = False,
            root: str | os.PathLike[str] | None = None) -> list[Prompt]:
    """Every prompt of ``speakers`` (default: all of :data:`SPEAKERS`), sorted by speaker and
    name, fetching the packages on first use (``root``: where packages are unpacked, default
    polydiff's cache). ``with_text`` keeps only prompts that have a transcript."""
    chosen = list(SPEAKERS) if speakers is None else list(speakers)
    unknown = [s for s in chosen if s not in SPEAKERS]
    if unknown:
        raise ValueError(f"unknown speaker {unknown[0]!r} (choose from {', '.join(SPEAKERS)})")
    out: list[Prompt] = []
    for speaker in chosen:
        audio_pkg, text_pkg, lang = SPEAKERS[speaker]
        audio_root = _fetch(audio_pkg, root)
        texts: dict[str, str] = {}
        if text_pkg is not None:
            for f in sorted(_fetch(text_pkg, root).rglob("core-sounds-*.txt*")):
                texts.update(read_transcripts(f))
        wavs = sorted(f for f in (audio_root / "usr" / "share").rglob("*")
                      if f.suffix in _AUDIO_SUFFIXES and f.is_file())
        base = _speaker_dir(wavs)
        for w in wavs:
            rel = w.relative_to(base).with_suffix("").as_posix()
            if rel.split("/")[0] == "silence":
                continue
            text = texts.get(rel)
            if with_text and text is None:
                continue
            out.append(Prompt(rel, speaker, lang, w, text))
    return out


def _speaker_dir(wavs: Sequence[Path]) -> Path:
    """The deepest folder above every file (the speaker's folder)."""
    if not wavs:
        raise ValueError("the package holds no WAV files")
    common = Path(os.path.commonpath([str(w.parent) for w in wavs]))
    return common


def load_prompt(prompt: Prompt | str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """``(samples, sample_rate)``: mono float32 in [-1, 1] from a prompt's 16-bit WAV (or
    raw GSM 06.10 ``.gsm`` file, 8 kHz)."""
    path = prompt.path if isinstance(prompt, Prompt) else Path(prompt)
    if path.suffix == ".gsm":
        import soundfile as sf

        data, sr = sf.read(str(path), format="RAW", subtype="GSM610", samplerate=8000,
                           channels=1, dtype="float32")
        return np.ascontiguousarray(data), int(sr)
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16-bit PCM, got {8 * w.getsampwidth()}-bit")
        sr, ch = w.getframerate(), w.getnchannels()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    x = data.astype(np.float32) / 32768.0
    if ch > 1:
        x = x.reshape(-1, ch).mean(axis=1)
    return x, sr
