"""One SGMSE+ experiment, shared by the demo, ``sgmse bench`` and ``tools/bench/sgmse.py``.

Build (or reuse) an offline corpus (:func:`polydiff.speech.corpus.cached_corpus`: espeak-ng
formant voices plus noise; voices *and* noise types of the test split are held out of
training), train SGMSE+ (Richter et al. 2023, the score objective with the OUVE SDE) and its
predictive baseline on the same data under the same budget (same network layout, steps,
batch and learning rate), then enhance every test file with each and score them (PESQ-WB,
ESTOI, SI-SDR; :func:`polydiff.speech.metrics.evaluate_pair`) together with the noisy input.
The real-time factor of each method is measured on those same files (compute seconds per
second of audio, after one warm-up call).

Everything heavy (torch, numpy, the corpus generator) is imported inside the functions.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "ExperimentSettings", "Trained", "corpus_spec", "evaluate_methods", "network_config",
    "prepare_corpus", "settings_key", "train_pair",
]


@dataclass(frozen=True)
class ExperimentSettings:
    """Size of one experiment (corpus, networks, training budget, evaluation).

    Attributes:
        n_train, n_test: corpus pairs for training and for the held-out test split.
        seconds: utterance length range (s); snr_db: input SNR range (dB).
        preset: the NCSN++ preset the networks start from (``tiny``, ``small``, ``paper``);
            network: overrides of its :class:`~polydiff.speech.sgmse.network.NCSNppConfig`
            fields (e.g. ``{"base_channels": 8}``), the same for both models.
        steps, predictive_steps: optimizer steps of SGMSE+ and of the baseline.
        batch_size, segment_frames, lr, ema: training batch, STFT frames per example,
            Adam learning rate, EMA decay of the weights (used for inference).
        objective: SGMSE's objective (``score`` is SGMSE+).
        sampler, sampler_steps: the reverse sampler and the step counts evaluated.
        corrector_steps, snr: the annealed Langevin corrector of the PC sampler.
        seed: corpus, initialisation, data order and sampling seed.
    """

    n_train: int = 64
    n_test: int = 6
    seconds: tuple[float, float] = (1.5, 2.5)
    snr_db: tuple[float, float] = (-5.0, 10.0)
    preset: str = "tiny"
    network: dict[str, Any] = field(default_factory=dict)
    steps: int = 400
    predictive_steps: int = 400
    batch_size: int = 4
    segment_frames: int = 64
    lr: float = 1e-3
    ema: float = 0.99
    objective: str = "score"
    sampler: str = "pc"
    sampler_steps: tuple[int, ...] = (5, 10, 30)
    corrector_steps: int = 1
    snr: float = 0.5
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["seconds"], out["snr_db"] = list(self.seconds), list(self.snr_db)
        out["sampler_steps"] = list(self.sampler_steps)
        return out


def settings_key(settings: ExperimentSettings, *extra: Any) -> str:
    """A short hash of the settings that determine trained weights (and ``extra``)."""
    train = {k: v for k, v in settings.to_dict().items()
             if k not in ("sampler", "sampler_steps", "corrector_steps", "snr")}
    blob = json.dumps({"settings": train, "extra": [str(e) for e in extra]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def corpus_spec(settings: ExperimentSettings) -> Any:
    """The :class:`~polydiff.speech.corpus.CorpusSpec` of ``settings`` (denoising; held-out
    voices and noise types in test; no validation split)."""
    from polydiff.speech.corpus import CorpusSpec

    return CorpusSpec(task="denoise", n_train=settings.n_train, n_valid=0,
                      n_test=settings.n_test, seconds=settings.seconds,
                      snr_db=settings.snr_db, seed=settings.seed)


def prepare_corpus(settings: ExperimentSettings, cache_dir: Path | None = None,
                   show_progress: bool | None = None) -> Path:
    """The corpus folder (built once under the cache, reused afterwards)."""
    from polydiff.speech.corpus import cached_corpus

    return cached_corpus(corpus_spec(settings), cache_dir=cache_dir, show_progress=show_progress)


def network_config(settings: ExperimentSettings) -> Any:
    """The network layout shared by both models."""
    from polydiff.speech.sgmse.network import NCSNppConfig

    return NCSNppConfig.preset(settings.preset, **settings.network)


@dataclass
class Trained:
    """The two trained models and what their training cost."""

    sgmse: Any
    predictive: Any
    seconds: dict[str, float]
    stats: dict[str, list[dict[str, Any]]]
    cached: bool = False


def train_pair(settings: ExperimentSettings, corpus: Path, run_root: Path, *,
               device: str = "cpu", progress: bool | None = None,
               cache: Path | None = None, log: Callable[[str], None] | None = None) -> Trained:
    """Train SGMSE+ and the predictive baseline (runs in ``run_root/{sgmse,predictive}``).

    With ``cache``, a finished pair stored there (weights, stats and timings in
    ``done.json``) is loaded instead of trained, and a newly trained pair is stored there.
    """
    import shutil

    import torch

    from polydiff.core.cli import atomic_write
    from polydiff.speech.sgmse.model import (
        SGMSE,
        PredictiveConfig,
        SGMSEConfig,
        SGMSEPredictive,
    )
    from polydiff.speech.sgmse.train import train_predictive, train_sgmse

    say = log or (lambda _msg: None)
    if cache is not None and (cache / "done.json").is_file():
        try:
            done = json.loads((cache / "done.json").read_text())
            sg = SGMSE.from_pretrained(cache / "sgmse")
            pr = SGMSEPredictive.from_pretrained(cache / "predictive")
            say(f"loaded cached models from {cache}")
            return Trained(sg, pr, done["seconds"], done["stats"], cached=True)
        except (OSError, ValueError, KeyError) as err:
            say(f"cache {cache} unusable ({err}); training again")
    net = network_config(settings)
    seconds: dict[str, float] = {}
    stats: dict[str, list[dict[str, Any]]] = {}
    models: dict[str, Any] = {}
    for name, steps in (("sgmse", settings.steps), ("predictive", settings.predictive_steps)):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.seed)
            if name == "sgmse":
                model: Any = SGMSE(SGMSEConfig(objective=settings.objective,
                                               preset=settings.preset, network=net))
            else:
                model = SGMSEPredictive(PredictiveConfig(preset=settings.preset, network=net))
        run = run_root / name
        shutil.rmtree(run, ignore_errors=True)
        fn = train_sgmse if name == "sgmse" else train_predictive
        tic = time.perf_counter()
        res = fn(model, corpus, run, steps=steps, batch_size=settings.batch_size,
                 lr=settings.lr, ema=settings.ema, device=device, resume=False,
                 progress=True if progress is None else progress, seed=settings.seed,
                 segment_frames=settings.segment_frames,
                 log_every=max(1, steps // 50), ckpt_every=0)
        seconds[name] = time.perf_counter() - tic
        from polydiff.core.training.rundir import read_stats

        stats[name] = [{"step": int(r["step"]), "loss": float(r["loss"])}
                       for r in read_stats(run)]
        cls = SGMSE if name == "sgmse" else SGMSEPredictive
        models[name] = cls.from_pretrained(res.weights)  # the EMA weights
        say(f"trained {name}: {steps} steps in {seconds[name]:.1f} s")
    if cache is not None:
        for name in models:
            models[name].save_pretrained(cache / name)
        atomic_write(cache / "done.json", json.dumps(
            {"seconds": seconds, "stats": stats, "settings": settings.to_dict()}))
    return Trained(models["sgmse"], models["predictive"], seconds, stats)


def _mean(rows: Sequence[dict[str, Any]], key: str) -> float:
    vals = [float(r[key]) for r in rows if isinstance(r.get(key), int | float)
            and math.isfinite(float(r[key]))]
    return sum(vals) / len(vals) if vals else math.nan


def evaluate_methods(settings: ExperimentSettings, corpus: Path, trained: Trained, *,
                     device: str = "cpu", keep: int = 0, progress: bool | None = None,
                     split: str = "test", max_files: int | None = None
                     ) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """Score the noisy input, the baseline and SGMSE+ at each of ``sampler_steps`` on the
    ``split`` files of ``corpus``.

    Returns ``(results, kept)``: ``results[method] = {"pesq", "estoi", "si_sdr"}`` (means
    over files) plus ``"rtf"`` for the enhancers (``noisy``, ``predictive``,
    ``sgmse_n<N>``); ``kept`` holds the waves of the first ``keep`` files
    (``{"rate", "files": [{"name", "clean", "noisy", <method>: wave}]}``).
    """
    from polydiff.core.cli import progress as bar
    from polydiff.speech.data import iter_pairs
    from polydiff.speech.metrics import evaluate_pair
    from polydiff.speech.sgmse.enhance import enhance_with_stats

    methods: list[tuple[str, Any, dict[str, Any]]] = [("predictive", trained.predictive, {})]
    for n in settings.sampler_steps:
        methods.append((f"sgmse_n{n}", trained.sgmse, {
            "sampler": settings.sampler, "steps": int(n),
            "corrector_steps": settings.corrector_steps, "snr": settings.snr}))
    rate = trained.sgmse.sample_rate
    items = list(iter_pairs(corpus, split, sample_rate=rate))[:max_files]
    if not items:
        raise ValueError(f"{corpus}: no {split} files to evaluate")
    for model in (trained.sgmse, trained.predictive):  # warm-up: first-call overheads
        enhance_with_stats(model, items[0][2][:rate // 4], rate, steps=2, device=device)
    rows: dict[str, list[dict[str, Any]]] = {"noisy": []}
    cost: dict[str, list[float]] = {}
    kept: dict[str, Any] = {"rate": rate, "files": []}
    total_audio = 0.0
    for i, (pair, clean, noisy, sr) in enumerate(bar(items, total=len(items), desc="evaluate",
                                                      disable=None if progress is None
                                                      else not progress)):
        total_audio += len(noisy) / sr
        rows["noisy"].append(evaluate_pair(clean, noisy, sr))
        keep_row: dict[str, Any] = {"name": pair.name, "clean": clean, "noisy": noisy}
        for name, model, kw in methods:
            est, st = enhance_with_stats(model, noisy, sr, seed=settings.seed + i,
                                         device=device, **kw)
            rows.setdefault(name, []).append(evaluate_pair(clean, est, sr))
            cost.setdefault(name, []).append(st.seconds)
            keep_row[name] = est
        if i < keep:
            kept["files"].append(keep_row)
    results: dict[str, dict[str, float]] = {}
    for name, rs in rows.items():
        results[name] = {m: _mean(rs, m) for m in ("pesq", "estoi", "si_sdr")}
        if name in cost:
            results[name]["rtf"] = sum(cost[name]) / total_audio
    return results, kept
