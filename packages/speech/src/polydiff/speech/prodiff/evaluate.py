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

__all__ = ["evaluate_voice", "summarize"]


@torch.no_grad()
def evaluate_voice(voice: Voice, test: Corpus, *, methods: Sequence[str] | None = None,
                   vocoders: Sequence[str] | None = None, max_prompts: int | None = None,
                   threads: int | None = 2, seed: int = 0, progress: bool = False
                   ) -> list[dict[str, Any]]:
    """Per-prompt rows ``{prompt, method, vocoder, mcd_db, f0_rmse_cents, vde, dur_err_pct,
    phone_dur_mae_ms, seconds, acoustic_s, vocoder_s}`` (module docstring)."""
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
                                        method, seed=seed + k)
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
