"""What the verbs and the demo share: the starter weights, the training sets of each space,
the default settings, and training runs (with a lock on the run folder).

Starter weights (``weights/`` in this package, listed in ``weights/manifest.json`` with the
exact command that trains each, the commit, the device, the wall time and held-out metrics):

* ``nbgraph``, ``nb201``, ``mbv3``: the architecture diffusion models;
* ``meta-<dataset>``: the NAS-Bench-Graph meta-predictor trained on the 8 other datasets
  (leave-one-dataset-out), ``meta-all``: on all 9;
* ``nb201-params``, ``mbv3-params``, ``nb201-depth``, ``mbv3-depth``: predictors of exact
  properties (for property guidance).
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypedDict

from polydiff.core.cli import CLIError

__all__ = ["WEIGHTS", "MANIFEST", "TrainSettings", "DEFAULTS", "starter_path", "manifest",
           "training_archs", "load_diffusion", "load_predictor", "run_training",
           "property_targets"]

WEIGHTS = Path(__file__).resolve().parent / "weights"
MANIFEST = WEIGHTS / "manifest.json"
SPLIT_SEED = 0
MBV3_TRAIN = 20_000


@dataclass
class TrainSettings:
    """One training run (saved as ``train.json`` beside it)."""

    space: str
    target: str = "arch"
    heldout: str | None = None
    steps: int = 3000
    batch_size: int = 256
    lr: float = 1e-3
    seed: int = 0
    hidden_size: int = 48
    depth: int = 3


DEFAULTS: dict[tuple[str, str], dict[str, Any]] = {
    ("nbgraph", "arch"): dict(steps=3000, hidden_size=48, depth=3),
    ("nb201", "arch"): dict(steps=2000, hidden_size=48, depth=3),
    ("mbv3", "arch"): dict(steps=3000, hidden_size=48, depth=3),
    ("nbgraph", "meta"): dict(steps=1500, hidden_size=32, depth=2),
    ("nb201", "params"): dict(steps=800, hidden_size=32, depth=2),
    ("nb201", "depth"): dict(steps=800, hidden_size=32, depth=2),
    ("mbv3", "params"): dict(steps=800, hidden_size=32, depth=2),
    ("mbv3", "depth"): dict(steps=800, hidden_size=32, depth=2),
}


def manifest() -> dict[str, Any]:
    """The starter weights' manifest (``{}`` if none is shipped)."""
    return json.loads(MANIFEST.read_text()) if MANIFEST.is_file() else {}


def starter_path(name: str) -> Path:
    """The folder of starter weights ``name``; ``CLIError`` if they are not shipped."""
    path = WEIGHTS / name
    if not (path / "net" / "model.safetensors").is_file():
        raise CLIError(f"no starter weights '{name}' in this installation; train them with "
                       f"'diffusionnag train' and pass the folder")
    return path


def training_archs(space_name: str) -> tuple[list[Any], list[Any]]:
    """``(train, held_out)`` architectures of a space's diffusion model.

    * ``nbgraph``: every unique architecture of the NAS-Bench-Graph table (the space itself;
      no held-out part, the model learns the space, not accuracies);
    * ``nb201``: a seeded half of the 15,625 cells for training, the other half held out;
    * ``mbv3``: 20,000 uniformly drawn valid chains (the space has about 10^19)."""
    from polydiff.graphnas.spaces import get_space

    space = get_space(space_name)
    if space_name == "nbgraph":
        from polydiff.graphnas.benchmarks import NASBenchGraph

        return [r.arch for r in NASBenchGraph("cora").records], []
    if space_name == "nb201":
        cells = list(space.enumerate())
        random.Random(SPLIT_SEED).shuffle(cells)
        half = len(cells) // 2
        return cells[:half], cells[half:]
    return space.sample(MBV3_TRAIN, seed=SPLIT_SEED), []


