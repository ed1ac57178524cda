"""Figures for demos, benchmarks and CLIs: one place, one look, atomic PNG files.

Needs the ``plots`` extra (``pip install polydiff-core[plots]``, i.e. matplotlib); it is
imported lazily, with the non-interactive Agg backend, inside each function, so importing this
module costs nothing. Every function writes a PNG through
:func:`polydiff.core.utils.atomic_path` (a crash never leaves a half-written figure) and returns
its path. Inputs are numpy arrays or anything ``numpy.asarray`` accepts (torch tensors on the
CPU included).

* :func:`line_plot` - curves with labelled axes (loss curves, metric-vs-steps, convergence);
* :func:`image_grid` - a grid of images (samples), optional row labels;
* :func:`spectrogram_plot` - magnitude spectrograms in dB, time and frequency axes;
* :func:`fan_chart` - a probabilistic forecast: history, median and central intervals.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from polydiff.core.utils import MissingDependencyError, atomic_path

__all__ = ["line_plot", "image_grid", "spectrogram_plot", "fan_chart", "plots_available"]

_DPI = 110


def plots_available() -> bool:
    """Whether matplotlib (the ``plots`` extra) is installed."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:  # one line for CLIs
        raise MissingDependencyError(
            "plotting needs matplotlib: pip install 'polydiff-core[plots]'") from exc
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | os.PathLike[str]) -> Path:
    plt = _pyplot()
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=_DPI, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def line_plot(path: str | os.PathLike[str], curves: Mapping[str, tuple[Any, Any]], *,
              xlabel: str, ylabel: str, title: str = "", logx: bool = False,
              logy: bool = False, markers: bool = False, size: tuple[float, float] = (5.5, 3.5)
              ) -> Path:
    """``curves`` maps a legend label to ``(x, y)``; axes are labelled, log scales optional."""
    import numpy as np

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=size)
    for label, (x, y) in curves.items():
        ax.plot(np.asarray(x), np.asarray(y), marker="o" if markers else None, ms=3, lw=1.4,
                label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    if len(curves) > 1:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def image_grid(path: str | os.PathLike[str], images: Any, *, nrow: int,
               row_labels: Sequence[str] | None = None, title: str = "",
               cmap: str = "gray", vmin: float | None = None, vmax: float | None = None,
               cell: float = 0.6) -> Path:
    """``images``: ``(N, H, W)`` (grey) or ``(N, H, W, 3)`` (RGB in ``[0, 1]``), laid out
    ``nrow`` rows by ``ceil(N / nrow)`` columns, row-major."""
    import math

    import numpy as np

    plt = _pyplot()
    imgs = np.asarray(images)
    n = imgs.shape[0]
    ncol = math.ceil(n / nrow)
    fig, axes = plt.subplots(nrow, ncol, figsize=(ncol * cell + 0.8, nrow * cell + 0.4),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        for side in ax.spines.values():
            side.set_visible(False)
        if i < n:
            ax.imshow(imgs[i], cmap=cmap if imgs.ndim == 3 else None, vmin=vmin, vmax=vmax,
                      interpolation="nearest")
    if row_labels is not None:
        for r, label in enumerate(row_labels[:nrow]):
            axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def spectrogram_plot(path: str | os.PathLike[str], panels: Mapping[str, Any], *,
                     sample_rate: int, hop_length: int, n_fft: int, db_range: float = 80.0
                     ) -> Path:
    """Stacked magnitude spectrograms (one panel per entry of ``panels``: a complex or
    magnitude ``(F, N)`` array), in dB relative to the loudest panel, with time (s) and
    frequency (kHz) axes and a shared colour scale."""
    import numpy as np

    plt = _pyplot()
    mags = {k: np.abs(np.asarray(v)) for k, v in panels.items()}
    top = max(float(m.max()) for m in mags.values()) or 1.0
    fig, axes = plt.subplots(len(mags), 1, figsize=(7.0, 2.0 * len(mags) + 0.3),
                             squeeze=False, sharex=True)
    image = None
    for ax, (label, m) in zip(axes[:, 0], mags.items(), strict=True):
        db = 20 * np.log10(np.maximum(m, top * 10 ** (-db_range / 20)) / top)
        extent = (0.0, m.shape[1] * hop_length / sample_rate, 0.0, sample_rate / 2000.0)
        image = ax.imshow(db, origin="lower", aspect="auto", extent=extent, cmap="magma",
                          vmin=-db_range, vmax=0.0)
        ax.set_ylabel("kHz")
        ax.set_title(label, fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("time (s)")
    if image is not None:
        fig.colorbar(image, ax=axes[:, 0].tolist(), label="dB", pad=0.01)
    return _save(fig, path)


def fan_chart(path: str | os.PathLike[str], history: Any, quantiles: Mapping[float, Any], *,
              history_x: Any = None, forecast_x: Any = None, truth: Any = None,
              title: str = "", xlabel: str = "time step", ylabel: str = "value") -> Path:
    """A probabilistic forecast: ``history`` (observed), shaded central intervals from
    ``quantiles`` (level -> ``(H,)`` values, e.g. 0.1 ... 0.9, paired symmetrically), the
    median line, and optionally the realised ``truth``. Datetime ``history_x`` /
    ``forecast_x`` give a date axis with concise tick labels."""
    import numpy as np

    plt = _pyplot()
    hist = np.asarray(history, dtype=float)
    levels = sorted(quantiles)
    horizon = len(np.asarray(quantiles[levels[0]]))
    hx = np.arange(len(hist)) if history_x is None else np.asarray(history_x)
    fx = np.arange(len(hist), len(hist) + horizon) if forecast_x is None \
        else np.asarray(forecast_x)
    fig, ax = plt.subplots(figsize=(7.0, 3.2))
    ax.plot(hx, hist, color="0.2", lw=1.0, label="history")
    pairs = [(lo, hi) for lo, hi in zip(levels, levels[::-1], strict=True) if lo < hi]
    for i, (lo, hi) in enumerate(pairs):
        ax.fill_between(fx, np.asarray(quantiles[lo]), np.asarray(quantiles[hi]),
                        color="tab:blue", alpha=0.15 + 0.5 * i / max(len(pairs), 1), lw=0,
                        label=f"{round(100 * (hi - lo))}% interval")
    if 0.5 in quantiles:
        ax.plot(fx, np.asarray(quantiles[0.5]), color="tab:blue", lw=1.4, label="median")
    if truth is not None:
        ax.plot(fx, np.asarray(truth, dtype=float), color="tab:red", lw=1.0, ls="--",
                label="actual")
    if np.issubdtype(np.asarray(fx).dtype, np.datetime64):  # dates: concise, readable ticks
        import matplotlib.dates as mdates

        locator = mdates.AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    return _save(fig, path)
