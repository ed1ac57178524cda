"""SGMSE+ against its predictive baseline on held-out voices and noise types.

Richter, Welker, Lemercier, Lay, Gerkmann (2023), "Speech Enhancement and Dereverberation with
Diffusion-based Generative Models" (SGMSE+): the paper compares SGMSE+ with a predictive
model of the same network; this benchmark does the same on polydiff's offline corpus.

Corpus: :func:`polydiff.speech.corpus.cached_corpus` (espeak-ng formant voices in noise;
the test split's voices and noise types never occur in training). Both models get the same
network layout, optimizer steps, batch, segment length and learning rate. Reported on the
test split (means over files): PESQ-WB, ESTOI and SI-SDR of the noisy input, the predictive
baseline and SGMSE at N = 5, 10, 30 steps of the PC sampler (reverse diffusion + one
annealed Langevin corrector step, r = 0.5), and the real-time factor of each (compute
seconds per audio second, measured on the same files after a warm-up).

Budgets (same code):

* ``cpu``: minutes on a CPU: the ``tiny`` network (about 10k parameters), the data-prediction
  objective (the score objective does not train to a usable sampler at this size and
  budget; see tools/bench/README.md), 64-frame segments;
* ``gpu``: one GPU, about ten minutes: the ``small`` network (1.5M parameters), the ``edm``
  objective (EDM preconditioning of the same OUVE model: with SGMSE+'s score objective a
  67k-parameter network's sampler diverges on CPU, see tools/bench/README.md; compare with
  ``--set objective='"score"'``), 128-frame segments, more data and steps.

    python tools/bench/sgmse.py --budget cpu               # table
    python tools/bench/sgmse.py --budget gpu --json --out sgmse_gpu.json
    python tools/bench/sgmse.py --budget cpu --set steps=20 n_train=8 n_test=2   # smoke run

``--json`` prints exactly one JSON object on stdout (progress and logs go to stderr).
Formant speech is not natural speech: these numbers are not comparable with VoiceBank-DEMAND.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import platform
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

BUDGETS: dict[str, ExperimentSettings] = {
    "cpu": ExperimentSettings(n_train=100, n_test=10, seconds=(1.5, 2.5), preset="tiny",
                              steps=600, predictive_steps=600, batch_size=4,
                              segment_frames=64, lr=1e-3, ema=0.99, objective="data",
                              sampler="pc", sampler_steps=(5, 10, 30)),
    "gpu": ExperimentSettings(n_train=400, n_test=20, seconds=(2.0, 3.0), preset="small",
                              steps=6000, predictive_steps=6000, batch_size=8,
                              segment_frames=128, lr=3e-4, ema=0.999, objective="edm",
                              sampler="pc", sampler_steps=(5, 10, 30)),
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


def run(budget: str, settings: ExperimentSettings, device: str, work: Path | None,
        progress: bool | None) -> dict[str, Any]:
    """Build the corpus, train both models, evaluate; returns the result object."""
    import torch

    from polydiff.gpu import device_info, select_device

    dev = select_device(device)
    tic = time.perf_counter()
    corpus = prepare_corpus(settings, show_progress=progress)
    corpus_s = time.perf_counter() - tic
    with contextlib.ExitStack() as stack:
        root = work or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sgmse-")))
        trained = train_pair(settings, corpus, root, device=str(dev), progress=progress,
                             log=lambda m: print(f"sgmse bench: {m}", file=sys.stderr))
        for model in (trained.sgmse, trained.predictive):
            model.to(dev)
        results, _ = evaluate_methods(settings, corpus, trained, device=str(dev),
                                      progress=progress)
    info = device_info(dev)
    return {
        "budget": budget,
        "results": results,
        "settings": settings.to_dict(),
        "device": info.get("name", str(dev)),
        "device_type": dev.type,
        "train_seconds": trained.seconds,
        "parameters": sum(p.numel() for p in trained.sgmse.parameters()),
        "corpus": {"path": str(corpus), "seconds": round(corpus_s, 1),
                   "test": "held-out voices and noise types (brown, hum)"},
        "torch": torch.__version__, "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "wall_s": round(time.perf_counter() - tic, 1),
        "note": "espeak-ng formant speech; not comparable with VoiceBank-DEMAND numbers",
    }


def _table(result: dict[str, Any]) -> str:
    lines = [f"SGMSE bench, budget {result['budget']} on {result['device']} "
             f"({result['wall_s']} s)", "",
             f"{'method':<12} {'PESQ':>6} {'ESTOI':>6} {'SI-SDR':>7} {'RTF':>7}"]
    for name, r in result["results"].items():
        rtf = f"{r['rtf']:7.3f}" if "rtf" in r else f"{'-':>7}"
        lines.append(f"{name:<12} {r['pesq']:6.2f} {r['estoi']:6.3f} {r['si_sdr']:7.2f} {rtf}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", choices=sorted(BUDGETS), default="cpu")
    p.add_argument("--device", default=None,
                   help="cpu for the cpu budget, auto (CUDA if present) for gpu by default")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override ExperimentSettings fields, e.g. steps=100 n_test=4")
    p.add_argument("--work", type=Path, help="keep the training runs here (default: temp)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--out", type=Path, help="also write the JSON object to this file")
    args = p.parse_args(argv)
    try:
        settings = settings_for(args.budget, args.set)
    except (ValueError, TypeError) as err:
        raise SystemExit(f"sgmse bench: {err}") from None
    device = args.device or ("cpu" if args.budget == "cpu" else "auto")
    import torch

    if device == "cpu":
        torch.set_num_threads(min(torch.get_num_threads(), 2))
    with contextlib.redirect_stdout(sys.stderr):  # engine logs must not reach stdout
        result = run(args.budget, settings, device, args.work, None)
    buf = io.StringIO()
    emit(result, True, file=buf)
    text = buf.getvalue().strip()
    if args.out:
        atomic_write(args.out, text + "\n")
    print(text if args.json else _table(result))
    return 0


__all__ = ["BUDGETS", "main", "run", "settings_for"]

if __name__ == "__main__":
    sys.exit(main())

