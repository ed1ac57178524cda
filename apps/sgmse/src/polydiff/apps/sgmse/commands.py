"""The verbs of the ``sgmse`` command (imported by :mod:`.main` once a verb runs).

Each ``cmd_*`` takes the parsed ``argparse.Namespace`` and returns an exit code; bad input
raises :class:`~polydiff.core.cli.CLIError` / ``ValueError`` (one line, exit code 2 through
:func:`polydiff.core.cli.run_cli`).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import sys
import time
from pathlib import Path
from typing import Any

from polydiff.apps.sgmse.config import ENHANCE_FILE, TRAIN_FILE, EnhanceSettings, TrainSettings
from polydiff.core.cli import CLIError, atomic_write, emit, load_config, progress, save_config

__all__ = ["cmd_bench", "cmd_demo", "cmd_enhance", "cmd_evaluate", "cmd_train", "load_model",
           "enhance_file", "resolve_outputs"]

_AUDIO = (".wav", ".flac", ".ogg")


def _overrides(args: argparse.Namespace, names: dict[str, str]) -> list[str]:
    """``key=value`` overrides for the flags that were given (``names``: attr -> key)."""
    out = []
    for attr, key in names.items():
        value = getattr(args, attr, None)
        if value is not None:
            out.append(f"{key}={value}")
    return out + list(getattr(args, "set", []) or [])


def _say(msg: str) -> None:
    print(f"sgmse: {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- train
def cmd_train(args: argparse.Namespace) -> int:
    """``sgmse train``: train SGMSE+ or the baseline on paired folders. The run folder is
    the engine's (:func:`polydiff.core.training.start_run`): locked while training, refused
    when not empty unless ``--resume`` (the saved settings are the base) or ``--overwrite``;
    the model is built under the seed."""
    from polydiff.core.training import seeded
    from polydiff.core.training.runs import start_run

    with start_run(args.output, resume=args.resume, overwrite=args.overwrite,
                   settings_name=TRAIN_FILE, outputs=("model",)), contextlib.ExitStack() as scope:
        return _train(args, lambda seed: scope.enter_context(seeded(seed)))


def _train(args: argparse.Namespace, seed_model: Any) -> int:
    out = Path(args.output)
    base = args.config
    if args.resume and base is None and (out / TRAIN_FILE).is_file():
        base = out / TRAIN_FILE
    flags = {"preset": "preset", "objective": "objective", "steps": "steps",
             "batch_size": "batch_size", "lr": "lr", "segment_frames": "segment_frames",
             "device": "device", "seed": "seed", "time_budget": "time_budget",
             "center": "center", "center_on": "center_on", "init": "init"}
    overrides = _overrides(args, flags) + (["model=predictive"] if args.predictive else [])
    settings = load_config(TrainSettings, base, overrides)
    seed_model(settings.seed)  # the model built below starts from --seed (the engine's seeded)
    if out.exists() and not out.is_dir():
        raise CLIError(f"{out}: exists and is not a folder")
    data = Path(args.data)
    if not data.is_dir():
        raise CLIError(f"{data}: no such dataset folder")

    from polydiff.speech.data import PairedAudioDataset
    from polydiff.speech.realcorpus import is_real_corpus, read_real_manifest
    from polydiff.speech.sgmse.model import (
        SGMSE,
        PredictiveConfig,
        SGMSEConfig,
        SGMSEPredictive,
    )
    from polydiff.speech.sgmse.network import NCSNppConfig
    from polydiff.speech.sgmse.spec import SpecConfig
    from polydiff.speech.sgmse.train import train_predictive, train_sgmse

    real = is_real_corpus(data)
    try:
        net = NCSNppConfig.preset(settings.preset, **settings.network)
        spec_kw = dict(settings.spec)
        rate = spec_kw.pop("sample_rate", read_real_manifest(data)["sample_rate"] if real
                           else 16000)
        spec = SpecConfig.for_sample_rate(int(rate), **spec_kw)
    except TypeError as err:  # an unknown field name in network/spec
        raise CLIError(f"bad network/spec setting: {err}") from None
    if not real:
        PairedAudioDataset(data, settings.split, layout=settings.layout)  # fail fast, one line
    extra: dict[str, Any] = {}
    if settings.model == "sgmse":
        model: Any = SGMSE(SGMSEConfig(objective=settings.objective, preset=settings.preset,
                                       network=net, spec=spec, center=settings.center))
        fn: Any = train_sgmse
        if settings.center == "predictive":
            if not settings.center_on:
                raise CLIError("--center predictive needs --center-on RUN (a predictive "
                               "baseline run or model folder)")
            pred = load_model(settings.center_on, "cpu")
            if not isinstance(pred, SGMSEPredictive):
                raise CLIError(f"--center-on {settings.center_on}: not a predictive model")
            extra["predictive"] = pred
    else:
        model = SGMSEPredictive(PredictiveConfig(preset=settings.preset, network=net,
                                                 spec=spec))
        fn = train_predictive
    if settings.init and not (args.resume and (out / "checkpoints").is_dir()):
        init_weights(model, settings.init)
    out.mkdir(parents=True, exist_ok=True)
    save_config(settings, out / TRAIN_FILE)
    tic = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # keep stdout for the result (--json)
        res = fn(model, data, out, steps=settings.steps, batch_size=settings.batch_size,
                 lr=settings.lr, ema=settings.ema or None, device=settings.device,
                 resume=args.resume, progress=True, seed=settings.seed, split=settings.split,
                 layout=settings.layout, segment_frames=settings.segment_frames,
                 log_every=settings.log_every, ckpt_every=settings.ckpt_every,
                 precision=settings.precision, time_budget=settings.time_budget,
                 compile=settings.compile, **extra)
    emit({"run_dir": str(res.run_dir), "weights": str(res.weights), "model": settings.model,
          "parameters": sum(p.numel() for p in model.parameters()),
          "step": res.summary.get("step"), "loss": res.summary.get("loss"),
          "stopped_early": res.summary.get("stopped_early", False),
          "seconds": round(time.perf_counter() - tic, 2)}, args.json)
    return 0


def init_weights(model: Any, source: str | Path) -> None:
    """Start ``model`` from the weights of ``source``: a model folder, a run folder (its
    ``model/``, else the EMA weights of its latest checkpoint); one-line errors."""
    import torch

    p = Path(source)
    if (p / "model" / "config.json").is_file() or (p / "config.json").is_file() and \
            (p / "model.safetensors").is_file():
        state = load_model(p, "cpu").state_dict()
    else:
        ckpts = sorted((p / "checkpoints").glob("ckpt-*.safetensors"))
        if not ckpts:
            raise CLIError(f"--init {p}: no model folder and no checkpoint there")
        from safetensors.torch import load_file

        raw = load_file(str(ckpts[-1]))
        state = {k[4:]: v for k, v in raw.items() if k.startswith("ema/")} or \
            {k[6:]: v for k, v in raw.items() if k.startswith("model/")}
    mine = model.state_dict()
    if set(state) != set(mine) or any(state[k].shape != mine[k].shape for k in mine):
        raise CLIError(f"--init {p}: the weights do not fit this network (another layout?)")
    with torch.no_grad():
        model.load_state_dict({k: v.to(mine[k].dtype) for k, v in state.items()})


# ----------------------------------------------------------------------------- corpus
def cmd_corpus(args: argparse.Namespace) -> int:
    """``sgmse corpus``: build the real-speech corpus into a folder."""
    from dataclasses import fields

    from polydiff.apps.sgmse.config import parse_table
    from polydiff.speech.realcorpus import RealCorpusSpec, build_real_corpus, describe

    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise CLIError(f"-o {out}: already exists (pass --overwrite to replace it)")
    if args.sources is not None and not (Path(args.sources) / "index.json").is_file():
        raise CLIError(f"--sources {args.sources}: not a sources pack (no index.json)")
    known = {f.name for f in fields(RealCorpusSpec)}
    overrides: dict[str, Any] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or key.strip() not in known:
            raise CLIError(f"--set {item!r}: expected KEY=VALUE with KEY one of "
                           f"{', '.join(sorted(known))}")
        overrides.update(parse_table({key.strip(): value}))
    try:
        spec = RealCorpusSpec(sample_rate=args.sample_rate, **overrides)
    except TypeError as err:
        raise CLIError(f"bad corpus setting: {err}") from None
    tic = time.perf_counter()
    manifest = build_real_corpus(out, spec, sources=args.sources, overwrite=args.overwrite,
                                 show_progress=None)
    emit({"corpus": str(out), "sample_rate": manifest["sample_rate"],
          "valid_files": len(manifest["splits"]["valid"]),
          "test_files": len(manifest["splits"]["test"]),
          "sources_mb": round(manifest["sources_bytes"] / 2**20, 2),
          "description": describe(out), "seconds": round(time.perf_counter() - tic, 1)},
         args.json)
    return 0


# ----------------------------------------------------------------------------- models
def starter_dir() -> Path:
    """The starter weights shipped with this package (``weights/``: ``sgmse/``,
    ``predictive/`` and ``manifest.json``)."""
    return Path(__file__).resolve().parent / "weights"


def load_model(path: str | Path, device: str = "auto") -> Any:
    """An SGMSE or SGMSEPredictive model from a run folder (its ``model/``) or a model
    folder, moved to ``device``; one-line errors."""
    from polydiff.core.nn.hub import from_pretrained
    from polydiff.gpu import select_device
    from polydiff.speech.sgmse.model import SGMSE, SGMSEPredictive

    p = Path(path)
    if not p.exists():
        raise CLIError(f"--model {p}: no such folder")
    if (p / "model" / "config.json").is_file():
        p = p / "model"
    if not (p / "config.json").is_file():
        raise CLIError(f"--model {p}: not a model folder (no config.json; pass the run "
                       "folder of 'sgmse train' or its model/ folder)")
    model = from_pretrained(p)
    if not isinstance(model, SGMSE | SGMSEPredictive):
        raise CLIError(f"--model {p}: holds a {type(model).__name__}, not an SGMSE model")
    return model.float().to(select_device(device)).eval()  # bf16 weights compute in fp32


def is_pair(path: str | Path) -> bool:
    """A folder holding a diffusion model and its predictive baseline (``sgmse/`` and
    ``predictive/``, like the starter weights)."""
    return (Path(path) / "sgmse" / "config.json").is_file()


def load_models(path: str | Path | None, device: str = "auto",
                predictive: str | Path | None = None) -> tuple[Any, Any, dict[str, Any]]:
    """``(model, predictive model or None, recommended enhance settings)`` from ``--model``
    (``None``: the starter weights) and ``--predictive``."""
    recommended: dict[str, Any] = {}
    pred = None
    if path is None:
        path = starter_dir()
        if not is_pair(path):
            raise CLIError("this installation has no starter weights: pass --model (a run "
                           "folder of 'sgmse train')")
    p = Path(path)
    if is_pair(p):
        model = load_model(p / "sgmse", device)
        if (p / "predictive" / "config.json").is_file():
            pred = load_model(p / "predictive", device)
        manifest = p / "manifest.json"
        if manifest.is_file():
            import json

            recommended = dict(json.loads(manifest.read_text()).get("enhance", {}))
    else:
        model = load_model(p, device)
    if predictive is not None:
        pred = load_model(predictive, device)
    from polydiff.speech.sgmse.model import SGMSEPredictive

    if pred is not None and not isinstance(pred, SGMSEPredictive):
        raise CLIError(f"--predictive {predictive}: not a predictive model")
    return model, pred, recommended


def resolve_outputs(inp: Path, out: Path) -> list[tuple[Path, Path]]:
    """``(input, output)`` file pairs of ``sgmse enhance``."""
    from polydiff.speech.audio import list_audio

    if not inp.exists():
        raise CLIError(f"{inp}: no such file or folder")
    if inp.is_dir():
        if out.suffix.lower() in _AUDIO or out.is_file():
            raise CLIError(f"-o {out}: a folder input needs an output folder")
        if out.resolve() == inp.resolve():
            raise CLIError(f"-o {out}: the output folder must differ from the input folder")
        files = list_audio(inp)
        if not files:
            raise CLIError(f"{inp}: no audio files ({', '.join(_AUDIO)}) in the folder")
        return [(f, out / f.name) for f in files]
    target = out if out.suffix.lower() in _AUDIO else out / inp.name
    if target.resolve() == inp.resolve():
        raise CLIError(f"-o {out}: refusing to overwrite the input file")
    return [(inp, target)]


def enhance_file(model: Any, src: Path, dst: Path, settings: EnhanceSettings,
                 seed: int, predictive: Any = None) -> dict[str, Any]:
    """Read, check, enhance and write one file (atomically); returns its statistics.
    Raises ``AudioError`` (a ``ValueError``) with one line for an unusable input."""
    from polydiff.speech.audio import AudioError, read_audio, write_audio
    from polydiff.speech.sgmse.enhance import enhance_with_stats

    wave, sr = read_audio(src)  # stereo -> mean of the channels (documented)
    n_fft = model.representation.config.n_fft
    need = math.ceil(n_fft * sr / model.sample_rate)
    if len(wave) < need:
        raise AudioError(f"{src}: too short ({len(wave)} samples at {sr} Hz; one STFT frame "
                         f"needs {need})")
    extra: dict[str, Any] = {} if settings.t_start is None else {"t_start": settings.t_start}
    if settings.sampler == "storm":
        extra["storm_base"] = settings.storm_base
    est, stats = enhance_with_stats(
        model, wave, sr, sampler=settings.sampler, steps=settings.steps,
        corrector_steps=settings.corrector_steps, snr=settings.snr, seed=seed,
        chunk_seconds=settings.chunk_seconds, overlap_seconds=settings.overlap_seconds,
        predictive=predictive if settings.sampler == "storm"
        or getattr(model.config, "center", "noisy") == "predictive" else None, **extra)
    clipped = write_audio(dst, est, sr)
    return {"input": str(src), "output": str(dst), "sample_rate": sr,
            "seconds": round(stats.audio_seconds, 3), "compute_seconds": round(stats.seconds, 3),
            "rtf": round(stats.rtf, 4), "nfe": stats.nfe, "chunks": stats.chunks,
            "clipped": clipped}


SUMMARY_FILE = "enhance-summary.json"


def _settings_with_defaults(args: argparse.Namespace, flags: dict[str, str],
                            recommended: dict[str, Any]) -> EnhanceSettings:
    """EnhanceSettings: the model's recommended values under the config file and flags."""
    import json
    import tomllib

    user = _overrides(args, flags)
    given = {o.partition("=")[0].strip() for o in user}
    if args.config is not None:
        try:
            with open(args.config, "rb") as fh:
                given |= set(tomllib.load(fh))
        except (OSError, tomllib.TOMLDecodeError):
            pass  # load_config reports it on one line
    base = [f"{k}={v if isinstance(v, str) else json.dumps(v)}"  # plain words, as flags
            for k, v in recommended.items() if k not in given and v is not None]
    return load_config(EnhanceSettings, args.config, base + user)


