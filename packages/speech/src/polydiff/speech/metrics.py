"""Speech-enhancement metrics: PESQ (wide-band), ESTOI, SI-SDR, SNR; per file and per folder.

* PESQ, ITU-T P.862.2 wide-band mode, from the ``pesq`` package at 16 kHz (other rates are
  resampled to 16 kHz first); range about 1.04 to 4.64.
* ESTOI, the extended short-time objective intelligibility of Jensen and Taal, "An Algorithm
  for Predicting the Intelligibility of Speech Masked by Modulated Noise Maskers", IEEE/ACM
  TASLP 2016, from ``pystoi.stoi(..., extended=True)`` (which resamples to 10 kHz itself);
  range about 0 to 1.
* SI-SDR, the scale-invariant signal-to-distortion ratio of Le Roux, Wisdom, Erdogan and
  Hershey, "SDR - half-baked or well done?", ICASSP 2019, Eq. (1)-(2): with zero-mean
  signals, the target is ``alpha s`` with ``alpha = <s_hat, s> / ||s||^2`` and
  ``SI-SDR = 10 log10(||alpha s||^2 / ||alpha s - s_hat||^2)`` dB (own implementation).

A metric that cannot be computed for a file (PESQ's "no utterances detected", a signal
shorter than 1/4 s, ESTOI's "not enough frames", a silent reference) is NaN and its reason
goes into the row's ``error`` field; a batch never stops for one bad file. Summaries are
NaN-aware (mean, standard deviation and count over the finite values).

``pesq`` and ``pystoi`` are the optional ``metrics`` extra of ``polydiff-speech``; they are
imported when first used.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from polydiff.core.utils import atomic_write
from polydiff.speech.audio import AudioError, list_audio, read_audio, resample

__all__ = [
    "METRICS", "estoi", "evaluate_folder", "evaluate_pair", "pesq_wb", "si_sdr", "snr",
    "summarize", "write_metrics",
]

logger = logging.getLogger(__name__)

#: The metrics :func:`evaluate_pair` computes by default, in column order.
METRICS = ("pesq", "estoi", "si_sdr")
PESQ_RATE = 16000


def _pair(reference: Any, estimate: Any) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(reference, dtype=np.float64)
    e = np.asarray(estimate, dtype=np.float64)
    if s.shape != e.shape:
        raise ValueError(f"reference and estimate differ in shape: {s.shape} vs {e.shape}")
    return s, e


def si_sdr(reference: Any, estimate: Any, *, zero_mean: bool = True) -> Any:
    """SI-SDR in dB over the last axis (Le Roux et al. 2019, Eq. 1-2): a float for 1-D
    input, an array for batches. ``+inf`` for a perfect estimate, ``NaN`` for an all-zero
    reference."""
    s, e = _pair(reference, estimate)
    if zero_mean:
        s = s - s.mean(axis=-1, keepdims=True)
        e = e - e.mean(axis=-1, keepdims=True)
    ss = np.sum(s * s, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = np.sum(e * s, axis=-1) / ss
        target = alpha[..., None] * s
        t2 = np.sum(target * target, axis=-1)
        r2 = np.sum((target - e) ** 2, axis=-1)
        out = np.where(ss > 0, 10 * np.log10(t2 / r2), np.nan)
    return float(out) if out.ndim == 0 else out


def snr(reference: Any, estimate: Any) -> Any:
    """Plain SNR in dB over the last axis, ``10 log10(||s||^2 / ||s - s_hat||^2)`` (not
    scale-invariant). ``+inf`` for a perfect estimate, ``NaN`` for a zero reference."""
    s, e = _pair(reference, estimate)
    ss = np.sum(s * s, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(ss > 0, 10 * np.log10(ss / np.sum((s - e) ** 2, axis=-1)), np.nan)
    return float(out) if out.ndim == 0 else out


def _one_line(e: BaseException) -> str:
    msg = e.args[0] if e.args else ""
    if isinstance(msg, bytes):
        msg = msg.decode("utf-8", "replace")
    return " ".join(str(msg).split()) or type(e).__name__


def pesq_wb(reference: Any, estimate: Any, sample_rate: int) -> tuple[float, str | None]:
    """Wide-band PESQ (ITU-T P.862.2) of ``estimate`` against ``reference`` (1-D, same
    length); signals not at 16 kHz are resampled. Returns ``(score, None)`` or ``(nan,
    reason)``, never raising for a signal PESQ refuses."""
    from pesq import pesq

    s, e = _pair(reference, estimate)
    if sample_rate != PESQ_RATE:
        s, e = resample(s, sample_rate, PESQ_RATE), resample(e, sample_rate, PESQ_RATE)
    if not np.any(s):
        return math.nan, "pesq: silent reference"
    if not np.any(e):
        return math.nan, "pesq: silent estimate"
    try:
        return float(pesq(PESQ_RATE, s, e, "wb")), None
    except Exception as err:  # PesqError subclasses, ValueError from degenerate input
        return math.nan, f"pesq: {_one_line(err)}"


def estoi(reference: Any, estimate: Any, sample_rate: int) -> tuple[float, str | None]:
    """ESTOI (Jensen and Taal 2016) via ``pystoi.stoi(..., extended=True)``. Returns
    ``(score, None)`` or ``(nan, reason)`` (pystoi's "not enough frames" warning, which
    would otherwise return a meaningless 1e-5, becomes NaN)."""
    from pystoi import stoi

    s, e = _pair(reference, estimate)
    if not np.any(s):
        return math.nan, "estoi: silent reference"
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            score = float(stoi(s, e, int(sample_rate), extended=True))
    except Exception as err:
        return math.nan, f"estoi: {_one_line(err)}"
    for w in caught:
        if "not enough" in str(w.message).lower():
            return math.nan, "estoi: not enough non-silent frames"
    if not math.isfinite(score):
        return math.nan, "estoi: undefined (silent signal?)"
    return score, None


def evaluate_pair(clean: Any, estimate: Any, sample_rate: int, *,
                  metrics: Sequence[str] = METRICS) -> dict[str, Any]:
    """Metrics of one estimate against its clean reference (1-D waves at ``sample_rate``;
    the longer one is truncated to the common length). Returns ``{metric: value}`` plus
    ``"error"``: the reasons of NaN values joined by ``"; "`` (empty when all worked)."""
    unknown = [m for m in metrics if m not in ("pesq", "estoi", "si_sdr", "snr")]
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(unknown)}; "
                         "choose from pesq, estoi, si_sdr, snr")
    s = np.asarray(clean, dtype=np.float64).reshape(-1)
    e = np.asarray(estimate, dtype=np.float64).reshape(-1)
    n = min(len(s), len(e))
    s, e = s[:n], e[:n]
    row: dict[str, Any] = {}
    errors: list[str] = []
    for m in metrics:
        if m in ("pesq", "estoi"):
            value, why = (pesq_wb if m == "pesq" else estoi)(s, e, sample_rate)
        else:
            value = (si_sdr if m == "si_sdr" else snr)(s, e)
            why = f"{m}: silent reference" if math.isnan(value) else None
        row[m] = value
        if why:
            errors.append(why)
    row["error"] = "; ".join(errors)
    return row


def _stems(folder: str | os.PathLike[str]) -> dict[str, Path]:
    return {p.stem: p for p in list_audio(folder)}


def _failed_row(name: str, columns: Sequence[str], why: str) -> dict[str, Any]:
    return {"name": name, **{c: math.nan for c in columns}, "error": why}


def evaluate_folder(clean_dir: str | os.PathLike[str], enhanced_dir: str | os.PathLike[str],
                    noisy_dir: str | os.PathLike[str] | None = None, *,
                    metrics: Sequence[str] = METRICS, show_progress: bool = False
                    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Score every file of ``enhanced_dir`` against the same-named file (stem) of
    ``clean_dir``; with ``noisy_dir`` also the unprocessed input (columns ``noisy_<metric>``)
    so the improvement can be read off. Each estimate is resampled to its reference's rate.

    Returns ``(rows, summary)``: one row per enhanced file (``name``, the metrics,
    ``error``), and :func:`summarize` of the rows plus ``files``, ``failed`` (rows with an
    error) and ``missing`` (clean files without an enhanced file, logged as a warning).
    An enhanced file without a clean reference raises :class:`AudioError` (naming a few); a
    file that cannot be read gives a row of NaN with the reason.
    """
    clean, enhanced = _stems(clean_dir), _stems(enhanced_dir)
    noisy = _stems(noisy_dir) if noisy_dir is not None else None
    if not enhanced:
        raise AudioError(f"{enhanced_dir}: no audio files to evaluate")
    orphans = sorted(set(enhanced) - set(clean))
    if orphans:
        shown = ", ".join(enhanced[n].name for n in orphans[:3])
        raise AudioError(f"{clean_dir}: no clean reference for {len(orphans)} enhanced "
                         f"file(s): {shown}{', ...' if len(orphans) > 3 else ''}")
    if noisy is not None:
        lacking = sorted(set(enhanced) - set(noisy))
        if lacking:
            raise AudioError(f"{noisy_dir}: no noisy file for {len(lacking)} enhanced "
                             f"file(s): {', '.join(lacking[:3])}")
    missing = sorted(set(clean) - set(enhanced))
    if missing:
        logger.warning("%s: %d clean file(s) have no enhanced file (e.g. %s)", enhanced_dir,
                       len(missing), ", ".join(missing[:3]))
    columns = list(metrics) + ([f"noisy_{m}" for m in metrics] if noisy is not None else [])
    names: Iterable[str] = sorted(enhanced)
    if show_progress:
        from polydiff.core.utils import progress

        names = progress(names, total=len(enhanced), desc="evaluate")
    rows: list[dict[str, Any]] = []
    for name in names:
        try:
            ref, sr = read_audio(clean[name], allow_silent=True)
            est, _ = read_audio(enhanced[name], sample_rate=sr, allow_silent=True)
            row = {"name": name, **evaluate_pair(ref, est, sr, metrics=metrics)}
            if noisy is not None:
                noi, _ = read_audio(noisy[name], sample_rate=sr, allow_silent=True)
                base = evaluate_pair(ref, noi, sr, metrics=metrics)
                row.update({f"noisy_{m}": base[m] for m in metrics})
                if base["error"]:
                    row["error"] = "; ".join(filter(None, [row["error"],
                                                           "noisy " + base["error"]]))
            row["error"] = row.pop("error")  # keep it the last column
        except AudioError as err:
            row = _failed_row(name, columns, str(err))
        if row["error"]:
            logger.warning("%s: %s", name, row["error"])
        rows.append(row)
    summary = summarize(rows, columns)
    summary["files"] = len(rows)
    summary["failed"] = sum(1 for r in rows if r["error"])
    summary["missing"] = len(missing)
    return rows, summary