def property_targets(space_name: str, archs: list[Any], prop: str) -> Any:
    """Standardised exact property values (mean 0, std 1 over ``archs``) and the scaling."""
    import numpy as np

    from polydiff.graphnas.spaces import get_space

    space = get_space(space_name)
    vals = np.array([space.properties(a)[prop] for a in archs], dtype=np.float64)
    mu, sd = float(vals.mean()), float(vals.std() or 1.0)
    return (vals - mu) / sd, {"mean": mu, "std": sd}


def load_diffusion(path: str | Path | None, space: str) -> Any:
    """A diffusion model from ``path`` (default: the space's starter weights)."""
    from polydiff.graphnas.model import ArchDiffusion

    folder = starter_path(space) if path in (None, "starter") else _model_dir(Path(path))
    model = ArchDiffusion.load(folder)
    if model.config.space != space:
        raise CLIError(f"{folder} is a diffusion model of the {model.config.space} space, not "
                       f"{space}")
    return model


def load_predictor(path: str | Path) -> Any:
    from polydiff.graphnas.predictor import ArchPredictor

    return ArchPredictor.load(_model_dir(Path(path)))


def _model_dir(path: Path) -> Path:
    """``path`` or its ``model/`` sub-folder (a run directory)."""
    if not path.exists():
        raise CLIError(f"no such model folder: {path}")
    return path / "model" if (path / "model").is_dir() else path


def run_training(s: TrainSettings, out: Path, *, resume: bool, progress: bool = False
                 ) -> dict[str, Any]:
    """Train what ``s`` says into ``out`` (locked against other processes); returns a
    summary."""
    from polydiff.core.training.lock import RunLock, RunLockedError

    if out.exists() and not out.is_dir():
        raise CLIError(f"output path '{out}' exists and is not a directory")
    try:
        with RunLock(out):
            started = (out / "checkpoints").is_dir() and any((out / "checkpoints").iterdir())
            if started and not resume:
                raise CLIError(f"{out} already holds a training run; pass --resume to continue "
                               "it or choose another folder")
            if resume and (out / "train.json").is_file():
                old = json.loads((out / "train.json").read_text())
                old.pop("steps", None)
                new = {k: v for k, v in asdict(s).items() if k != "steps"}
                if old != new:
                    raise CLIError(f"--resume with settings that differ from the run in {out} "
                                   f"({_diff(old, new)}); only --steps may change")
            if not resume and (out / "model").exists():
                shutil.rmtree(out / "model")
            from polydiff.core.utils import atomic_write

            atomic_write(out / "train.json", json.dumps(asdict(s), indent=2) + "\n")
            return _train(s, out, resume=resume, progress=progress)
    except RunLockedError as exc:
        raise CLIError(str(exc)) from None


def _diff(old: dict[str, Any], new: dict[str, Any]) -> str:
    keys = [k for k in new if old.get(k) != new[k]]
    return ", ".join(f"{k}: {old.get(k)!r} -> {new[k]!r}" for k in keys)


class _TrainArgs(TypedDict):
    """The keyword arguments that every graphnas training function takes."""

    steps: int
    batch_size: int
    lr: float
    seed: int
    resume: bool
    progress: bool


