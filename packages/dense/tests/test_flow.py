"""Flow tools: the .flo format, colour coding, warping, resizing and the metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from polydiff.dense.flow import (
    FlowError,
    flow_metrics,
    flow_to_color,
    read_flo,
    resize_flow,
    warp,
    warp_image,
    write_flo,
)


def test_flo_round_trip_and_layout(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    flow = rng.normal(size=(2, 5, 7)).astype(np.float32)
    path = write_flo(tmp_path / "f.flo", flow)
    data = path.read_bytes()
    # Middlebury layout: "PIEH", width, height, then (u, v) pairs row by row
    assert data[:4] == b"PIEH" and len(data) == 12 + 8 * 35
    assert np.frombuffer(data[4:12], "<i4").tolist() == [7, 5]
    first = np.frombuffer(data[12:20], "<f4")
    assert first.tolist() == [flow[0, 0, 0], flow[1, 0, 0]]
    np.testing.assert_array_equal(read_flo(path), flow)
    np.testing.assert_array_equal(read_flo(write_flo(tmp_path / "g.flo",
                                                     flow.transpose(1, 2, 0))), flow)


@pytest.mark.parametrize("payload", [b"", b"NOTAFLOWFILE", b"PIEH" + b"\x05\x00\x00\x00" * 2])
def test_bad_flo_files_are_one_line_errors(tmp_path: Path, payload: bytes) -> None:
    p = tmp_path / "bad.flo"
    p.write_bytes(payload)
    with pytest.raises(FlowError) as e:
        read_flo(p)
    assert "\n" not in str(e.value)
    with pytest.raises(FlowError, match="no such file"):
        read_flo(tmp_path / "missing.flo")


def test_color_coding() -> None:
    flow = np.zeros((2, 4, 4), np.float32)
    flow[0, 0, 0] = 1.0                  # right
    flow[0, 0, 1] = -1.0                 # left
    flow[:, 3, 3] = np.nan
    col = flow_to_color(flow)
    np.testing.assert_allclose(col[1, 1], [1, 1, 1])          # no motion: white
    np.testing.assert_allclose(col[3, 3], [0, 0, 0])          # unknown: black
    assert not np.allclose(col[0, 0], col[0, 1])              # opposite directions differ
    assert col.shape == (4, 4, 3) and col.min() >= 0 and col.max() <= 1
    # saturation grows with magnitude
    half = flow_to_color(flow * 0.5, max_norm=1.0)
    assert half[0, 0].min() > col[0, 0].min()


def test_warp_translation_is_exact() -> None:
    img = torch.arange(64.0).reshape(1, 1, 8, 8)
    flow = torch.zeros(1, 2, 8, 8)
    flow[:, 0] = 2.0   # A(x) matches B(x + 2)
    out = warp(img, flow)
    torch.testing.assert_close(out[..., :6], img[..., 2:])
    np.testing.assert_allclose(warp_image(img[0, 0].numpy(), flow[0].numpy())[:, :6],
                               img[0, 0, :, 2:].numpy())


def test_resize_flow_scales_vectors() -> None:
    # an affine flow u = 0.5 x resamples exactly (bilinear) and doubles with the grid
    xs = torch.arange(9.0)
    flow = torch.stack([0.5 * xs.expand(9, 9), torch.ones(9, 9)])[None]
    big = resize_flow(flow, 17, 17)
    np.testing.assert_allclose(big[0, 0].numpy(), 0.5 * np.arange(17.0)[None].repeat(17, 0),
                               atol=1e-5)
    np.testing.assert_allclose(big[0, 1].numpy(), 2.0, atol=1e-6)


def test_metrics_against_brute_force() -> None:
    rng = np.random.default_rng(1)
    gt = rng.normal(size=(2, 6, 6)) * 3
    est = gt + rng.normal(size=(2, 6, 6)) * 2
    valid = rng.random((6, 6)) > 0.3
    m = flow_metrics(est, gt, valid)
    errs = [np.hypot(*(est[:, i, j] - gt[:, i, j])) for i in range(6) for j in range(6)
            if valid[i, j]]
    assert m["aepe"] == pytest.approx(np.mean(errs))
    for k in (1, 3, 5):
        assert m[f"pck{k}"] == pytest.approx(np.mean([e <= k for e in errs]))
    gt[:, 0, 0] = np.nan   # unknown ground truth is left out
    assert np.isfinite(flow_metrics(est, gt)["aepe"])
    with pytest.raises(ValueError):
        flow_metrics(est, gt, np.zeros((6, 6), bool))
