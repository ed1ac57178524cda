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

__all__ = ["EspeakError", "espeak_info", "is_reproducible", "synthesize"]

_AUDIO_OUTPUT_SYNCHRONOUS = 2  # retrieval through the callback, synchronous espeak_Synth
_INITIALIZE_DONT_EXIT = 0x8000
_CHARS_UTF8 = 1
_RATE, _PITCH, _RANGE, _WORDGAP = 1, 3, 4, 7
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.c_void_p)
_LOCK = threading.RLock()  # espeak-ng keeps global state: one synthesis at a time
_ENGINE: _Espeak | None = None


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

    def __init__(self) -> None:
        self.src_path, self.data_path = _locate()
        if not Path(self.src_path).is_file() or not Path(self.data_path).is_dir():
            raise EspeakError(f"espeak-ng library or data missing: {self.src_path}, "
                              f"{self.data_path}")
        self._dir = tempfile.mkdtemp(prefix="polydiff-espeak-")
        atexit.register(shutil.rmtree, self._dir, True)
        self._count, self._path = 0, ""
        self.lib: Any = None
        self._chunks: list[np.ndarray] = []
        self._callback = _CALLBACK(self._collect)  # keep a reference: C holds the pointer
        self.reload()
        self.version = (self.lib.espeak_Info(None) or b"?").decode()

    def reload(self) -> None:
        """Unload the current copy (if any) and load and initialise a fresh one."""
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
                ("espeak_Terminate", [], ctypes.c_int)):
            getattr(lib, name).argtypes, getattr(lib, name).restype = args, res
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, self.data_path.encode(),
                                     _INITIALIZE_DONT_EXIT)
        if rate <= 0:
            raise EspeakError(f"espeak_Initialize failed (data folder {self.data_path})")
        lib.espeak_SetSynthCallback(self._callback)
        self.lib, self.sample_rate, self.fresh = lib, int(rate), True

    def _collect(self, wav: Any, n: int, _events: Any) -> int:
        if n > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    def set_voice(self, voice: str) -> None:
        self.fresh = False  # loading a voice changes state: the next synth reloads first
        name, _, variant = voice.partition("+")
        if variant and not (Path(self.data_path) / "voices" / "!v" / variant).is_file():
            raise EspeakError(f"unknown espeak-ng voice variant {variant!r} in {voice!r}")
        if not name or self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise EspeakError(f"unknown espeak-ng voice {voice!r}")

    def synth(self, text: str, voice: str, params: dict[int, int]) -> np.ndarray:
        if not self.fresh:
            self.reload()
        self.set_voice(voice)  # before the parameters: selecting a voice resets them
        for key, value in params.items():
            self.lib.espeak_SetParameter(key, int(value), 0)
        payload = text.encode("utf-8")
        self._chunks = []
        rc = self.lib.espeak_Synth(payload, len(payload) + 1, 0, 0, 0, _CHARS_UTF8, None, None)
        chunks, self._chunks = self._chunks, []
        if rc != 0:
            raise EspeakError(f"espeak_Synth failed with code {rc} for {text[:40]!r}")
        return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)


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