def _train(s: TrainSettings, out: Path, *, resume: bool, progress: bool) -> dict[str, Any]:
    import torch

    from polydiff.graphnas import train as tr

    torch.manual_seed(s.seed)
    common = _TrainArgs(steps=s.steps, batch_size=s.batch_size, lr=s.lr, seed=s.seed, resume=resume,
                        progress=progress)
    if s.target == "arch":
        from polydiff.graphnas.model import ArchDiffusion, DiffusionConfig

        train, _ = training_archs(s.space)
        model = ArchDiffusion(DiffusionConfig(space=s.space, hidden_size=s.hidden_size,
                                              depth=s.depth))
        tr.train_diffusion(model, train, out, **common)
        return {"kind": "diffusion", "n_train": len(train),
                "parameters": sum(p.numel() for p in model.net.parameters())}
    from polydiff.graphnas.predictor import ArchPredictor, PredictorConfig

    if s.target == "meta":
        from polydiff.graphnas.benchmarks import NBG_DATASETS
        from polydiff.graphnas.meta import train_meta_predictor
        from polydiff.graphnas.tasks import TASK_DIM

        datasets = [d for d in NBG_DATASETS if d != s.heldout]
        cfg = PredictorConfig(space="nbgraph", cond_dim=TASK_DIM, hidden_size=s.hidden_size,
                              depth=s.depth)
        meta = train_meta_predictor(datasets, out, config=cfg, **common)
        return {"kind": "meta-predictor", "datasets": datasets, "heldout": s.heldout,
                "parameters": sum(p.numel() for p in meta.net.parameters())}
    train, _ = training_archs(s.space)
    y, scaling = property_targets(s.space, train, s.target)
    cfg = PredictorConfig(space=s.space, hidden_size=s.hidden_size, depth=s.depth,
                          target=s.target)
    predictor = ArchPredictor(cfg)
    states = predictor.space.to_state(train)
    tr.train_predictor(predictor, states, y, out, extra={"scaling": scaling}, **common)
    from polydiff.core.utils import atomic_write

    atomic_write(out / "model" / "scaling.json", json.dumps(scaling) + "\n")
    return {"kind": f"{s.target}-predictor", "n_train": len(train), "scaling": scaling,
            "parameters": sum(p.numel() for p in predictor.net.parameters())}


# ----------------------------------------------------------------------------- re-scoring
RESCORE_SLICE = 1000


def rescore(name: str, folder: str | Path | None = None) -> dict[str, float]:
    """Held-out metrics of starter weights ``name`` (or of the model in ``folder``), on the
    small fixed slices the manifest records and a test re-computes:

    * diffusion models (``nbgraph``, ``nb201``, ``mbv3``): validity, uniqueness (and
      novelty) of 64 samples (PC sampler, 30 steps, seed 0);
    * ``meta-<dataset>``: Spearman correlation of the predictions with the held-out
      dataset's validation accuracies on 1,000 of its architectures (seed 0);
      ``meta-all`` (no held-out dataset): the same on cora, which it trained on;
    * property predictors: Spearman correlation with the exact property on 1,000 held-out
      architectures (NAS-Bench-201: the held-out half; MobileNetV3: fresh chains, seed 1).
    """
    import numpy as np
    import torch
    from scipy.stats import spearmanr

    from polydiff.graphnas.metrics import generation_metrics
    from polydiff.graphnas.model import SamplerConfig
    from polydiff.graphnas.spaces import get_space

    path = Path(folder) if folder is not None else starter_path(name)
    torch.manual_seed(0)
    if name in ("nbgraph", "nb201", "mbv3"):
        model = load_diffusion(path, name)
        archs, _ = model.generate(64, sampler=SamplerConfig(steps=30, batch_size=64), seed=0)
        train, _ = training_archs(name) if name == "nb201" else ([], [])
        m = generation_metrics(model.space, archs, train)
        out = {"validity": m["validity"], "uniqueness": m["uniqueness"]}
        if name == "nb201":
            out["novelty"] = m["novelty"]
        return out
    pred = load_predictor(path)
    rng = np.random.default_rng(0)
    if name.startswith("meta-"):
        from polydiff.graphnas.benchmarks import NASBenchGraph
        from polydiff.graphnas.tasks import task_features

        dataset = name[5:] if name != "meta-all" else "cora"
        bench = NASBenchGraph(dataset)
        rows = rng.choice(len(bench), min(RESCORE_SLICE, len(bench)), replace=False)
        archs = [bench.records[i].arch for i in rows]
        truth = [bench.records[i].valid for i in rows]
        scores = pred.predict(archs, task_features(dataset))
        return {"spearman_valid": float(spearmanr(scores, truth)[0])}
    space_name, prop = name.split("-")
    space = get_space(space_name)
    if space_name == "nb201":
        _, held = training_archs("nb201")
        archs = [held[i] for i in rng.choice(len(held), RESCORE_SLICE, replace=False)]
    else:
        archs = space.sample(RESCORE_SLICE, seed=1)
    truth = [space.properties(a)[prop] for a in archs]
    return {"spearman": float(spearmanr(pred.predict(archs), truth)[0])}
