"""The recipe of a voice: corpus, held-out split, model sizes and training budgets in one typed
settings object, and the two stages that the ``prodiff`` app's ``train-teacher`` and
``distill`` verbs run (and the starter voice was made with).

Stage 1, :func:`train_teacher_stage`: build (or load from the cache) the corpus and split;
train the teacher (``RUN/teacher``), the FastSpeech 2-style regression baseline of the same
size and budget (``RUN/regression``) and the diffusion vocoder (``RUN/vocoder``).
Stage 2, :func:`distill_stage`: distil the teacher 4 -> 2 -> 1 (``RUN/distill/4to2``,
``2to1``) and write the voice folder ``RUN/voice``. Every sub-run resumes from its latest
checkpoint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from polydiff.speech.prodiff.data import DEFAULT_SPEAKER, Corpus, split_names

__all__ = ["CORPUS_VERSION", "VoiceSettings", "distill_stage", "load_corpus",
           "train_teacher_stage"]

CORPUS_VERSION = 1

M = TypeVar("M", bound=nn.Module)


@dataclass
class VoiceSettings:
    """Everything a voice is made from (saved as ``RUN/settings.json``).

    Data: ``speaker`` (a :mod:`~polydiff.speech.realspeech` speaker, or ``formant`` for the
    espeak-ng corpus), ``language`` (espeak-ng voice), ``ljspeech`` (a folder in the LJSpeech
    layout instead), ``max_seconds``, held-out ``n_valid`` / ``n_test`` prompts (by name hash,
    ``split_seed``). Model sizes as :class:`~polydiff.speech.prodiff.model.AcousticConfig`.
    Budgets: optimizer steps of the teacher (and of the regression baseline: the same),
    of each distillation round and of the vocoder; ``batch_size``; learning rates. The
    teacher's training times (``teacher_times``, :data:`~polydiff.speech.prodiff.train.
    TEACHER_TIMES`) and the distillation weighting (``distill_weighting``, core's
    :data:`~polydiff.core.distill.DISTILL_WEIGHTINGS`). ``temperature``: the voice's default
    sampling temperature (:class:`~polydiff.speech.prodiff.synth.Voice`; written to
    ``voice.json``; 1 is the plain sampler)."""

    speaker: str = DEFAULT_SPEAKER[0]
    language: str = DEFAULT_SPEAKER[1]
    ljspeech: str | None = None
    formant_utterances: int = 200
    max_seconds: float = 8.0
    n_valid: int = 16
    n_test: int = 24
    split_seed: int = 0
    hidden: int = 128
    encoder_layers: int = 3
    heads: int = 2
    ffn_hidden: int = 256
    denoiser_channels: int = 48
    denoiser_layers: int = 8
    vocoder_channels: int = 48
    vocoder_layers: int = 8
    vocoder_fold: int = 32
    vocoder_steps_sampling: int = 4
    teacher_steps: int = 1500
    teacher_times: str = "uniform"
    distill_steps: int = 500
    distill_weighting: str = "x0"
    vocoder_steps: int = 1500
    batch_size: int = 16
    segment_frames: int = 64
    lr: float = 1e-3
    distill_lr: float = 2e-4
    ema: float = 0.995
    seed: int = 0
    device: str = "cpu"
    baseline: bool = True
    vocoder: bool = True
    temperature: float = 1.0

    def corpus_key(self) -> str:
        keys = ("speaker", "language", "ljspeech", "formant_utterances", "max_seconds")
        blob = json.dumps({k: getattr(self, k) for k in keys} | {"v": CORPUS_VERSION},
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_corpus(settings: VoiceSettings, *, cache: bool = True) -> tuple[Corpus, dict]:
    """``(corpus, split)``: the featurized, aligned corpus (cached under polydiff's cache
    folder by its settings) and the held-out split of its names."""
    from polydiff.core.utils import cache_dir
    from polydiff.speech.prodiff.data import (
        build_corpus,
        formant_utterances,
        ljspeech_utterances,
        realspeech_utterances,
    )

    path = cache_dir("prodiff", f"corpus-{settings.corpus_key()}.pt")
    corpus = None
    if cache and path.is_file():
        try:
            corpus = Corpus.load(path)
        except Exception:  # a torn cache file: rebuild
            corpus = None
    if corpus is None:
        if settings.ljspeech:
            utts = ljspeech_utterances(settings.ljspeech, settings.language, sample_rate=8000,
                                       max_seconds=settings.max_seconds)
        elif settings.speaker == "formant":
            utts = formant_utterances(settings.formant_utterances, settings.language)
            for u in utts:
                u.durations = None  # aligned by MAS like a real corpus
        else:
            utts = realspeech_utterances(settings.speaker, settings.language,
                                         max_seconds=settings.max_seconds)
        split0 = split_names([u.name for u in utts], settings.n_valid, settings.n_test,
                             settings.split_seed)
        corpus = build_corpus(utts, stats_from=split0["train"])
        if cache:
            path.parent.mkdir(parents=True, exist_ok=True)
            corpus.save(path)
    split = split_names(corpus.names, settings.n_valid, settings.n_test, settings.split_seed)
    return corpus, split


def _save_settings(settings: VoiceSettings, run: Path) -> None:
    from polydiff.core.utils import atomic_write

    run.mkdir(parents=True, exist_ok=True)
    atomic_write(run / "settings.json",
                 json.dumps(dataclasses.asdict(settings), indent=2, sort_keys=True) + "\n")


def read_settings(run: str | os.PathLike[str]) -> VoiceSettings:
    """The settings saved in a run folder."""
    path = Path(run) / "settings.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a prodiff run folder (run train-teacher first)")
    data = json.loads(path.read_text())
    known = {f.name for f in dataclasses.fields(VoiceSettings)}
    return VoiceSettings(**{k: v for k, v in data.items() if k in known})


def acoustic_config(settings: VoiceSettings, corpus: Corpus, decoder: str = "diffusion"
                    ) -> Any:
    from polydiff.speech.prodiff.model import AcousticConfig

    lang = "en-us" if settings.speaker == "formant" and not settings.ljspeech else \
        settings.language
    return AcousticConfig(
        symbols=corpus.symbols, language=lang, hidden=settings.hidden,
        encoder_layers=settings.encoder_layers, heads=settings.heads,
        ffn_hidden=settings.ffn_hidden, predictor_hidden=settings.hidden,
        decoder=decoder, denoiser_channels=settings.denoiser_channels,
        denoiser_layers=settings.denoiser_layers, mel_mean=tuple(corpus.mel_mean),
        mel_std=tuple(corpus.mel_std), pitch_stats=_pair(corpus.pitch_stats),
        energy_stats=_pair(corpus.energy_stats))


def _pair(values: Any) -> tuple[float, float]:
    a, b = (float(v) for v in values)
    return a, b


def vocoder_config(settings: VoiceSettings, corpus: Corpus, acoustic: Any) -> Any:
    """The diffusion vocoder's config of a voice (rates from the acoustic model's)."""
    from polydiff.speech.prodiff.model import VocoderConfig

    return VocoderConfig(
        sample_rate=acoustic.sample_rate, hop_length=acoustic.hop_length,
        n_mels=acoustic.n_mels, fold=settings.vocoder_fold, channels=settings.vocoder_channels,
        layers=settings.vocoder_layers, steps=settings.vocoder_steps_sampling,
        mel_mean=tuple(corpus.mel_mean), mel_std=tuple(corpus.mel_std))


def _load(folder: Path, kind: type[M]) -> M:
    """A ``save_pretrained`` folder's model, checked to be a ``kind``."""
    from polydiff.core.nn.hub import from_pretrained

    model = from_pretrained(folder)
    if not isinstance(model, kind):
        raise ValueError(f"{folder}: not a {kind.__name__}")
    return model


def train_teacher_stage(settings: VoiceSettings, run: str | os.PathLike[str], *,
                        resume: bool = True, progress: bool = True) -> dict[str, Any]:
    """Stage 1 (module docstring); returns a summary."""
    from polydiff.gpu import seed_everything
    from polydiff.speech.prodiff.model import DiffVocoder, ProDiffAcoustic
    from polydiff.speech.prodiff.train import TrainSettings, train_acoustic, train_vocoder

    run = Path(run)
    _save_settings(settings, run)
    corpus, split = load_corpus(settings)
    train = corpus.subset(split["train"])
    budget = TrainSettings(steps=settings.teacher_steps, batch_size=settings.batch_size,
                           lr=settings.lr, ema=settings.ema, seed=settings.seed,
                           device=settings.device, progress=progress,
                           segment_frames=settings.segment_frames)
    out: dict[str, Any] = {"train_utterances": len(train.items),
                           "valid": len(split["valid"]), "test": len(split["test"])}
    seed_everything(settings.seed)
    teacher = ProDiffAcoustic(acoustic_config(settings, corpus))
    out["teacher"] = train_acoustic(teacher, train, run / "teacher", budget, resume=resume,
                                    times=settings.teacher_times)
    teacher.save_pretrained(run / "teacher" / "model")
    if settings.baseline:
        seed_everything(settings.seed)
        reg = ProDiffAcoustic(acoustic_config(settings, corpus, "regression"))
        out["regression"] = train_acoustic(reg, train, run / "regression", budget,
                                           resume=resume)
        reg.save_pretrained(run / "regression" / "model")
    if settings.vocoder:
        seed_everything(settings.seed)
        voc = DiffVocoder(vocoder_config(settings, corpus, teacher.config))
        voc_budget = dataclasses.replace(budget, steps=settings.vocoder_steps,
                                         segment_frames=32)
        out["vocoder"] = train_vocoder(voc, train, run / "vocoder", voc_budget, resume=resume)
        voc.save_pretrained(run / "vocoder" / "model")
    return out


def distill_stage(settings: VoiceSettings, run: str | os.PathLike[str], *,
                  resume: bool = True, progress: bool = True) -> Path:
    """Stage 2 (module docstring); returns the voice folder."""
    from polydiff.speech.prodiff.model import DiffVocoder, ProDiffAcoustic
    from polydiff.speech.prodiff.synth import Voice
    from polydiff.speech.prodiff.train import DistillSettings, distill_students

    run = Path(run)
    if not (run / "teacher" / "model" / "config.json").is_file():
        raise FileNotFoundError(f"{run}: no trained teacher (run train-teacher first)")
    corpus, split = load_corpus(settings)
    train = corpus.subset(split["train"])
    teacher = _load(run / "teacher" / "model", ProDiffAcoustic)
    budget = DistillSettings(steps=settings.distill_steps, batch_size=settings.batch_size,
                             lr=settings.distill_lr, ema=settings.ema, seed=settings.seed,
                             device=settings.device, progress=progress,
                             segment_frames=settings.segment_frames,
                             weighting=settings.distill_weighting)
    students = distill_students(teacher, train, run / "distill", budget, resume=resume)
    reg = _load(run / "regression" / "model", ProDiffAcoustic) \
        if (run / "regression" / "model" / "config.json").is_file() else None
    voc = _load(run / "vocoder" / "model", DiffVocoder) \
        if (run / "vocoder" / "model" / "config.json").is_file() else None
    info = {"speaker": settings.speaker, "language": teacher.config.language,
            "test_prompts": split["test"], "valid_prompts": split["valid"],
            "settings": dataclasses.asdict(settings), "temperature": settings.temperature}
    voice = Voice(teacher, {k: v.cpu() for k, v in students.items()}, reg, voc, info)
    return voice.save(run / "voice")


def split_corpus(settings: VoiceSettings, which: str) -> Corpus:
    """One split (``train``, ``valid`` or ``test``) of the settings' corpus."""
    corpus, split = load_corpus(settings)
    if which not in split:
        raise ValueError(f"unknown split {which!r}")
    return corpus.subset(split[which])


def num_threads(n: int | None) -> None:
    """Limit torch's intra-op threads (``None``: leave them)."""
    if n:
        torch.set_num_threads(int(n))
