"""Speech-enhancement metrics: PESQ (narrow- or wide-band), ESTOI, SI-SDR, SNR; per file and
per folder.

* PESQ from the ``pesq`` package: wide-band (ITU-T P.862.2, ``mode="wb"``, range about 1.04
  to 4.64) needs material sampled at 16 kHz or more (other rates above 16 kHz are resampled
  to 16 kHz; 8 kHz material is *refused*: up-sampling it does not make it wide-band, and the
  score would not be comparable with anything); narrow-band (ITU-T P.862 with the P.862.1
  mapping, ``mode="nb"``, range about 1.02 to 4.55) works at 8 kHz (and at 16 kHz, as
  P.862 allows). ``mode="auto"`` (the default) is narrow-band below 16 kHz and wide-band
  otherwise; the mode used is part of every result (``pesq_mode``), since narrow- and
  wide-band scores are not comparable.
* ESTOI, the extended short-time objective intelligibility of Jensen and Taal, "An Algorithm
  for Predicting the Intelligibility of Speech Masked by Modulated Noise Maskers", IEEE/ACM
  TASLP 2016, from ``pystoi.stoi(..., extended=True)`` (which resamples to 10 kHz itself);
  range about 0 to 1.
* SI-SDR, the scale-invariant signal-to-distortion ratio of Le Roux, Wisdom, Erdogan and
  Hershey, "SDR - half-baked or well done?", ICASSP 2019, Eq. (1)-(2): with zero-mean
  signals, the target is ``alpha s`` with ``alpha = <s_hat, s> / ||s||^2`` and
  ``SI-SDR = 10 log10(||alpha s||^2 / ||alpha s - s_hat||^2)`` dB (own implementation).

A metric that cannot be computed for a file (PESQ's "no utterances detected", a signal
shorter than 1/4 s, ESTOI's "not enough frames", a silent reference or a silent estimate) is
NaN in :func:`evaluate_pair` and its reason goes into the row's ``error`` field.
Reference and estimate must have the same length (a shorter estimate is an error, not
silently compared over the common part, which would flatter it); ``align=True`` instead
zero-pads or crops the estimate to the reference's length.

:func:`evaluate_folder` keeps only files whose every metric could be computed in its rows
(so nothing it writes holds NaN) and reports every other file in ``summary["errors"]``
with one reason per file; a batch never stops for one bad file. Summaries are means,
standard deviations and counts over the scored files (``None`` in JSON when there are
none).

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
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from polydiff.core.utils import atomic_write
from polydiff.speech.audio import AudioError, list_audio, read_audio, resample

__all__ = [
    "METRICS", "PESQ_MODES", "estoi", "evaluate_folder", "evaluate_pair", "pesq", "pesq_mode",
    "pesq_wb", "si_sdr", "snr", "summarize", "write_metrics",
]

logger = logging.getLogger(__name__)

#: The metrics :func:`evaluate_pair` computes by default, in column order.
METRICS = ("pesq", "estoi", "si_sdr")
PESQ_RATE = 16000
#: ``"auto"`` (narrow-band below 16 kHz, wide-band otherwise), ``"nb"``, ``"wb"``.
PESQ_MODES = ("auto", "nb", "wb")


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


def pesq_mode(mode: str, sample_rate: int) -> str:
    """The PESQ mode ``"nb"`` or ``"wb"`` that ``mode`` means for material at
    ``sample_rate``; ``ValueError`` (one line) for wide-band below 16 kHz."""
    if mode not in PESQ_MODES:
        raise ValueError(f"PESQ mode must be one of {', '.join(PESQ_MODES)}, got {mode!r}")
    if mode == "auto":
        return "nb" if sample_rate < PESQ_RATE else "wb"
    if mode == "wb" and sample_rate < PESQ_RATE:
        raise ValueError(f"wide-band PESQ needs material sampled at 16 kHz or more; this is "
                         f"{sample_rate} Hz material: use narrow-band PESQ (--pesq nb)")
    return mode


_resolve_mode = pesq_mode


def pesq(reference: Any, estimate: Any, sample_rate: int, mode: str = "auto"
         ) -> tuple[float, str | None]:
    """PESQ of ``estimate`` against ``reference`` (1-D, same length) in ``mode`` (``"nb"``,
    ``"wb"`` or ``"auto"``, see the module docstring). Narrow-band runs at 8 kHz or 16 kHz
    (other rates are resampled to 8 kHz, or 16 kHz above it); wide-band at 16 kHz (rates
    above are resampled; below 16 kHz it raises ``ValueError``). Returns ``(score, None)``
    or ``(nan, reason)``, never raising for a signal PESQ refuses."""
    from pesq import pesq as _pesq

    mode = pesq_mode(mode, int(sample_rate))
    s, e = _pair(reference, estimate)
    rate = int(sample_rate)
    if mode == "wb" or rate >= PESQ_RATE:
        target = PESQ_RATE
    else:
        target = 8000
    if rate != target:
        s, e = resample(s, rate, target), resample(e, rate, target)
    if not np.any(s):
        return math.nan, "pesq: silent reference"
    if not np.any(e):
        return math.nan, "pesq: silent estimate"
    try:
        return float(_pesq(target, s, e, mode)), None
    except Exception as err:  # PesqError subclasses, ValueError from degenerate input
        return math.nan, f"pesq: {_one_line(err)}"


def pesq_wb(reference: Any, estimate: Any, sample_rate: int) -> tuple[float, str | None]:
    """Wide-band PESQ (ITU-T P.862.2): :func:`pesq` with ``mode="wb"`` (material below
    16 kHz is refused with ``ValueError``)."""
    return pesq(reference, estimate, sample_rate, "wb")


def estoi(reference: Any, estimate: Any, sample_rate: int) -> tuple[float, str | None]:
    """ESTOI (Jensen and Taal 2016) via ``pystoi.stoi(..., extended=True)``. Returns
    ``(score, None)`` or ``(nan, reason)`` (pystoi's "not enough frames" warning, which
    would otherwise return a meaningless 1e-5, becomes NaN)."""
    from pystoi import stoi

    s, e = _pair(reference, estimate)
    if not np.any(s):
        return math.nan, "estoi: silent reference"
    if not np.any(e):
        return math.nan, "estoi: silent estimate"
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


def _align(s: np.ndarray, e: np.ndarray, align: bool) -> np.ndarray:
    if e.size == s.size:
        return e
    if not align:
        what = "shorter" if e.size < s.size else "longer"
        raise ValueError(f"the estimate is {what} than its reference ({e.size} vs {s.size} "
                         "samples); pass --align (align=True) to zero-pad or crop the "
                         "estimate to the reference's length")
    return np.pad(e, (0, s.size - e.size)) if e.size < s.size else e[:s.size]


def evaluate_pair(clean: Any, estimate: Any, sample_rate: int, *,
                  metrics: Sequence[str] = METRICS, pesq_mode: str = "auto",
                  align: bool = False) -> dict[str, Any]:
    """Metrics of one estimate against its clean reference (1-D waves at ``sample_rate``,
    of the same length, else ``ValueError``; ``align``: zero-pad or crop the estimate to the
    reference's length instead). ``pesq_mode``: see :func:`pesq`. Returns ``{metric:
    value}`` plus ``"error"``: the reasons of NaN values joined by ``"; "`` (empty when all
    worked)."""
    unknown = [m for m in metrics if m not in ("pesq", "estoi", "si_sdr", "snr")]
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(unknown)}; "
                         "choose from pesq, estoi, si_sdr, snr")
    s = np.asarray(clean, dtype=np.float64).reshape(-1)
    e = _align(s, np.asarray(estimate, dtype=np.float64).reshape(-1), align)
    row: dict[str, Any] = {}
    errors: list[str] = []
    for m in metrics:
        if m == "pesq":
            value, why = pesq(s, e, sample_rate, pesq_mode)
        elif m == "estoi":
            value, why = estoi(s, e, sample_rate)
        else:
            value = (si_sdr if m == "si_sdr" else snr)(s, e)
            why = None
            if math.isnan(value):
                why = f"{m}: silent " + ("reference" if not np.any(s) else "estimate")
        row[m] = value
        if why:
            errors.append(why)
    row["error"] = "; ".join(errors)
    return row


def _stems(folder: str | os.PathLike[str]) -> dict[str, Path]:
    return {p.stem: p for p in list_audio(folder)}


def evaluate_folder(clean_dir: str | os.PathLike[str], enhanced_dir: str | os.PathLike[str],
                    noisy_dir: str | os.PathLike[str] | None = None, *,
                    metrics: Sequence[str] = METRICS, show_progress: bool = False,
                    pesq_mode: str = "auto", align: bool = False,
                    on_row: Callable[[list[dict[str, Any]], dict[str, Any]], None] | None = None
                    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Score every file of ``enhanced_dir`` against the same-named file (stem) of
    ``clean_dir``; with ``noisy_dir`` also the unprocessed input (columns ``noisy_<metric>``)
    so the improvement can be read off. Each estimate is resampled to its reference's rate
    (a length difference of up to 2 samples after resampling is rounding and is cropped or
    padded); otherwise lengths must match unless ``align`` (:func:`evaluate_pair`).

    Returns ``(rows, summary)``: one row per file whose every metric could be computed
    (``name``, the metrics, no NaN), and :func:`summarize` of the rows plus ``files``
    (enhanced files seen), ``scored``, ``failed``, ``errors`` (``[{"name", "error"}]``, one
    reason per file that could not be scored: unreadable, silent, too short, a length
    mismatch, a metric PESQ/ESTOI refuse), ``missing`` (clean files without an enhanced
    file, logged as a warning) and ``pesq_mode`` (the PESQ mode used: ``nb``, ``wb`` or
    ``mixed``). An enhanced file without a clean reference raises :class:`AudioError`
    (naming a few); wide-band PESQ of material below 16 kHz raises ``ValueError``.
    ``on_row(rows, summary)`` is called after every file (to write results incrementally).
    """
    clean, enhanced = _stems(clean_dir), _stems(enhanced_dir)
    noisy = _stems(noisy_dir) if noisy_dir is not None else None
    if pesq_mode not in PESQ_MODES:
        raise ValueError(f"PESQ mode must be one of {', '.join(PESQ_MODES)}, got {pesq_mode!r}")
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
    errors: list[dict[str, str]] = []
    modes: set[str] = set()

    def read_as(path: Path, ref: np.ndarray, sr: int) -> np.ndarray:
        x, rate = read_audio(path, allow_silent=True)
        if rate != sr:
            x = resample(x, rate, sr)
            if abs(x.size - ref.size) <= 2:  # resampling rounds the length
                x = np.pad(x, (0, max(0, ref.size - x.size)))[:ref.size]
        return x

    def summary_now() -> dict[str, Any]:
        out = summarize(rows, columns)
        out.update(files=len(rows) + len(errors), scored=len(rows), failed=len(errors),
                   errors=list(errors), missing=len(missing),
                   pesq_mode=None if not modes else next(iter(modes)) if len(modes) == 1
                   else "mixed")
        return out

    for name in names:
        try:
            ref, sr = read_audio(clean[name], allow_silent=True)
            if "pesq" in metrics:
                modes.add(_resolve_mode(pesq_mode, sr))  # wide-band below 16 kHz raises
            try:
                est = read_as(enhanced[name], ref, sr)
                row = {"name": name, **evaluate_pair(ref, est, sr, metrics=metrics,
                                                     pesq_mode=pesq_mode, align=align)}
                if noisy is not None:
                    noi = read_as(noisy[name], ref, sr)
                    base = evaluate_pair(ref, noi, sr, metrics=metrics, pesq_mode=pesq_mode,
                                         align=align)
                    row.update({f"noisy_{m}": base[m] for m in metrics})
                    if base["error"]:
                        row["error"] = "; ".join(filter(None, [row["error"],
                                                               "noisy " + base["error"]]))
            except ValueError as err:  # AudioError, a length mismatch
                row = {"name": name, "error": _one_line(err)}
        except AudioError as err:  # an unreadable reference
            row = {"name": name, "error": _one_line(err)}
        if row["error"]:
            logger.info("%s: %s", name, row["error"])
            errors.append({"name": name, "error": row["error"]})
        else:
            row.pop("error")
            rows.append(row)
        if on_row is not None:
            on_row(rows, summary_now())
    return rows, summary_now()


def summarize(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None
              ) -> dict[str, Any]:
    """``{column: {"mean", "std", "count"}}`` over the non-NaN values of each metric column
    (population standard deviation; mean and std ``None`` when the count is 0)."""
    if columns is None:
        columns = [k for k in (rows[0] if rows else {}) if k not in ("name", "error")]
    out: dict[str, Any] = {}
    for c in columns:
        v = np.array([float(r.get(c, math.nan)) for r in rows], dtype=np.float64)
        v = v[~np.isnan(v)]
        out[c] = {"mean": float(v.mean()) if v.size else None,
                  "std": float(v.std()) if v.size else None, "count": int(v.size)}
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
    if not fields:  # nothing scored: a header only
        fields = ["name"] + [k for k, v in summary.items()
                             if isinstance(v, Mapping) and "mean" in v]
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
