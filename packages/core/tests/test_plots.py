"""polydiff.core.plots writes real, readable PNG figures atomically, one per call."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from polydiff.core import plots

pytestmark = pytest.mark.skipif(not plots.plots_available(), reason="needs the plots extra")


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_every_figure_kind_writes_a_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = np.arange(10)
    out = [
        plots.line_plot(tmp_path / "line.png", {"a": (x, x**2), "b": (x, x + 1)},
                        xlabel="step", ylabel="loss", logy=True, markers=True),
        plots.image_grid(tmp_path / "grid.png", rng.random((6, 8, 8)), nrow=2,
                         row_labels=["real", "gen"]),
        plots.spectrogram_plot(tmp_path / "spec.png",
                               {"noisy": rng.normal(size=(256, 40)) + 1j,
                                "clean": np.zeros((256, 40))},
                               sample_rate=16000, hop_length=128, n_fft=510),
        plots.fan_chart(tmp_path / "fan.png", rng.random(48),
                        {q: np.full(12, q) for q in (0.1, 0.25, 0.5, 0.75, 0.9)},
                        truth=rng.random(12), title="item 0"),
    ]
    for path in out:
        w, h = _png_size(path)
        assert w > 100 and h > 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fan.png", "grid.png", "line.png",
                                                          "spec.png"]  # no temp files left


def test_failed_plot_leaves_no_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        plots.line_plot(tmp_path / "bad.png", {"a": ([1, 2, 3], [1, 2])}, xlabel="x",
                        ylabel="y")
    assert list(tmp_path.iterdir()) == []