def summarize(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None
              ) -> dict[str, Any]:
    """``{column: {"mean", "std", "count"}}`` over the non-NaN values of each metric column
    (population standard deviation; mean and std NaN when the count is 0)."""
    if columns is None:
        columns = [k for k in (rows[0] if rows else {}) if k not in ("name", "error")]
    out: dict[str, Any] = {}
    for c in columns:
        v = np.array([float(r.get(c, math.nan)) for r in rows], dtype=np.float64)
        v = v[~np.isnan(v)]
        out[c] = {"mean": float(v.mean()) if v.size else math.nan,
                  "std": float(v.std()) if v.size else math.nan, "count": int(v.size)}
    return out


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value


def write_metrics(rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any],
                  out_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``metrics.csv`` (one row per file; NaN as an empty cell) and ``metrics.json``
    (``{"summary": ..., "rows": [...]}``; NaN as ``null``, infinities as ``"inf"``) into
    ``out_dir`` atomically. Returns both paths."""
    out = Path(out_dir)
    fields: list[str] = []
    for r in rows:
        fields.extend(k for k in r if k not in fields)
    if "error" in fields:
        fields.append(fields.pop(fields.index("error")))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else
                             f"{v:.6g}" if isinstance(v, float) else v)
                         for k, v in r.items()})
    csv_path = atomic_write(out / "metrics.csv", buf.getvalue())
    doc = {"summary": _json_safe(dict(summary)), "rows": _json_safe([dict(r) for r in rows])}
    json_path = atomic_write(out / "metrics.json",
                             json.dumps(doc, indent=2, allow_nan=False) + "\n")
    return csv_path, json_path
