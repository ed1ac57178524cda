"""espeak-ng through ctypes: offline speech synthesis in many voices (the clean speech of the
offline corpus, and later TTS data).

The library and its voice data ship in the ``espeakng-loader`` wheel (``polydiff-speech[corpus]``).
:func:`synthesize` renders text to a float32 waveform (22.05 kHz, or resampled) with a voice
(``name+variant``), rate, pitch and pitch range. espeak-ng keeps global state that no API call
resets, so each utterance is synthesised on a freshly loaded private copy of the library under
a lock: the same call gives the same samples, whatever was said before. Voice variants with
breath noise are not reproducible (:func:`is_reproducible`). Formant speech is not natural
speech: see :mod:`polydiff.speech.corpus`.
"""

from __future__ import annotations

import _ctypes
import atexit
import contextlib
import ctypes
import functools
import math
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["EspeakError", "PhonemeEvent", "espeak_info", "has_voice", "is_reproducible",
           "synthesize", "synthesize_with_events", "text_to_phonemes", "voice_names"]

_AUDIO_OUTPUT_SYNCHRONOUS = 2  # retrieval through the callback, synchronous espeak_Synth
_INITIALIZE_DONT_EXIT = 0x8000
_INITIALIZE_PHONEME_EVENTS, _INITIALIZE_PHONEME_IPA = 0x0001, 0x0002
_EVENT_PHONEME = 7
_CHARS_UTF8 = 1
_RATE, _PITCH, _RANGE, _WORDGAP = 1, 3, 4, 7
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.c_void_p)
_LOCK = threading.RLock()  # espeak-ng keeps global state: one synthesis at a time
_ENGINE: _Espeak | None = None


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p),
                ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    """``espeak_EVENT`` of ``speak_lib.h``."""

    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint),
                ("text_position", ctypes.c_int), ("length", ctypes.c_int),
                ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _EventId)]


class PhonemeEvent(tuple):
    """``(phoneme, start_ms)``: one phoneme of a synthesised utterance (IPA) and the time
    (milliseconds from the start of the wave) at which the synthesiser starts it."""

    __slots__ = ()

    def __new__(cls, phoneme: str, start_ms: int) -> PhonemeEvent:
        return super().__new__(cls, (phoneme, int(start_ms)))

    @property
    def phoneme(self) -> str:
        return self[0]

    @property
    def start_ms(self) -> int:
        return self[1]


class EspeakError(RuntimeError):
    """espeak-ng could not be loaded, initialised, or asked for an unknown voice."""


def _locate() -> tuple[str, str]:
    try:
        import espeakng_loader
    except ImportError:
        raise EspeakError("espeak-ng not found: install the extra 'polydiff-speech[corpus]' "
                          "(espeakng-loader)") from None
    return espeakng_loader.get_library_path(), espeakng_loader.get_data_path()


