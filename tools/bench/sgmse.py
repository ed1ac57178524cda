"""SGMSE+ against its predictive baseline on held-out real speech (or formant speech).

Richter, Welker, Lemercier, Lay, Gerkmann (2023), "Speech Enhancement and Dereverberation with
Diffusion-based Generative Models" (SGMSE+): the paper compares SGMSE+ with a predictive
model of the same network; this benchmark does the same.

Corpus (``corpus = "real"``, the default budgets): real recorded speech from Debian's voice
prompts (:mod:`polydiff.speech.realcorpus`, fetched once into the cache; or built from a
carried sources pack with ``--sources``): training speakers es_MX, it_IT (two), validation
fr_CA, **test ru_RU: a speaker and a language never trained on**; each held-out utterance is
mixed at 0, 5 and 10 dB with one of eight noise types (coloured, bursty, hum, real babble of
held-out talkers, speech-shaped, music-like). Both models get the same network layout, batch,
segment length and learning rate, and the same steps or wall-clock budget. Reported on the
test split (means over files, overall and per input SNR): PESQ (narrow-band, P.862, for
this 8 kHz material), ESTOI and SI-SDR of the noisy input, the predictive baseline, SGMSE
with the PC sampler (reverse diffusion + one annealed Langevin corrector step, r = 0.5) at
N steps from the prior, and the predictive-then-diffusion sampler (``storm_<base><N>_t<T>``:
the baseline's estimate diffused to t = T, then N steps of the base sampler), with the
real-time factor of each (compute seconds per audio second on the evaluation device, same
files, after a warm-up). ``center = "predictive"`` (the cpu and gpu budgets) trains SGMSE
on a process centred on the baseline's estimates (StoRM-style), so the baseline trains
first; ``--set center='"noisy"'`` trains SGMSE+ as in the paper.

Budgets (same code):

* ``cpu``: real speech, a 1M-parameter U-Net; the baseline for at most 300 steps / 5
  minutes, then SGMSE centred on its estimates (StoRM-style) for at most 400 steps / 8
  minutes, on the CPU; 8 held-out utterances per SNR (about 20 minutes on 2 quiet cores);
* ``gpu``: one GPU, about 5 minutes: a 2M-parameter U-Net with two ResNet blocks per level
  and attention at the lowest level (starter-sized), batch 32, bf16 autocast and
  ``torch.compile``; the baseline for 75 s, then SGMSE centred on its estimates for 150 s of
  wall clock (the steps reached are recorded); the whole test split;
* ``starter``: no training: scores the pair given with ``--models`` (default: the starter
  weights shipped with ``polydiff-sgmse``) on the whole test split, RTF on 2 CPU threads;
* ``formant-cpu`` / ``formant-gpu``: the earlier budgets on espeak-ng formant speech.

    python tools/bench/sgmse.py --budget starter                  # table (shipped weights)
    python tools/bench/sgmse.py --budget cpu --json --out sgmse_cpu.json
    python tools/bench/sgmse.py --budget gpu --sources out/sgmse-data/sources --export OUT
    python tools/bench/sgmse.py --budget cpu --set steps=20 predictive_steps=20 n_test=2

``--json`` prints exactly one JSON object on stdout (progress and logs go to stderr).
``--export DIR`` saves the trained pair as a starter-weight candidate (``DIR/sgmse``,
``DIR/predictive`` in bf16 safetensors, ``DIR/manifest.json`` with the command, device, wall
time and held-out metrics).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import platform
import shlex
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
# tools/gpu_check.sh puts only packages/*/src on PYTHONPATH: make the app importable too
_APP_SRC = ROOT / "apps" / "sgmse" / "src"
if _APP_SRC.is_dir() and str(_APP_SRC) not in sys.path:
    sys.path.append(str(_APP_SRC))

from polydiff.apps.sgmse.experiment import (  # noqa: E402
    ExperimentSettings,
    Trained,
    evaluate_methods,
    prepare_corpus,
    train_pair,
)
from polydiff.core.cli import (  # noqa: E402
    atomic_write,
    config_from_dict,
    config_to_dict,
    emit,
)

#: The layout of the cpu budget (and of the CPU-trained starter weights): 8 channels at
#: full resolution, capacity at the coarse levels (1.0M parameters, cheap per frame).
CPU_NET = {"base_channels": 8, "channel_mults": [1, 2, 4, 8, 8], "num_res_blocks": 1,
           "attention_levels": [], "mid_attention": True, "num_heads": 2, "norm_groups": 4}
#: The gpu budget's layout: two ResNet blocks per level and attention at the lowest level,
#: as NCSN++, at a size that still fits the starter weights' limits (bf16, 8 MB for both).
GPU_NET = {"base_channels": 12, "channel_mults": [1, 2, 4, 4, 6], "num_res_blocks": 2,
           "attention_levels": [4], "mid_attention": True, "num_heads": 4, "norm_groups": 4}

BUDGETS: dict[str, ExperimentSettings] = {
    "cpu": ExperimentSettings(corpus="real", sample_rate=8000, n_test=8, preset="small",
                              network=CPU_NET, steps=400, predictive_steps=300,
                              time_budget=480.0, predictive_time_budget=300.0, batch_size=8,
                              segment_frames=128, lr=5e-4, ema=0.99, objective="edm",
                              center="predictive", sampler="pc", sampler_steps=(10, 30),
                              storm_variants=("euler:2@0.1", "pc:3@0.2")),
    "gpu": ExperimentSettings(corpus="real", sample_rate=8000, n_test=20, preset="small",
                              network=GPU_NET, steps=100000, predictive_steps=100000,
                              time_budget=150.0, predictive_time_budget=75.0, batch_size=32,
                              segment_frames=128, lr=5e-4, ema=0.999, objective="edm",
                              precision="bf16", compile=True, center="predictive",
                              sampler="pc", sampler_steps=(10, 30),
                              storm_variants=("euler:1@0.035", "euler:2@0.1", "euler:3@0.3",
                                              "dpmpp_2m:5@0.5", "pc:5@0.5")),
    "starter": ExperimentSettings(corpus="real", sample_rate=8000, n_test=20,
                                  objective="edm", sampler="pc", sampler_steps=(10, 30),
                                  storm_variants=("euler:1@0.035", "euler:1@0.05",
                                                  "euler:2@0.1", "pc:3@0.2")),
    "formant-cpu": ExperimentSettings(n_train=100, n_test=10, seconds=(1.5, 2.5),
                                      preset="tiny", steps=600, predictive_steps=600,
                                      batch_size=4, segment_frames=64, lr=1e-3, ema=0.99,
                                      objective="data", sampler="pc", sampler_steps=(5, 10, 30)),
    "formant-gpu": ExperimentSettings(n_train=400, n_test=20, seconds=(2.0, 3.0),
                                      preset="small", steps=6000, predictive_steps=6000,
                                      batch_size=8, segment_frames=128, lr=3e-4, ema=0.999,
                                      objective="edm", sampler="pc", sampler_steps=(5, 10, 30)),
}


def settings_for(budget: str, overrides: list[str]) -> ExperimentSettings:
    """The budget's settings with ``key=value`` overrides (values parsed as TOML)."""
    data = config_to_dict(BUDGETS[budget])
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"sgmse bench: --set {item!r} must look like key=value")
        try:
            data[key.strip()] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            data[key.strip()] = value
    return config_from_dict(ExperimentSettings, data)


