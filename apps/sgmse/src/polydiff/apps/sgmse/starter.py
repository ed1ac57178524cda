"""The starter weights of ``sgmse`` and the small held-out slices that check them.

The starter weights (``weights/`` beside this module: ``sgmse/`` and ``predictive/`` in
bf16 safetensors, ``manifest.json``) are an SGMSE model and its predictive baseline trained
on the real-speech corpus at 8 kHz (:mod:`polydiff.speech.realcorpus`; the exact ``sgmse
train`` commands, commit, device, wall time and held-out metrics are in the manifest).
``sgmse enhance``, ``sgmse bench`` and the tour use them when no ``--model`` is given, with
the manifest's recommended sampler settings (``"enhance"``).

Check slices (:func:`check_slice`): a few held-out utterances mixed at 0, 5 and 10 dB with
noise types that need no speech pool, built deterministically on this machine:

* ``"formant"``: espeak-ng formant speech of held-out voices (always available offline; the
  models never saw formant speech);
* ``"real"``: prompts of the held-out test speaker (ru_RU, a language never trained on),
  from the Debian package in the cache (``fetch=True`` fetches it once; the default only
  uses what is already there and raises ``FileNotFoundError`` otherwise).

:func:`score` enhances a slice with the predictive baseline and the recommended sampler and
returns the metric means; :func:`export_starter` writes a trained pair with the scores of
both slices into the manifest, which the package's test re-scores.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["STARTER_DIR", "SLICE_NOISES", "check_slice", "export_starter", "load_starter",
           "read_manifest", "score"]

STARTER_DIR = Path(__file__).resolve().parent / "weights"
#: Noise types of the check slices (no speech pool needed), cycled over the utterances.
SLICE_NOISES = ("white", "pink", "bursty", "hum", "tonal")
SLICE_RATE = 8000


def read_manifest(folder: str | os.PathLike[str] = STARTER_DIR) -> dict[str, Any]:
    """The manifest of a starter folder (``FileNotFoundError`` when there is none)."""
    return json.loads((Path(folder) / "manifest.json").read_text())


def load_starter(folder: str | os.PathLike[str] = STARTER_DIR) -> tuple[Any, Any]:
    """``(sgmse, predictive)`` models of a starter folder, in float32 for inference."""
    from polydiff.speech.sgmse.model import SGMSE, SGMSEPredictive

    folder = Path(folder)
    return (SGMSE.from_pretrained(folder / "sgmse").float().eval(),
            SGMSEPredictive.from_pretrained(folder / "predictive").float().eval())


def _formant_utterances(n: int, seed: int) -> list[Any]:
    import numpy as np

    from polydiff.speech.audio import resample
    from polydiff.speech.corpus import DEFAULT_VOICES_TEST, SENTENCES, synthesize

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        text = " ".join(SENTENCES[int(k)] for k in rng.integers(0, len(SENTENCES), 2))
        voice = DEFAULT_VOICES_TEST[i % len(DEFAULT_VOICES_TEST)]
        x = synthesize(text, voice, rate=170, sample_rate=16000)
        out.append(resample(x.astype(np.float64), 16000, SLICE_RATE)[: int(3.0 * SLICE_RATE)])
    return out


def _real_utterances(n: int, seed: int, fetch: bool) -> list[Any]:
    import numpy as np

    from polydiff.core.utils import cache_dir
    from polydiff.speech.realcorpus import TEST_SPEAKERS, trim_silence
    from polydiff.speech.realspeech import SPEAKERS, load_prompt, prompts

    speaker = TEST_SPEAKERS[0]
    package = SPEAKERS[speaker][0]
    if not fetch and not (cache_dir("debian") / package / ".complete").is_file():
        raise FileNotFoundError(f"{package} is not in the cache (fetch it once with "
                                "'sgmse corpus' or pass fetch=True)")
    ps = prompts([speaker])
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(ps))
    out, cur = [], []
    for i in order:
        x = trim_silence(load_prompt(ps[int(i)])[0].astype(np.float64), SLICE_RATE)
        if x.size < 0.4 * SLICE_RATE:
            continue
        cur += [x, np.zeros(int(0.2 * SLICE_RATE))]
        if sum(c.size for c in cur) >= 2.0 * SLICE_RATE:
            out.append(np.concatenate(cur)[: int(3.0 * SLICE_RATE)])
            cur = []
            if len(out) == n:
                break
    return out


def check_slice(kind: str = "formant", n: int = 3, snrs: Sequence[float] = (0.0, 5.0, 10.0),
                seed: int = 0, fetch: bool = False) -> list[dict[str, Any]]:
    """``n`` held-out utterances, each mixed at every SNR of ``snrs`` (8 kHz): a list of
    ``{"name", "clean", "noisy", "snr_db", "noise"}`` (see the module docstring)."""
    import numpy as np

    from polydiff.speech.corpus import active_power, mix_at_snr
    from polydiff.speech.realcorpus import make_real_noise

    if kind not in ("formant", "real"):
        raise ValueError(f"kind must be 'formant' or 'real', got {kind!r}")
    utts = _formant_utterances(n, seed) if kind == "formant" else \
        _real_utterances(n, seed, fetch)
    items = []
    for i, clean in enumerate(utts):
        clean = clean * 10 ** (-26 / 20) / math.sqrt(active_power(clean, SLICE_RATE))
        kind_i = SLICE_NOISES[i % len(SLICE_NOISES)]
        noise = make_real_noise(kind_i, clean.size, np.random.default_rng([seed, i]),
                                SLICE_RATE)
        for snr in snrs:
            c, y = mix_at_snr(clean, noise, float(snr), SLICE_RATE)
            items.append({"name": f"{kind}{i}_snr{snr:g}", "clean": c.astype(np.float32),
                          "noisy": y.astype(np.float32), "snr_db": float(snr),
                          "noise": kind_i})
    return items


def score(sgmse: Any, predictive: Any, items: Sequence[dict[str, Any]],
          enhance: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """Means of PESQ (narrow-band at 8 kHz), ESTOI and SI-SDR over ``items`` for the noisy
    input, the predictive baseline and SGMSE with the ``enhance`` settings (``sampler``,
    ``steps``, ``t_start``...); seeds are the item indices. ``None`` where no value is
    finite."""
    from polydiff.speech.metrics import evaluate_pair
    from polydiff.speech.sgmse.enhance import enhance_with_stats

    kw = dict(enhance)
    if kw.get("sampler") == "storm":
        kw["predictive"] = predictive
    rows: dict[str, list[dict[str, Any]]] = {"noisy": [], "predictive": [], "sgmse": []}
    for i, it in enumerate(items):
        sr = SLICE_RATE
        rows["noisy"].append(evaluate_pair(it["clean"], it["noisy"], sr))
        est, _ = enhance_with_stats(predictive, it["noisy"], sr)
        rows["predictive"].append(evaluate_pair(it["clean"], est, sr))
        est, _ = enhance_with_stats(sgmse, it["noisy"], sr, seed=i, **kw)
        rows["sgmse"].append(evaluate_pair(it["clean"], est, sr))
    out: dict[str, dict[str, float | None]] = {}
    for name, rs in rows.items():
        out[name] = {}
        for m in ("pesq", "estoi", "si_sdr"):
            vals = [float(r[m]) for r in rs if math.isfinite(float(r[m]))]
            out[name][m] = round(sum(vals) / len(vals), 4) if vals else None
    return out


def _commit(root: Path) -> str | None:
    try:
        p = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                           text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return p.stdout.strip() or None if p.returncode == 0 else None


def export_starter(sgmse_run: str | os.PathLike[str], predictive_run: str | os.PathLike[str],
                   out_dir: str | os.PathLike[str], *, enhance: dict[str, Any],
                   commands: dict[str, str] | None = None,
                   heldout: dict[str, Any] | None = None, note: str = "",
                   real_slice: bool = True, commit: str | None = None,
                   wall_seconds: dict[str, float] | None = None,
                   extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the trained pair (the runs' exported EMA weights, ``<run>/model``) to
    ``out_dir`` in bf16 with a manifest: the ``sgmse train`` ``commands`` that made them,
    the runs' settings (``sgmse.toml``), steps, wall times (``wall_seconds``, default the
    last time in the run's log) and devices, the ``commit`` they
    were trained at (default: this checkout's), ``heldout`` metrics (e.g. the bench's), the
    scores of the check slices and the ``extra`` keys. Returns the manifest."""
    import copy

    import torch

    from polydiff.core.utils import atomic_write
    from polydiff.speech.sgmse.model import SGMSE, SGMSEPredictive

    out = Path(out_dir)
    runs = {"sgmse": Path(sgmse_run), "predictive": Path(predictive_run)}
    models = {"sgmse": SGMSE.from_pretrained(runs["sgmse"] / "model"),
              "predictive": SGMSEPredictive.from_pretrained(runs["predictive"] / "model")}
    training: dict[str, Any] = {}
    for name, run in runs.items():
        cfg = json.loads((run / "config.json").read_text())
        stats = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()
                 if line.strip()]
        timed = [r["time"] for r in stats if r.get("time") is not None]
        training[name] = {"command": (commands or {}).get(name),
                          "steps": stats[-1]["step"] if stats else None,
                          "wall_seconds": (wall_seconds or {}).get(name)
                          or (timed[-1] if timed else None),
                          "device": cfg.get("resolved", {}).get("device"),
                          "parameters": sum(p.numel() for p in models[name].parameters()),
                          "settings": (run / "sgmse.toml").read_text()
                          if (run / "sgmse.toml").is_file() else None}
    out.mkdir(parents=True, exist_ok=True)
    for name, model in models.items():
        copy.deepcopy(model).to(torch.bfloat16).save_pretrained(out / name)
    sg, pr = load_starter(out)  # score what is shipped (bf16 weights, fp32 compute)
    checks = {"formant": {"n": 3, "seed": 0,
                          "scores": score(sg, pr, check_slice("formant"), enhance)}}
    if real_slice:
        try:
            checks["real"] = {"n": 3, "seed": 0,
                              "scores": score(sg, pr, check_slice("real"), enhance)}
        except FileNotFoundError:
            pass
    manifest = {
        "format": "polydiff-sgmse-starter", "version": 1,
        "sample_rate": models["sgmse"].sample_rate, "dtype": "bfloat16",
        "enhance": enhance, "training": training,
        "commit": commit or _commit(Path(__file__).resolve().parent),
        "device": f"{platform.machine()} CPU" if all(
            str(t["device"]).startswith("cpu") for t in training.values()) else "mixed",
        "exported": time.strftime("%Y-%m-%d"),
        "weights_bytes": {n: (out / n / "model.safetensors").stat().st_size for n in models},
        "heldout": heldout or {}, "check_slices": checks, "note": note, **(extra or {}),
    }
    atomic_write(out / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    return manifest