class _Espeak:
    """espeak-ng through ctypes, with a fresh library state for every utterance.

    The synthesiser keeps state between utterances (glottal phase, flutter index, echo
    buffer, random generator) that no API call resets, so the same text would sound
    slightly different depending on what was said before. Each :meth:`synth` therefore
    runs on a freshly loaded private copy of the library (``dlopen`` of a copy that only
    this object opens, so state shared with other users of espeak-ng is impossible), which
    makes synthesis a pure function of its arguments. Use only under ``_LOCK``.
    """

    lib: Any  # the loaded ctypes.CDLL (None while unloaded)

    def __init__(self) -> None:
        self.src_path, self.data_path = _locate()
        if not Path(self.src_path).is_file() or not Path(self.data_path).is_dir():
            raise EspeakError(f"espeak-ng library or data missing: {self.src_path}, "
                              f"{self.data_path}")
        self._dir = tempfile.mkdtemp(prefix="polydiff-espeak-")
        atexit.register(shutil.rmtree, self._dir, True)
        self._count, self._path = 0, ""
        self.lib = None
        self._chunks: list[np.ndarray] = []
        self._events: list[PhonemeEvent] = []
        self.options = 0
        self._callback = _CALLBACK(self._collect)  # keep a reference: C holds the pointer
        self.reload()
        self.version = (self.lib.espeak_Info(None) or b"?").decode()

    def reload(self, options: int | None = None) -> None:
        """Unload the current copy (if any) and load and initialise a fresh one
        (``options``: ``espeak_Initialize`` flags such as phoneme events; default: keep)."""
        if options is not None:
            self.options = options
        if self.lib is not None:
            self.lib.espeak_Terminate()
            if hasattr(_ctypes, "dlclose"):
                _ctypes.dlclose(self.lib._handle)
            self.lib = None
            with contextlib.suppress(OSError):  # Windows keeps a loaded DLL's file locked
                Path(self._path).unlink(missing_ok=True)
        self._count += 1  # a new file name: a fresh instance even if dlclose kept the old
        os.makedirs(self._dir, exist_ok=True)  # a forked child may have removed it at exit
        self._path = os.path.join(self._dir, f"libespeak-ng-{os.getpid()}-{self._count}.so")
        shutil.copyfile(self.src_path, self._path)
        try:
            lib = ctypes.CDLL(self._path)
        except OSError as err:
            raise EspeakError(f"cannot load espeak-ng library {self.src_path}: {err}") from None
        for name, args, res in (
                ("espeak_Initialize", [ctypes.c_int, ctypes.c_int, ctypes.c_char_p,
                                       ctypes.c_int], ctypes.c_int),
                ("espeak_SetSynthCallback", [_CALLBACK], None),
                ("espeak_SetVoiceByName", [ctypes.c_char_p], ctypes.c_int),
                ("espeak_SetParameter", [ctypes.c_int] * 3, ctypes.c_int),
                ("espeak_Synth", [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint,
                                  ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
                                  ctypes.c_void_p, ctypes.c_void_p], ctypes.c_int),
                ("espeak_Info", [ctypes.c_void_p], ctypes.c_char_p),
                ("espeak_TextToPhonemes", [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int,
                                           ctypes.c_int], ctypes.c_char_p),
                ("espeak_Terminate", [], ctypes.c_int)):
            getattr(lib, name).argtypes, getattr(lib, name).restype = args, res
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, self.data_path.encode(),
                                     _INITIALIZE_DONT_EXIT | self.options)
        if rate <= 0:
            raise EspeakError(f"espeak_Initialize failed (data folder {self.data_path})")
        lib.espeak_SetSynthCallback(self._callback)
        self.lib, self.sample_rate, self.fresh = lib, int(rate), True

    def _collect(self, wav: Any, n: int, events: Any) -> int:
        if n > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        if self.options & _INITIALIZE_PHONEME_EVENTS and events:
            ev = ctypes.cast(events, ctypes.POINTER(_Event))
            i = 0
            while ev[i].type != 0:  # espeakEVENT_LIST_TERMINATED
                if ev[i].type == _EVENT_PHONEME:
                    name = ev[i].id.string.decode("utf-8", errors="replace")
                    self._events.append(PhonemeEvent(name, ev[i].audio_position))
                i += 1
        return 0

    def set_voice(self, voice: str) -> None:
        self.fresh = False  # loading a voice changes state: the next synth reloads first
        name, _, variant = voice.partition("+")
        if variant and not (Path(self.data_path) / "voices" / "!v" / variant).is_file():
            raise EspeakError(f"unknown espeak-ng voice variant {variant!r} in {voice!r}")
        if not name or self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise EspeakError(f"unknown espeak-ng voice {voice!r}")

    def synth(self, text: str, voice: str, params: dict[int, int],
              options: int = 0) -> np.ndarray:
        if not self.fresh or options != self.options:
            self.reload(options)
        self.set_voice(voice)  # before the parameters: selecting a voice resets them
        for key, value in params.items():
            self.lib.espeak_SetParameter(key, int(value), 0)
        payload = text.encode("utf-8")
        self._chunks, self._events = [], []
        rc = self.lib.espeak_Synth(payload, len(payload) + 1, 0, 0, 0, _CHARS_UTF8, None, None)
        chunks, self._chunks = self._chunks, []
        if rc != 0:
            raise EspeakError(f"espeak_Synth failed with code {rc} for {text[:40]!r}")
        return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)

    def phonemes(self, text: str, voice: str, separator: str) -> list[str]:
        self.set_voice(voice)
        buf = ctypes.create_string_buffer(text.encode("utf-8"))
        ptr = ctypes.c_void_p(ctypes.addressof(buf))
        mode = _INITIALIZE_PHONEME_IPA | (ord(separator) << 8)  # bit 1: IPA; bits 8-23: sep
        out = []
        while ptr.value:
            res = self.lib.espeak_TextToPhonemes(ctypes.byref(ptr), _CHARS_UTF8, mode)
            if res:
                out.append(res.decode("utf-8", errors="replace"))
        return out


def _engine() -> _Espeak:
    global _ENGINE
    with _LOCK:
        if _ENGINE is None:
            _ENGINE = _Espeak()
        return _ENGINE


def espeak_info() -> dict[str, Any]:
    """``{"version", "sample_rate", "data_path"}`` of the loaded espeak-ng."""
    with _LOCK:
        eng = _engine()
    return {"version": eng.version, "sample_rate": eng.sample_rate, "data_path": eng.data_path}