def _commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def load_pair(folder: Path) -> Trained:
    """A trained pair from ``folder/sgmse`` and ``folder/predictive``."""
    from polydiff.speech.sgmse.model import SGMSE, SGMSEPredictive

    return Trained(SGMSE.from_pretrained(folder / "sgmse"),
                   SGMSEPredictive.from_pretrained(folder / "predictive"), {}, {}, cached=True)


#: The sampler ``sgmse enhance`` uses by default with an exported pair (the manifest's
#: ``"enhance"``): the baseline's estimate diffused to t = 0.035, then one Euler step (the
#: best PESQ, ESTOI and SI-SDR of ten storm settings (Euler, Heun, DPM-Solver++(2M), PC;
#: t = 0.035-0.2) on all 36 files of the validation split for the CPU starter weights; see
#: tools/bench/README.md).
EXPORT_ENHANCE = {"sampler": "storm", "storm_base": "euler", "steps": 1, "t_start": 0.035}


def train_commands(settings: ExperimentSettings, steps: dict[str, int],
                   data: str = "real8k") -> dict[str, str]:
    """The ``sgmse train`` commands that train the bench's pair again: the same network,
    batch, segment length, learning rate, EMA, seed and logging, for the ``steps`` each
    model reached (a time budget stops at a machine-dependent step; a step count does
    not). The corpus folder is ``sgmse corpus -o DATA`` (training mixes the same sources
    on the fly, whatever its test-split size)."""
    net = "{" + ", ".join(f"{k} = {tomlish(v)}" for k, v in settings.network.items()) + "}"
    common = ["--preset", settings.preset, "--batch-size", str(settings.batch_size),
              "--lr", f"{settings.lr:g}", "--segment-frames", str(settings.segment_frames),
              "--seed", str(settings.seed)]
    extra = [f"ema={settings.ema:g}", "ckpt_every=0"]
    if settings.precision != "fp32":
        extra.append(f"precision={settings.precision}")
    if settings.compile:
        extra.append("compile=true")
    if settings.network:
        extra.append(f"network={net}")
    out: dict[str, str] = {}
    for name, n in steps.items():
        budget_steps = settings.steps if name == "sgmse" else settings.predictive_steps
        log = f"log_every={max(1, min(budget_steps // 50, 100))}"  # as train_pair logs
        if name == "predictive":
            argv = ["sgmse", "train", "--data", data, "-o", "runs/pred", "--predictive"]
        else:
            argv = ["sgmse", "train", "--data", data, "-o", "runs/sgmse", "--objective",
                    settings.objective, "--center", settings.center]
            if settings.center == "predictive":
                argv += ["--center-on", "runs/pred"]
        out[name] = shlex.join(argv + ["--steps", str(int(n))] + common
                               + ["--set", log, *extra])
    return out


