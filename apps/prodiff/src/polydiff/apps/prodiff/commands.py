"""The verbs of the ``prodiff`` command (imported by :mod:`.main` once a verb runs).

Each ``cmd_*`` takes the parsed ``argparse.Namespace`` and returns an exit code; bad input
raises :class:`~polydiff.core.cli.CLIError` / ``ValueError`` (one line, exit code 2 through
:func:`polydiff.core.cli.run_cli`). Training verbs hold ``RUN/.lock`` while they run, so a
second process on the same run folder is refused.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from polydiff.core.cli import CLIError, atomic_write, emit, load_config

__all__ = ["STARTER_VOICE", "cmd_bench", "cmd_demo", "cmd_distill", "cmd_evaluate",
           "cmd_synthesize", "cmd_train_teacher", "hold_run", "load_voice"]

#: The starter voice shipped as package data.
STARTER_VOICE = Path(__file__).resolve().parent / "weights" / "voice"


def _say(msg: str) -> None:
    print(f"prodiff: {msg}", file=sys.stderr, flush=True)


def _threads(n: int | None) -> None:
    if n is not None:
        if n < 1:
            raise CLIError(f"--threads must be >= 1, got {n}")
        import torch

        torch.set_num_threads(n)


@contextlib.contextmanager
def hold_run(run: Path) -> Iterator[None]:
    """Hold ``run/.lock`` (an exclusive ``flock``) for the duration; refuse a folder that
    another process holds."""
    run.mkdir(parents=True, exist_ok=True)
    fh = open(run / ".lock", "a+")  # noqa: SIM115 - held for the whole block
    try:
        try:
            import fcntl

            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # pragma: no cover - not POSIX: no lock
            pass
        except OSError:
            raise CLIError(f"{run}: run folder is in use by another prodiff process") from None
        yield
    finally:
        fh.close()


# ----------------------------------------------------------------------------- training
def cmd_train_teacher(args: argparse.Namespace) -> int:
    """``prodiff train-teacher``: stage 1 of a voice."""
    from polydiff.speech.prodiff.recipe import VoiceSettings

    run = Path(args.output)
    if run.exists() and not run.is_dir():
        raise CLIError(f"{run}: exists and is not a folder")
    base = run / "settings.json" if args.resume and (run / "settings.json").is_file() else None
    if not args.resume and run.is_dir() and any(p.name != ".lock" for p in run.iterdir()):
        raise CLIError(f"{run}: run folder exists and is not empty (pass --resume to continue "
                       "it, or choose another -o)")
    flags = {"speaker": "speaker", "language": "language", "ljspeech": "ljspeech",
             "steps": "teacher_steps", "vocoder_steps": "vocoder_steps",
             "batch_size": "batch_size", "lr": "lr", "device": "device", "seed": "seed"}
    over = [f"{key}={getattr(args, attr)}" for attr, key in flags.items()
            if getattr(args, attr) is not None]
    over += ["baseline=false"] if args.no_baseline else []
    over += ["vocoder=false"] if args.no_vocoder else []
    settings = load_config(VoiceSettings, base, over + list(args.set))
    _check_settings(settings)
    _threads(args.threads)
    from polydiff.speech.prodiff.recipe import train_teacher_stage

    tic = time.perf_counter()
    with hold_run(run), contextlib.redirect_stdout(sys.stderr):
        res = train_teacher_stage(settings, run, resume=args.resume)
    res = {"run": str(run), **{k: (v.get("loss") if isinstance(v, dict) else v)
                               for k, v in res.items()},
           "seconds": round(time.perf_counter() - tic, 1)}
    emit(res, args.json)
    return 0


def _check_temperature(t: float | None) -> None:
    if t is not None and not 0.0 <= t < float("inf"):
        raise CLIError(f"--temperature must be a finite number >= 0, got {t}")


def _check_settings(s: Any) -> None:
    from polydiff.speech.realspeech import SPEAKERS

    if s.ljspeech is None and s.speaker not in SPEAKERS and s.speaker != "formant":
        raise CLIError(f"unknown speaker {s.speaker!r} (choose from {', '.join(SPEAKERS)}, "
                       "or formant)")
    if s.ljspeech is not None and not Path(s.ljspeech).is_dir():
        raise CLIError(f"--ljspeech {s.ljspeech}: no such folder")
    for name in ("teacher_steps", "distill_steps", "vocoder_steps", "batch_size"):
        if getattr(s, name) < 1:
            raise CLIError(f"{name} must be >= 1, got {getattr(s, name)}")
    from polydiff.core.distill import DISTILL_WEIGHTINGS
    from polydiff.speech.prodiff.train import TEACHER_TIMES

    for name, allowed in (("teacher_times", TEACHER_TIMES),
                          ("distill_weighting", DISTILL_WEIGHTINGS)):
        if getattr(s, name) not in allowed:
            raise CLIError(f"{name} must be one of {', '.join(allowed)}, got "
                           f"{getattr(s, name)!r}")
    if not 0.0 <= s.temperature < float("inf"):
        raise CLIError(f"temperature must be a finite number >= 0, got {s.temperature}")
    from polydiff.speech.prodiff.text import resolve_voice

    resolve_voice(s.language)


def cmd_distill(args: argparse.Namespace) -> int:
    """``prodiff distill``: stage 2, 4 -> 2 -> 1 steps, then ``RUN/voice``."""
    import dataclasses

    from polydiff.speech.prodiff.recipe import distill_stage, read_settings

    run = Path(args.run)
    if not run.is_dir():
        raise CLIError(f"{run}: no such run folder")
    settings = read_settings(run)
    if args.steps is not None:
        if args.steps < 1:
            raise CLIError(f"--steps must be >= 1, got {args.steps}")
        settings = dataclasses.replace(settings, distill_steps=args.steps)
    if (run / "distill").is_dir() and not args.resume:
        raise CLIError(f"{run}/distill exists (pass --resume to continue it)")
    _threads(args.threads)
    tic = time.perf_counter()
    with hold_run(run), contextlib.redirect_stdout(sys.stderr):
        voice = distill_stage(settings, run, resume=True)
    emit({"voice": str(voice), "seconds": round(time.perf_counter() - tic, 1)}, args.json)
    return 0


# ----------------------------------------------------------------------------- voices
def load_voice(path: str | None) -> Any:
    """A :class:`~polydiff.speech.prodiff.synth.Voice` from a voice or run folder, or the
    starter voice; one-line errors."""
    from polydiff.speech.prodiff.synth import Voice

    if path is None:
        if not (STARTER_VOICE / "acoustic" / "config.json").is_file():
            raise CLIError("the starter voice is not installed; pass --voice DIR")
        return Voice.load(STARTER_VOICE)
    p = Path(path)
    if not p.exists():
        raise CLIError(f"--voice {p}: no such folder")
    if (p / "voice" / "acoustic").is_dir():
        p = p / "voice"
    try:
        return Voice.load(p)
    except FileNotFoundError as e:
        raise CLIError(f"--voice {p}: {e}") from None


def cmd_synthesize(args: argparse.Namespace) -> int:
    """``prodiff synthesize``: text -> WAV, or lines of a file -> a folder of WAVs."""
    from polydiff.speech.audio import write_audio

    if (args.text is None) == (args.file is None):
        raise CLIError("give either TEXT or --file (one of them)")
    _check_temperature(args.temperature)
    if args.pace <= 0:
        raise CLIError(f"--pace must be > 0, got {args.pace}")
    out = Path(args.output)
    if args.text is not None:
        if out.suffix.lower() != ".wav":
            raise CLIError(f"-o {out}: the output of TEXT is a .wav file")
        jobs = [(args.text, out)]
    else:
        src = Path(args.file)
        if not src.is_file():
            raise CLIError(f"--file {src}: no such file")
        try:
            lines = src.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            raise CLIError(f"--file {src}: not UTF-8 text") from None
        if out.exists() and not out.is_dir():
            raise CLIError(f"-o {out}: exists and is not a folder")
        jobs = [(ln, out / f"line-{i:04d}.wav") for i, ln in enumerate(lines, 1) if ln.strip()]
        if not jobs:
            raise CLIError(f"--file {src}: no text (every line is empty)")
    _threads(args.threads)
    voice = load_voice(args.voice)
    vocoder = args.vocoder or voice.info.get("default_vocoder", "griffin-lim")
    if args.method not in voice.methods():
        raise CLIError(f"this voice cannot run {args.method} (it has {', '.join(voice.methods())})")
    if vocoder not in voice.vocoders():
        raise CLIError(f"this voice has no {vocoder} vocoder")
    temperature = voice.temperature if args.temperature is None else args.temperature
    if args.file is not None:
        out.mkdir(parents=True, exist_ok=True)
    done, failed = [], 0
    for text, path in jobs:
        try:
            tic = time.perf_counter()
            syn = voice.synthesize(text, args.method, vocoder, seed=args.seed, pace=args.pace,
                                   temperature=temperature)
            write_audio(path, syn.wave, syn.sample_rate)
            secs = len(syn.wave) / syn.sample_rate
            done.append({"output": str(path), "seconds": round(secs, 3),
                         "speed_x": round(secs / max(time.perf_counter() - tic, 1e-9), 1)})
        except ValueError as e:
            if len(jobs) == 1:
                raise
            failed += 1
            _say(f"error: {path.name}: {e}")
    emit({"method": args.method, "vocoder": vocoder, "temperature": temperature,
          "files": done, "failed": failed}, args.json)
    return 2 if failed else 0


def _heldout(voice: Any, split: str) -> Any:
    """The voice's held-out prompts (from its settings)."""
    from polydiff.speech.prodiff.recipe import VoiceSettings, load_corpus

    settings = voice.info.get("settings")
    if not settings:
        raise CLIError("this voice has no training settings (voice.json): cannot find its "
                       "held-out prompts")
    known = set(VoiceSettings.__dataclass_fields__)
    s = VoiceSettings(**{k: v for k, v in settings.items() if k in known})
    corpus, parts = load_corpus(s)
    return corpus.subset(parts[split])


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``prodiff evaluate``: score on held-out recordings."""
    from polydiff.speech.prodiff.evaluate import evaluate_voice, summarize

    if args.max_prompts is not None and args.max_prompts < 1:
        raise CLIError(f"--max-prompts must be >= 1, got {args.max_prompts}")
    _check_temperature(args.temperature)
    voice = load_voice(args.voice)
    temperature = voice.temperature if args.temperature is None else args.temperature
    methods, vocoders = _methods_and_vocoders(voice, args)
    test = _heldout(voice, args.split)
    rows = evaluate_voice(voice, test, methods=methods, vocoders=vocoders,
                          max_prompts=args.max_prompts, threads=args.threads or 2,
                          temperature=temperature)
    res = {"split": args.split, "prompts": len({r["prompt"] for r in rows}),
           "temperature": temperature,
           "results": summarize(rows)}
    if args.output:
        atomic_write(args.output, json.dumps(res, indent=2) + "\n")
    emit(res, args.json)
    return 0


def _methods_and_vocoders(voice: Any, args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """The ``--methods`` / ``--vocoders`` a command asked for (default: all the voice has),
    each checked against the voice."""
    methods = args.methods or voice.methods()
    vocoders = args.vocoders or voice.vocoders()
    for m in methods:
        if m not in voice.methods():
            raise CLIError(f"this voice cannot run {m}")
    for v in vocoders:
        if v not in voice.vocoders():
            raise CLIError(f"this voice has no {v} vocoder")
    return list(methods), list(vocoders)


def cmd_bench(args: argparse.Namespace) -> int:
    """``prodiff bench``: real-time factors."""
    import statistics

    import torch

    if args.sentences < 1 or args.repeats < 1:
        raise CLIError("--sentences and --repeats must be >= 1")
    voice = load_voice(args.voice)
    methods, vocoders = _methods_and_vocoders(voice, args)
    torch.set_num_threads(args.threads or 2)
    test = _heldout(voice, "test")
    items = test.items[: args.sentences]
    rows = []
    for method in methods:
        mels, t_ac, c_ac = [], [], []
        for _ in range(args.repeats):
            tic, cpu = time.perf_counter(), time.process_time()
            mels = [voice.mel_ids(it["ids"], it["stress"], it["word_start"], method)[0]
                    for it in items]
            t_ac.append(time.perf_counter() - tic)
            c_ac.append(time.process_time() - cpu)
        secs = sum(m.shape[0] for m in mels) / voice.mel_config.frames_per_second
        ac, ac_cpu = statistics.median(t_ac), statistics.median(c_ac)
        for voc in vocoders:
            t_v, c_v = [], []
            for _ in range(args.repeats):
                tic, cpu = time.perf_counter(), time.process_time()
                for m in mels:
                    voice.vocode(m, voc)
                t_v.append(time.perf_counter() - tic)
                c_v.append(time.process_time() - cpu)
            v, v_cpu = statistics.median(t_v), statistics.median(c_v)
            rows.append({"method": method, "vocoder": voc, "audio_s": round(secs, 2),
                         "acoustic_speed_x": round(secs / ac, 1),
                         "speed_x": round(secs / (ac + v), 1),
                         "cpu_speed_x": round(secs / (ac_cpu + v_cpu), 1)})
    res = {"threads": torch.get_num_threads(), "sentences": len(items),
           "temperature": voice.temperature, "results": rows}
    if args.output:
        atomic_write(args.output, json.dumps(res, indent=2) + "\n")
    emit(res, args.json)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """``prodiff demo``: the tour demo."""
    from polydiff.apps.prodiff.demo import DEMO

    report = DEMO.demo(Path(args.output), quick=args.quick)
    emit({"title": report.title, **report.metrics, "units": report.units,
          "audio": [str(a) for a in report.audio],
          "figures": [str(f) for f in report.figures]}, args.json)
    return 0
