"""Text to speech with a trained voice: the :class:`Voice` bundle and its sampling methods.

A voice folder holds ``acoustic/`` (the teacher: encoder, variance adaptor and decoder),
``student-2/`` and ``student-1/`` (distilled decoders, core WaveNets), optionally
``regression/`` (the FastSpeech 2-style baseline) and ``vocoder/`` (the diffusion vocoder),
each a ``save_pretrained`` folder, plus ``voice.json`` (language, speaker, notes).

Methods (:data:`METHODS`): ``teacher-4`` (core's DDIM on ProDiff's grid ``t_i = i / 4``),
``student-2`` and ``student-1`` (the distilled decoders on the halved grids; ProDiff's
default is ``student-2``), ``ddpm-50`` (core's ancestral DDPM sampler, 50 steps, with the
teacher network) and ``regression`` (one pass of the regression decoder). Vocoders:
``griffin-lim`` (always available) and ``diffusion`` (:class:`~polydiff.speech.prodiff.model.
DiffVocoder`). Text is synthesised a sentence at a time and joined, so there is no cap on
its length.

Sampling temperature: the DDIM methods (``teacher-4``, ``student-2``, ``student-1``; core's
:func:`~polydiff.core.samplers.sample_ddim` with ``eta = 0``, deterministic given its start)
start from ``temperature`` times a draw of the prior ``N(0, I)``. ``1`` is the plain sampler;
``0`` starts every prompt from zero, so the first step's ``x0`` estimate is the network's
conditional-mean-like prediction and the result no longer depends on the seed. The default of
a voice is ``voice.json``'s ``temperature`` (``1`` when absent; the starter voice's is chosen
on its validation prompts). ``ddpm-50`` (ancestral: fresh noise at every step) and
``regression`` ignore it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from polydiff.speech.prodiff.data import PhonemeVocab
from polydiff.speech.prodiff.features import MelConfig, griffin_lim
from polydiff.speech.prodiff.model import DiffVocoder, ProDiffAcoustic
from polydiff.speech.prodiff.text import TextFrontEnd, Token
from polydiff.speech.prodiff.train import teacher_grid

__all__ = ["METHODS", "VOCODERS", "Synthesis", "Voice", "check_temperature"]

METHODS = ("student-2", "student-1", "teacher-4", "ddpm-50", "regression")
VOCODERS = ("griffin-lim", "diffusion")


@dataclass
class Synthesis:
    """One synthesised sentence (or text): log-mel ``(T, n_mels)``, wave, durations."""

    logmel: Tensor
    wave: np.ndarray
    durations: Tensor
    sample_rate: int


class Voice:
    """A trained voice (module docstring)."""

    def __init__(self, acoustic: ProDiffAcoustic, students: dict[int, nn.Module] | None = None,
                 regression: ProDiffAcoustic | None = None,
                 vocoder: DiffVocoder | None = None, info: dict[str, Any] | None = None):
        self.acoustic = acoustic.eval()
        self.students = {int(k): v.eval() for k, v in (students or {}).items()}
        self.regression = regression.eval() if regression is not None else None
        self.vocoder = vocoder.eval() if vocoder is not None else None
        self.info = dict(info or {})
        cfg = acoustic.config
        self.vocab = PhonemeVocab(cfg.symbols)
        self.frontend = TextFrontEnd(cfg.language)

    @property
    def mel_config(self) -> MelConfig:
        return self.acoustic.config.mel

    @property
    def sample_rate(self) -> int:
        return self.acoustic.config.sample_rate

    def methods(self) -> list[str]:
        """The methods this voice can run."""
        out = ["teacher-4", "ddpm-50"]
        out += [f"student-{k}" for k in sorted(self.students, reverse=True)]
        if self.regression is not None:
            out.append("regression")
        return out

    @property
    def temperature(self) -> float:
        """The voice's default sampling temperature (``voice.json``; 1 when absent)."""
        return check_temperature(self.info.get("temperature", 1.0))

    def vocoders(self) -> list[str]:
        return ["griffin-lim"] + (["diffusion"] if self.vocoder is not None else [])

    # ------------------------------------------------------------------ files
    def save(self, folder: str | os.PathLike[str], *, half: bool = False) -> Path:
        """Write the voice folder (``half``: store float16 weights, as the starter voice)."""
        from polydiff.core.nn.hub import save_pretrained
        from polydiff.core.utils import atomic_write

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)

        def put(model: nn.Module, name: str) -> None:
            m = copy_half(model) if half else model
            save_pretrained(m, folder / name)

        put(self.acoustic, "acoustic")
        for k, net in self.students.items():
            put(net, f"student-{k}")
        if self.regression is not None:
            put(self.regression, "regression")
        if self.vocoder is not None:
            put(self.vocoder, "vocoder")
        atomic_write(folder / "voice.json", json.dumps(self.info, indent=2, sort_keys=True)
                     + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike[str], device: str = "cpu") -> Voice:
        """Read a voice folder (one-line errors for a folder that is not a voice)."""
        from polydiff.core.nn.hub import from_pretrained

        folder = Path(folder)
        if not (folder / "acoustic" / "config.json").is_file():
            raise FileNotFoundError(f"{folder}: not a prodiff voice (no acoustic/config.json)")

        def get(name: str) -> Any:
            p = folder / name
            return from_pretrained(p).float().to(device) if (p / "config.json").is_file() \
                else None

        acoustic = get("acoustic")
        if not isinstance(acoustic, ProDiffAcoustic):
            raise ValueError(f"{folder}/acoustic: not a ProDiff acoustic model")
        students = {}
        for p in sorted(folder.glob("student-*")):
            students[int(p.name.split("-")[1])] = get(p.name)
        info = json.loads((folder / "voice.json").read_text()) \
            if (folder / "voice.json").is_file() else {}
        return cls(acoustic, students, get("regression"), get("vocoder"), info)

    # ------------------------------------------------------------------ synthesis
    def tokens(self, text: str) -> list[tuple[str, list[Token]]]:
        """Sentences of ``text`` as tokens (one-line errors for bad text)."""
        return self.frontend.sentences(text)

    @torch.no_grad()
    def mel(self, tokens: list[Token], method: str = "student-2", *, seed: int = 0,
            pace: float = 1.0, durations: Tensor | None = None,
            temperature: float | None = None) -> tuple[Tensor, Tensor]:
        """``(log-mel (T, n_mels), durations (N,))`` of one token sequence by ``method``;
        ``durations`` (frames per token) replace the predicted ones when given;
        ``temperature`` (module docstring) defaults to the voice's."""
        ids, stress, word = self.vocab.encode(tokens)
        return self.mel_ids(ids, stress, word, method, seed=seed, pace=pace,
                            durations=durations, temperature=temperature)

    @torch.no_grad()
    def mel_ids(self, ids: Tensor, stress: Tensor, word: Tensor, method: str = "student-2", *,
                seed: int = 0, pace: float = 1.0, durations: Tensor | None = None,
                temperature: float | None = None) -> tuple[Tensor, Tensor]:
        """:meth:`mel` from encoded tokens (``(N,)`` ids, stress, word starts)."""
        from polydiff.core.grids import time_grid
        from polydiff.core.samplers import sample_ddim, sample_ddpm

        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
        temp = self.temperature if temperature is None else check_temperature(temperature)
        dev = self.acoustic.mel_mean.device
        ids, stress, word = ids[None].to(dev), stress[None].to(dev), word[None].to(dev)
        mask = torch.ones_like(ids, dtype=torch.bool)
        d = None if durations is None else durations[None].to(ids.device)
        model = self.acoustic
        if method == "regression":
            if self.regression is None:
                raise ValueError("this voice has no regression model")
            model = self.regression
        out = model(ids, stress, word, mask, durations=d, pace=pace)
        cond = out["cond"]
        if method == "regression":
            mel = model.regress(cond)
        else:
            g = torch.Generator(device=cond.device).manual_seed(int(seed))
            proc = model.process
            x = proc.prior_sample((1, model.config.n_mels, cond.shape[-1]), generator=g,
                                  device=cond.device)
            steps = int(method.split("-")[1])
            if method == "ddpm-50":
                ts = time_grid(proc, steps, "uniform", t_end=0.0, device=cond.device)
                mel = sample_ddpm(model.denoiser(), x, ts, cond={"cond": cond}, generator=g,
                                  disable=True)
            else:
                net: nn.Module = model.net
                x = x * temp  # the same draw at every temperature (seeded above)
                if method.startswith("student"):
                    if steps not in self.students:
                        raise ValueError(f"this voice has no {steps}-step student")
                    net = self.students[steps]
                mel = sample_ddim(model.denoiser(net), x, teacher_grid(steps, cond.device),
                                  cond={"cond": cond}, disable=True)
        logmel = model.denormalize_mel(mel[0].T)
        return logmel, out["durations"][0]

    @torch.no_grad()
    def vocode(self, logmel: Tensor, vocoder: str = "griffin-lim", *, seed: int = 0
               ) -> np.ndarray:
        """A wave from a log-mel by ``vocoder`` (:data:`VOCODERS`)."""
        if vocoder == "griffin-lim":
            return griffin_lim(logmel.cpu(), self.mel_config).numpy()
        if vocoder == "diffusion":
            if self.vocoder is None:
                raise ValueError("this voice has no diffusion vocoder")
            g = torch.Generator(device=logmel.device).manual_seed(int(seed))
            return self.vocoder.vocode(logmel, generator=g).cpu().numpy()
        raise ValueError(f"unknown vocoder {vocoder!r}; choose from {', '.join(VOCODERS)}")

    def synthesize(self, text: str, method: str = "student-2", vocoder: str = "griffin-lim",
                   *, seed: int = 0, pace: float = 1.0, temperature: float | None = None
                   ) -> Synthesis:
        """Speak ``text`` (every sentence in turn, joined); ``temperature`` defaults to the
        voice's."""
        mels, waves, durs = [], [], []
        for k, (_, toks) in enumerate(self.tokens(text)):
            lm, d = self.mel(toks, method, seed=seed + k, pace=pace, temperature=temperature)
            mels.append(lm)
            durs.append(d)
            waves.append(self.vocode(lm, vocoder, seed=seed + k))
        return Synthesis(torch.cat(mels), np.concatenate(waves).astype(np.float32),
                         torch.cat(durs), self.sample_rate)


def check_temperature(value: Any) -> float:
    """``value`` as a sampling temperature: a finite number >= 0 (one-line error otherwise)."""
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"temperature must be a number >= 0, got {value!r}") from None
    if not (t >= 0.0 and t < float("inf")):
        raise ValueError(f"temperature must be a finite number >= 0, got {value!r}")
    return t


def copy_half(model: nn.Module) -> nn.Module:
    """A float16 copy of ``model`` (for compact starter weights)."""
    import copy

    return copy.deepcopy(model).half()