def cmd_enhance(args: argparse.Namespace) -> int:
    """``sgmse enhance``: enhance a file or a folder; per-file problems are reported and
    the others processed; exit code 2 at the end if any failed. A folder run prints one
    line per file to stderr when it is not a terminal and rewrites OUT/enhance-summary.json
    after every file."""
    flags = {"sampler": "sampler", "steps": "steps", "snr": "snr",
             "corrector_steps": "corrector_steps", "chunk_seconds": "chunk_seconds",
             "overlap_seconds": "overlap_seconds", "device": "device", "seed": "seed",
             "t_start": "t_start", "storm_base": "storm_base"}
    settings = load_config(EnhanceSettings, args.config, _overrides(args, flags))
    inp, out = Path(args.input), Path(args.output)
    jobs = resolve_outputs(inp, out)
    model, pred, recommended = load_models(args.model, settings.device, args.predictive)
    if recommended:
        settings = _settings_with_defaults(args, flags, recommended)
    from polydiff.speech.sgmse.model import SGMSE

    if settings.sampler == "storm" and pred is None and isinstance(model, SGMSE):
        _say("storm sampler without a predictive model: starting from the diffusion "
             "model's own one-pass estimate")
    folder = inp.is_dir()
    if folder:
        save_config(settings, out / ENHANCE_FILE)
    done: list[dict[str, Any]] = []
    failed: list[dict[str, str]] = []
    model_name = "starter weights" if args.model is None else str(args.model)

    def result() -> dict[str, Any]:
        audio = sum(d["seconds"] for d in done)
        compute = sum(d["compute_seconds"] for d in done)
        return {"model": type(model).__name__, "weights": model_name,
                "predictive": pred is not None and settings.sampler == "storm",
                "sampler": settings.sampler, "steps": settings.steps, "files": len(jobs),
                "written": len(done), "failed": len(failed), "pending": len(jobs) - len(done)
                - len(failed), "audio_seconds": round(audio, 3),
                "compute_seconds": round(compute, 3),
                "rtf": round(compute / audio, 4) if audio else None,
                "output": str(out if folder else jobs[0][1])}

    bar = FileProgress(len(jobs), "enhance")
    try:
        for k, (src, dst) in enumerate(jobs):
            try:
                done.append(enhance_file(model, src, dst, settings, settings.seed + k, pred))
                note = f"rtf {done[-1]['rtf']:.3g}"
            except ValueError as err:  # AudioError and friends: one line, go on
                msg = " ".join(str(err).split())
                failed.append({"input": str(src), "error": msg})
                _say(f"skipped: {msg}")
                note = "skipped"
            bar.update(src.name, note)
            if folder:
                summary = {**result(), "settings": settings.__dict__, "outputs": done,
                           "errors": failed}
                buf = io.StringIO()
                emit(summary, True, file=buf)
                atomic_write(out / SUMMARY_FILE, buf.getvalue())
    finally:
        bar.close()
    res = result()
    if args.json:
        res["outputs"], res["errors"] = done, failed
    emit(res, args.json)
    if failed:
        raise CLIError(f"{len(failed)} of {len(jobs)} file(s) could not be enhanced "
                       f"(first: {failed[0]['error']})")
    return 0