def synthesize(text: str, voice: str = "en", *, rate: int = 175, pitch: int = 50,
               pitch_range: int = 50, word_gap: int = 0,
               sample_rate: int | None = None) -> np.ndarray:
    """Speak ``text`` with espeak-ng; a float32 wave in [-1, 1] at ``sample_rate`` (None: the
    synthesiser's own rate, 22050 Hz). ``voice`` is an espeak-ng voice name with an optional
    ``+variant`` (``"en-us"``, ``"en+f3"``, ``"de+m2"``); ``rate`` in words per minute,
    ``pitch`` and ``pitch_range`` in 0-100, ``word_gap`` in units of 10 ms.
    Thread-safe (one global lock); raises :class:`EspeakError` for an unknown voice."""
    with _LOCK:
        eng = _engine()
        raw = eng.synth(text, voice, {_RATE: rate, _PITCH: pitch, _RANGE: pitch_range,
                                      _WORDGAP: word_gap})
        native = eng.sample_rate
    wave = raw.astype(np.float32) / 32768.0
    if sample_rate is not None and sample_rate != native and wave.size:
        from scipy.signal import resample_poly

        g = math.gcd(native, int(sample_rate))
        up, down = int(sample_rate) // g, native // g
        # a copy: resample_poly scales the filter it is given in place
        wave = resample_poly(wave.astype(np.float64), up, down,
                             window=_lowpass(up, down).copy())
        wave = wave.astype(np.float32)
    return wave


@functools.lru_cache(maxsize=8)
def _lowpass(up: int, down: int) -> np.ndarray:
    """resample_poly's own default filter (Kaiser, beta 5), designed once per ratio."""
    from scipy.signal import firwin

    m = max(up, down)
    return firwin(20 * m + 1, 1.0 / m, window=("kaiser", 5.0))


def is_reproducible(voice: str) -> bool:
    """False for voice variants with breath noise (``breath`` lines, e.g. ``+f2``, ``+f3``,
    ``+f5``, ``+whisper``): with them espeak-ng 1.52's output changes with the process's
    memory layout, so the same call is not bit-identical from run to run."""
    variant = voice.partition("+")[2]
    if not variant:
        return True
    with _LOCK:
        path = Path(_engine().data_path) / "voices" / "!v" / variant
    lines = path.read_text(errors="replace").splitlines() if path.is_file() else []
    return not any(line.split()[:1] == ["breath"] for line in lines)


def voice_names() -> list[str]:
    """The voice (language) names espeak-ng's data folder holds (``"es"``, ``"es-419"``,
    ``"en-us"``, ``"fr"``, ...), sorted."""
    with _LOCK:
        data = Path(_engine().data_path)
    return sorted(p.name for p in (data / "lang").rglob("*") if p.is_file())


def has_voice(voice: str) -> bool:
    """True if ``voice`` (without a ``+variant``) is one of :func:`voice_names`."""
    return voice.partition("+")[0] in set(voice_names())


def text_to_phonemes(text: str, voice: str = "en", *, separator: str = "_") -> list[str]:
    """espeak-ng's phonemes of ``text`` in IPA (``espeak_TextToPhonemes``), one string per
    clause as espeak-ng splits them (at punctuation): words separated by spaces, phonemes
    within a word by ``separator``, stress marks (``ˈ``, ``ˌ``) prefixed to the stressed
    vowel. Numbers, dates and the abbreviations espeak-ng knows come out as the words of the
    voice's language. Raises :class:`EspeakError` for an unknown voice."""
    if len(separator) != 1 or ord(separator) > 0xFFFF:
        raise ValueError("separator must be one character of the basic multilingual plane")
    with _LOCK:
        return _engine().phonemes(text, voice, separator)


def synthesize_with_events(text: str, voice: str = "en", *, rate: int = 175, pitch: int = 50,
                           pitch_range: int = 50, word_gap: int = 0
                           ) -> tuple[np.ndarray, int, list[PhonemeEvent]]:
    """As :func:`synthesize` at the synthesiser's own rate, plus the phoneme events
    (``espeakINITIALIZE_PHONEME_EVENTS``, IPA names): ``(wave, sample_rate, events)``, where
    each :class:`PhonemeEvent` says which phoneme starts at which millisecond, pauses
    included (``_`` names are dropped by espeak-ng; a pause shows as a gap)."""
    with _LOCK:
        eng = _engine()
        raw = eng.synth(text, voice, {_RATE: rate, _PITCH: pitch, _RANGE: pitch_range,
                                      _WORDGAP: word_gap},
                        options=_INITIALIZE_PHONEME_EVENTS | _INITIALIZE_PHONEME_IPA)
        events, eng._events = list(eng._events), []
        native = eng.sample_rate
    return raw.astype(np.float32) / 32768.0, native, events
