"""Drawings of architectures as graphs (matplotlib, imported lazily): a cell is drawn as its
graph view, nodes coloured by type and labelled, edges as arrows, laid out left to right in
topological order; several cells share one figure."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from polydiff.graphnas.spaces.base import SearchSpace

__all__ = ["draw_cells"]

_PALETTE = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3",
            "#8C8C8C", "#CCB974", "#64B5CD")


def _positions(n: int, adj: Any) -> list[tuple[float, float]]:
    """Columns by longest path from a source (nodes are in topological order), rows spread."""
    level = [0] * n
    for j in range(n):
        for i in range(j):
            if adj[i][j]:
                level[j] = max(level[j], level[i] + 1)
    cols: dict[int, list[int]] = {}
    for v, lv in enumerate(level):
        cols.setdefault(lv, []).append(v)
    pos = [(0.0, 0.0)] * n
    for lv, vs in cols.items():
        for k, v in enumerate(vs):
            pos[v] = (float(lv), (k - (len(vs) - 1) / 2) * 1.0)
    return pos


def draw_cells(space: SearchSpace, archs: Sequence[Any], path: str | Path, *,
               titles: Sequence[str] | None = None, suptitle: str | None = None,
               columns: int = 3) -> Path:
    """Draw ``archs`` (valid architectures of ``space``) into one PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from polydiff.core.utils import atomic_path

    n = len(archs)
    if n == 0:
        raise ValueError("nothing to draw")
    cols = min(columns, n)
    rows = (n + cols - 1) // cols
    wide = space.n_nodes > 10
    fig, axes = plt.subplots(rows, cols, figsize=(cols * (6.5 if wide else 3.6),
                                                  rows * (1.8 if wide else 2.8)),
                             squeeze=False)
    colour = {t: _PALETTE[k % len(_PALETTE)] for k, t in enumerate(space.node_types)}
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= n:
            continue
        types, adj = space.graph(archs[k])
        a = adj.tolist()
        if wide:  # a chain: one row, wrapped per stage of 4
            pos = [(float(v % 10), -float(v // 10) * 1.2) for v in range(len(types))]
        else:
            pos = _positions(len(types), a)
        for i in range(len(types)):
            for j in range(len(types)):
                if a[i][j]:
                    ax.annotate("", xy=pos[j], xytext=pos[i],
                                arrowprops=dict(arrowstyle="->", color="#555555", lw=0.8,
                                                shrinkA=9, shrinkB=9))
        for v, t in enumerate(types):
            ax.scatter(*pos[v], s=420 if not wide else 300, color=colour[t], zorder=3,
                       edgecolors="black", linewidths=0.5)
            ax.text(pos[v][0], pos[v][1] - 0.42, t.replace("nor_conv_", "conv").replace(
                "skip_connect", "skip").replace("avg_pool_3x3", "pool"), ha="center",
                va="top", fontsize=6.5)
        xs, ys = [p[0] for p in pos], [p[1] for p in pos]
        ax.set_xlim(min(xs) - 0.6, max(xs) + 0.6)
        ax.set_ylim(min(ys) - 0.9, max(ys) + 0.5)
        if titles is not None:
            ax.set_title(titles[k], fontsize=8)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