# ----------------------------------------------------------------------------- evaluate
class FileProgress:
    """Progress of a folder run on stderr: a bar on a terminal, else one line per file (so a
    redirected run still shows where it is)."""

    def __init__(self, total: int, desc: str):
        from polydiff.core.utils import quiet

        self.total, self.desc, self.count = total, desc, 0
        self.lines = quiet() and total > 1
        self.bar = None if self.lines or total <= 1 else progress(
            range(total), total=total, desc=desc)
        self._it = iter(self.bar) if self.bar is not None else None

    def update(self, name: str, note: str = "") -> None:
        self.count += 1
        if self._it is not None:
            next(self._it, None)
        elif self.lines:
            _say(f"{self.desc} {self.count}/{self.total}: {name}" + (f" ({note})" if note
                                                                     else ""))

    def close(self) -> None:
        if self._it is not None:
            for _ in self._it:  # finish the bar
                pass


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``sgmse evaluate``: metrics per file and their summary; writes metrics.csv/json
    after every file; one line per file that cannot be scored, exit code 2 if any."""
    from polydiff.speech.audio import list_audio
    from polydiff.speech.metrics import evaluate_folder, write_metrics

    for flag, d in (("--clean", args.clean), ("--enhanced", args.enhanced),
                    ("--noisy", args.noisy)):
        if d is not None and not Path(d).is_dir():
            raise CLIError(f"{flag} {d}: no such folder")
    out = Path(args.output or args.enhanced)
    bar = FileProgress(len(list_audio(args.enhanced)), "evaluate")
    failed = [0]

    def on_row(rows: list[dict[str, Any]], summary: dict[str, Any]) -> None:
        if summary["failed"] > failed[0]:  # this file could not be scored
            failed[0] = summary["failed"]
            bad = summary["errors"][-1]
            _say(f"{bad['name']}: {bad['error']}")
            name = bad["name"]
        else:
            name = rows[-1]["name"]
        bar.update(name, f"{summary['scored']} scored, {summary['failed']} failed")
        write_metrics(rows, summary, out)

    try:
        rows, summary = evaluate_folder(args.clean, args.enhanced, args.noisy,
                                        pesq_mode=args.pesq, align=args.align,
                                        on_row=on_row)
    finally:
        bar.close()
    csv_path, json_path = write_metrics(rows, summary, out)
    result: dict[str, Any] = {"files": summary["files"], "scored": summary["scored"],
                              "failed": summary["failed"], "missing": summary["missing"],
                              "pesq_mode": summary["pesq_mode"]}
    for m in ("pesq", "estoi", "si_sdr"):
        result[m] = summary[m]["mean"]
        if args.noisy is not None:
            base = summary[f"noisy_{m}"]["mean"]
            result[f"noisy_{m}"] = base
            result[f"delta_{m}"] = None if base is None or result[m] is None \
                else result[m] - base
    result["csv"], result["json"] = str(csv_path), str(json_path)
    emit(result, args.json)
    if summary["failed"]:
        first = summary["errors"][0]
        raise CLIError(f"{summary['failed']} of {summary['files']} file(s) could not be "
                       f"scored (first: {first['name']}: {first['error']})")
    return 0


# ----------------------------------------------------------------------------- bench
def _nanmean(values: list[float]) -> float | None:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return sum(finite) / len(finite) if finite else None


def cmd_bench(args: argparse.Namespace) -> int:
    """``sgmse bench``: RTF (and quality with --data) against the number of steps."""
    from polydiff.apps.sgmse.config import SAMPLER_NAMES

    if args.sampler not in SAMPLER_NAMES:
        raise CLIError(f"unknown sampler {args.sampler!r}; choose from "
                       f"{', '.join(SAMPLER_NAMES)}")
    if not (args.seconds > 0 and math.isfinite(args.seconds)):
        raise CLIError(f"--seconds must be positive, got {args.seconds}")
    if args.data is not None and not Path(args.data).is_dir():
        raise CLIError(f"--data {args.data}: no such dataset folder")
    model, pred, _ = load_models(args.model, args.device, getattr(args, "predictive", None))

    from polydiff.speech.metrics import evaluate_pair
    from polydiff.speech.sgmse.enhance import enhance_with_stats, measure_rtf
    from polydiff.speech.sgmse.model import SGMSE

    diffusion = isinstance(model, SGMSE)
    steps = list(args.steps) if diffusion else [1]
    rows: list[dict[str, Any]] = []
    pairs: list[Any] = []
    if args.data is not None:
        from polydiff.speech.data import iter_pairs

        pairs = list(iter_pairs(args.data, args.split, sample_rate=model.sample_rate))
        pairs = pairs[:args.max_files] if args.max_files else pairs
    noisy_scores = [evaluate_pair(c, y, sr) for _, c, y, sr in pairs]
    for n in progress(steps, total=len(steps), desc="bench"):
        kw: dict[str, Any] = {"sampler": args.sampler, "steps": n} if diffusion else {}
        if diffusion and args.sampler == "storm" and pred is not None:
            kw["predictive"] = pred
        st = measure_rtf(model, args.seconds, **kw)
        row: dict[str, Any] = {"steps": n if diffusion else None, "nfe": st.nfe,
                               "rtf": st.rtf}
        if pairs:
            scores = []
            for i, (_, clean, noisy, sr) in enumerate(pairs):
                est, _ = enhance_with_stats(model, noisy, sr, seed=i, **kw)
                scores.append(evaluate_pair(clean, est, sr))
            for m in ("pesq", "estoi", "si_sdr"):
                row[m] = _nanmean([s[m] for s in scores])
        rows.append(row)
    result: dict[str, Any] = {"model": type(model).__name__,
                              "sampler": args.sampler if diffusion else None,
                              "device": str(next(model.parameters()).device),
                              "seconds": args.seconds, "results": rows}
    if pairs:
        result["files"] = len(pairs)
        result["noisy"] = {m: _nanmean([s[m] for s in noisy_scores])
                           for m in ("pesq", "estoi", "si_sdr")}
        result["pesq_mode"] = "nb" if model.sample_rate < 16000 else "wb"
    if args.output:
        buf = io.StringIO()
        emit(result, True, file=buf)
        atomic_write(args.output, buf.getvalue())
    emit(result, args.json)
    return 0


# ----------------------------------------------------------------------------- demo
def cmd_demo(args: argparse.Namespace) -> int:
    """``sgmse demo``: the tour demo, printed."""
    from polydiff.apps.sgmse.demo import DEMO

    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise CLIError(f"{out}: exists and is not a folder")
    rep = DEMO.demo(out, quick=args.quick)
    result: dict[str, Any] = {"title": rep.title, "metrics": rep.metrics,
                              "figures": [str(p) for p in rep.figures],
                              "audio": [str(p) for p in rep.audio]}
    if args.json:
        result["text"] = rep.text
        emit(result, True)
    else:
        emit(result, False)
        print("\n" + rep.text)
    return 0
