"""Scoring a voice on held-out recordings: quality against the recording and speed.

For every held-out prompt (text and recording of the real speaker, never seen in training)
and every method x vocoder, :func:`evaluate_voice` synthesises the prompt's tokens *with the
predicted durations* and reports

* ``mcd_db``: mel-cepstral distortion to the recording after DTW
  (:func:`~polydiff.speech.prodiff.features.mcd_dtw`);
* ``f0_rmse_cents`` and ``vde``: F0 error on frames voiced in both (cents) and the voicing
  decision error, along the same DTW path;
* ``dur_err_pct``: the absolute error of the utterance's length, percent of the recording's;
  ``phone_dur_mae_ms``: mean absolute error of the predicted per-token durations against the
  recording's monotonic-alignment durations;
* ``rtf``: wall time of acoustic model + vocoder over the audio's duration (lower is faster;
  ``speed_x = 1 / rtf`` is "times faster than real time"), on ``threads`` CPU threads.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from polydiff.speech.prodiff.data import Corpus
from polydiff.speech.prodiff.features import compare_dtw
from polydiff.speech.prodiff.synth import Voice

__all__ = ["TEMPERATURE_GRID", "evaluate_voice", "summarize", "tune_temperature"]

#: The sampling temperatures :func:`tune_temperature` tries by default.
TEMPERATURE_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)


@torch.no_grad()
def evaluate_voice(voice: Voice, test: Corpus, *, methods: Sequence[str] | None = None,
                   vocoders: Sequence[str] | None = None, max_prompts: int | None = None,
                   threads: int | None = 2, seed: int = 0, progress: bool = False,
                   temperature: float | None = None) -> list[dict[str, Any]]:
    """Per-prompt rows ``{prompt, method, vocoder, mcd_db, f0_rmse_cents, vde, dur_err_pct,
    phone_dur_mae_ms, seconds, acoustic_s, vocoder_s}`` (module docstring); ``temperature``:
    the DDIM methods' sampling temperature (:class:`~polydiff.speech.prodiff.synth.Voice`;
    default the voice's)."""
    from polydiff.core.utils import progress as bar

    methods = list(methods or voice.methods())
    vocoders = list(vocoders or voice.vocoders())
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    cfg = voice.mel_config
    ms_per_frame = 1000.0 / cfg.frames_per_second
    rows = []
    n = len(test.items) if max_prompts is None else min(max_prompts, len(test.items))
    try:
        for k in bar(range(n), disable=not progress, desc="evaluate"):
            item, name = test.items[k], test.names[k]
            ref = item["wave"].numpy()
            ref_dur = item["durations"]
            for method in methods:
                t0 = time.perf_counter()
                lm, dur = voice.mel_ids(item["ids"], item["stress"], item["word_start"],
                                        method, seed=seed + k, temperature=temperature)
                t_ac = time.perf_counter() - t0
                dur = dur.cpu()
                for voc in vocoders:
                    t0 = time.perf_counter()
                    wave = voice.vocode(lm, voc, seed=seed + k)
                    t_voc = time.perf_counter() - t0
                    rows.append({
                        "prompt": name, "method": method, "vocoder": voc,
                        **compare_dtw(ref, wave, cfg),
                        "dur_err_pct": 100.0 * abs(int(dur.sum()) - int(ref_dur.sum()))
                        / int(ref_dur.sum()),
                        "phone_dur_mae_ms": float((dur - ref_dur).abs().float().mean())
                        * ms_per_frame,
                        "seconds": len(wave) / voice.sample_rate,
                        "acoustic_s": t_ac, "vocoder_s": t_voc})
    finally:
        torch.set_num_threads(old)
    return rows


def summarize(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (method, vocoder): means over prompts, and the real-time factor over the
    total audio (``rtf``, ``speed_x``)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["vocoder"]), []).append(r)
    out = []
    for (method, voc), rs in groups.items():
        def mean(key: str, rs: list[dict[str, Any]] = rs) -> float:
            vals = [r[key] for r in rs if r[key] is not None and not math.isnan(r[key])]
            return float(np.mean(vals)) if vals else float("nan")

        secs = sum(r["seconds"] for r in rs)
        rtf = sum(r["acoustic_s"] + r["vocoder_s"] for r in rs) / secs
        rtf_ac = sum(r["acoustic_s"] for r in rs) / secs
        out.append({"method": method, "vocoder": voc, "prompts": len(rs),
                    "mcd_db": mean("mcd_db"), "f0_rmse_cents": mean("f0_rmse_cents"),
                    "vde": mean("vde"), "dur_err_pct": mean("dur_err_pct"),
                    "phone_dur_mae_ms": mean("phone_dur_mae_ms"), "rtf": rtf,
                    "speed_x": 1.0 / rtf if rtf > 0 else float("inf"),
                    "acoustic_speed_x": 1.0 / rtf_ac if rtf_ac > 0 else float("inf")})
    return out


def tune_temperature(voice: Voice, valid: Corpus, *, grid: Sequence[float] = TEMPERATURE_GRID,
                     method: str = "student-2", vocoder: str = "griffin-lim",
                     also: Sequence[str] = ("teacher-4",), max_prompts: int | None = None,
                     threads: int | None = 1) -> dict[str, Any]:
    """Choose ``method``'s sampling temperature on *validation* prompts ``valid``: the value of
    ``grid`` with the lowest mean MCD through ``vocoder`` (ties: the first). ``also``: methods
    scored on the same grid for reference only. Returns ``{"choice", "method", "vocoder",
    "table": [summary row + "temperature", ...]}``."""
    if not grid:
        raise ValueError("empty temperature grid")
    methods = [method] + [m for m in also if m != method and m in voice.methods()]
    table = []
    for temp in grid:
        rows = evaluate_voice(voice, valid, methods=methods, vocoders=[vocoder],
                              max_prompts=max_prompts, threads=threads, temperature=temp)
        table += [{"temperature": float(temp), **r} for r in summarize(rows)]
    scored = [r for r in table if r["method"] == method]
    best = min(scored, key=lambda r: r["mcd_db"])
    return {"choice": best["temperature"], "method": method, "vocoder": vocoder,
            "table": table}