def tomlish(v: Any) -> str:
    """``v`` as a TOML value (numbers, booleans, strings, lists of them)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(tomlish(x) for x in v) + "]"
    if isinstance(v, str):
        return f'"{v}"'
    return str(v)


def export_pair(runs: Path, folder: Path, settings: ExperimentSettings, trained: Trained,
                result: dict[str, Any]) -> dict[str, Any]:
    """Save the pair trained in ``runs/{sgmse,predictive}`` as starter weights (bf16
    safetensors and the manifest of :func:`polydiff.apps.sgmse.starter.export_starter`,
    which ``sgmse enhance`` and the package's re-score test read), with the equivalent
    ``sgmse train`` commands, the bench command and commit that trained them and the
    bench's held-out metrics."""
    from polydiff.apps.sgmse.starter import export_starter

    return export_starter(
        runs / "sgmse", runs / "predictive", folder, enhance=dict(EXPORT_ENHANCE),
        commands=train_commands(settings, trained.steps), commit=result["commit"],
        heldout={"split": result["split"], "files": result["files"],
                 "pesq_mode": result["pesq_mode"], "results": result["results"],
                 "by_snr": result["by_snr"], "threads": result["threads"],
                 "note": "float32 EMA weights before the bf16 export"},
        extra={"trained_by": result["command"], "bench_budget": result["budget"],
               "bench_wall_seconds": result["wall_s"]},
        note=("trained by the bench command in trained_by; the sgmse train commands run the "
              "same engine functions with the same settings for the steps reached"))


def run(budget: str, settings: ExperimentSettings, device: str, work: Path | None,
        progress: bool | None, *, models: Path | None = None, sources: Path | None = None,
        split: str = "test", rtf_threads: int | None = None, export: Path | None = None,
        command: str | None = None, max_files: int | None = None,
        every: int = 1) -> dict[str, Any]:
    """Build the corpus, train both models (or load ``models``), evaluate; returns the
    result object (and saves the pair as a starter candidate into ``export``)."""
    import torch

    from polydiff.gpu import select_device

    dev = select_device(device)
    tic = time.perf_counter()
    corpus = prepare_corpus(settings, show_progress=progress, sources=sources)
    corpus_s = time.perf_counter() - tic
    with contextlib.ExitStack() as stack:
        root = None
        if models is not None:
            trained = load_pair(models)
        else:
            root = work or Path(stack.enter_context(tempfile.TemporaryDirectory(
                prefix="sgmse-")))
            trained = train_pair(settings, corpus, root, device=str(dev), progress=progress,
                                 log=lambda m: print(f"sgmse bench: {m}", file=sys.stderr))
        for model in (trained.sgmse, trained.predictive):
            model.float().to(dev)
        threads = torch.get_num_threads()
        if rtf_threads:
            torch.set_num_threads(rtf_threads)
        try:
            results, kept = evaluate_methods(settings, corpus, trained, device=str(dev),
                                             progress=progress, split=split,
                                             max_files=max_files, every=every)
        finally:
            torch.set_num_threads(threads)
        result = _result(budget, settings, results, kept, trained, dev, models, split,
                         rtf_threads, corpus, corpus_s, tic, command)
        if export is not None:
            if root is None:
                raise ValueError("--export needs a training budget (not --models)")
            export_pair(root, export, settings, trained, result)
            result["exported"] = str(export)
    return result


def _result(budget: str, settings: ExperimentSettings, results: dict[str, Any],
            kept: dict[str, Any], trained: Trained, dev: Any, models: Path | None,
            split: str, rtf_threads: int | None, corpus: Path, corpus_s: float, tic: float,
            command: str | None) -> dict[str, Any]:
    import torch

    from polydiff.gpu import device_info

    info = device_info(dev)
    params = {n: sum(p.numel() for p in m.parameters())
              for n, m in (("sgmse", trained.sgmse), ("predictive", trained.predictive))}
    result = {
        "budget": budget,
        "results": results,
        "by_snr": kept["by_snr"],
        "pesq_mode": kept["pesq_mode"],
        "files": kept["count"],
        "split": split,
        "settings": settings.to_dict(),
        "models": str(models) if models is not None else None,
        "device": info.get("name", str(dev)),
        "device_type": dev.type,
        "train_seconds": trained.seconds,
        "train_steps": trained.steps,
        "parameters": params,
        "network": trained.sgmse.config.network.__dict__,
        "corpus": {"path": str(corpus), "seconds": round(corpus_s, 1), "kind": settings.corpus,
                   "test": ("speaker ru_RU_f_IvrvoiceRU (a language never trained on), "
                            "0/5/10 dB, 8 noise types" if settings.corpus == "real" else
                            "held-out voices and noise types (brown, hum)")},
        "torch": torch.__version__, "python": platform.python_version(),
        "threads": rtf_threads or torch.get_num_threads(),
        "commit": _commit(),
        "wall_s": round(time.perf_counter() - tic, 1),
        "note": ("real recorded speech (Debian voice prompts), 8 kHz, narrow-band PESQ"
                 if settings.corpus == "real" else
                 "espeak-ng formant speech; not comparable with VoiceBank-DEMAND numbers"),
        "command": command,
    }
    return result


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None or v != v else format(v, spec)


def _table(result: dict[str, Any]) -> str:
    mode = result.get("pesq_mode", "wb").upper()
    lines = [f"SGMSE bench, budget {result['budget']} on {result['device']} "
             f"({result['wall_s']} s; {result['files']} {result['split']} files)", "",
             f"{'method':<14} {'PESQ-' + mode:>8} {'ESTOI':>6} {'SI-SDR':>7} {'RTF':>7}"]
    for name, r in result["results"].items():
        lines.append(f"{name:<14} {_fmt(r['pesq'], '8.2f')} {_fmt(r['estoi'], '6.3f')} "
                     f"{_fmt(r['si_sdr'], '7.2f')} {_fmt(r.get('rtf'), '7.3f')}")
    for snr, methods in result.get("by_snr", {}).items():
        lines += ["", f"input SNR {snr} dB:"]
        for name, r in methods.items():
            lines.append(f"  {name:<12} {_fmt(r['pesq'], '8.2f')} {_fmt(r['estoi'], '6.3f')} "
                         f"{_fmt(r['si_sdr'], '7.2f')}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", choices=sorted(BUDGETS), default="cpu")
    p.add_argument("--device", default=None,
                   help="cpu for the cpu/starter budgets, auto (CUDA if present) otherwise")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override ExperimentSettings fields, e.g. steps=100 n_test=4")
    p.add_argument("--models", type=Path, metavar="DIR",
                   help="evaluate this trained pair (DIR/sgmse, DIR/predictive) instead of "
                   "training (budget starter: default the shipped starter weights)")
    p.add_argument("--sources", type=Path, metavar="DIR",
                   help="build the real corpus from this sources pack (no network needed)")
    p.add_argument("--split", default="test", choices=("test", "valid"),
                   help="held-out split to score (valid: for tuning)")
    p.add_argument("--max-files", type=int, metavar="N",
                   help="score only the first N files of the split (after --every)")
    p.add_argument("--every", type=int, default=1, metavar="K",
                   help="score every K-th file of the split only (default 1: all)")
    p.add_argument("--rtf-threads", type=int, metavar="N",
                   help="torch threads while evaluating (default: 2 on the CPU)")
    p.add_argument("--export", type=Path, metavar="DIR",
                   help="save the trained pair as a starter-weight candidate")
    p.add_argument("--work", type=Path, help="keep the training runs here (default: temp)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--out", type=Path, help="also write the JSON object to this file")
    args = p.parse_args(argv)
    try:
        settings = settings_for(args.budget, args.set)
    except (ValueError, TypeError) as err:
        raise SystemExit(f"sgmse bench: {err}") from None
    models = args.models
    if args.export is not None and (models is not None or args.budget == "starter"):
        raise SystemExit("sgmse bench: --export saves a pair trained by this run; it does "
                         "not go with --models or the starter budget")
    if args.budget == "starter" and models is None:
        from polydiff.apps.sgmse.commands import starter_dir

        models = starter_dir()
    if models is not None and not (models / "sgmse" / "config.json").is_file():
        raise SystemExit(f"sgmse bench: --models {models}: no sgmse/config.json there")
    device = args.device or ("cpu" if args.budget in ("cpu", "starter", "formant-cpu")
                             else "auto")
    import torch

    rtf_threads = args.rtf_threads or (2 if device == "cpu" else None)
    if device == "cpu":
        torch.set_num_threads(min(torch.get_num_threads(), 2))
    command = "python tools/bench/sgmse.py " + shlex.join(argv if argv is not None
                                                         else sys.argv[1:])
    with contextlib.redirect_stdout(sys.stderr):  # engine logs must not reach stdout
        result = run(args.budget, settings, device, args.work, None, models=models,
                     sources=args.sources, split=args.split, rtf_threads=rtf_threads,
                     export=args.export, command=command, max_files=args.max_files,
                     every=args.every)
    buf = io.StringIO()
    emit(result, True, file=buf)
    text = buf.getvalue().strip()
    if args.out:
        atomic_write(args.out, text + "\n")
    print(text if args.json else _table(result))
    return 0


__all__ = ["BUDGETS", "CPU_NET", "EXPORT_ENHANCE", "GPU_NET", "export_pair", "load_pair", "main",
           "run", "settings_for", "train_commands"]

if __name__ == "__main__":
    sys.exit(main())
