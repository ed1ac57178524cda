"""Image I/O, corruptions, the photograph splits, the Middlebury pair and flow-folder loaders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from polydiff.dense.corruptions import CORRUPTIONS, corrupt
from polydiff.dense.data import PHOTO_SPLITS, load_flow_folder, motorcycle_pair, photo_tensors
from polydiff.dense.flow import warp_image, write_flo
from polydiff.dense.images import ImageError, read_image, same_size, to_gray, write_png


def test_read_image_modes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rgb = (rng.random((6, 5, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "grey.png")
    Image.fromarray(np.dstack([rgb, np.full((6, 5), 9, np.uint8)])).save(tmp_path / "rgba.png")
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(tmp_path / "g16.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "pal.png")
    assert read_image(tmp_path / "rgb.png").shape == (6, 5, 3)
    np.testing.assert_allclose(read_image(tmp_path / "grey.png"), rgb[..., 0] / 255.0)
    np.testing.assert_allclose(read_image(tmp_path / "rgba.png"), rgb / 255.0)
    np.testing.assert_allclose(read_image(tmp_path / "g16.png"), rgb[..., 0] / 255.0,
                               atol=1e-6)
    assert read_image(tmp_path / "pal.png").shape == (6, 5, 3)
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ImageError, match="not a readable image"):
        read_image(tmp_path / "text.png")
    with pytest.raises(ImageError, match="no such file"):
        read_image(tmp_path / "none.png")


def test_gray_same_size_and_png(tmp_path: Path) -> None:
    rgb = np.random.default_rng(1).random((8, 10, 3)).astype(np.float32)
    g = to_gray(rgb)
    np.testing.assert_allclose(g, rgb @ np.array([0.299, 0.587, 0.114]), rtol=1e-5)
    b, note = same_size(g, np.zeros((4, 5), np.float32))
    assert b.shape == (8, 10) and "resized" in note
    assert same_size(g, g)[1] is None
    p = write_png(tmp_path / "x.png", rgb)
    assert read_image(p).shape == (8, 10, 3)
    assert not list(tmp_path.glob(".*tmp*"))


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_corruptions_change_images_and_grow_with_severity(kind: str) -> None:
    rng = np.random.default_rng(0)
    img = np.clip(rng.random((32, 32)) * 0.5 + 0.25, 0, 1).astype(np.float32)
    img = (img + np.roll(img, 1, 0) + np.roll(img, 1, 1)) / 3
    low = corrupt(img, kind, 1, np.random.default_rng(1))
    high = corrupt(img, kind, 5, np.random.default_rng(1))
    assert low.shape == img.shape and low.dtype == np.float32
    assert 0 <= high.min() and high.max() <= 1
    d_low, d_high = np.abs(low - img).mean(), np.abs(high - img).mean()
    assert 0 < d_low < d_high, (d_low, d_high)
    np.testing.assert_array_equal(corrupt(img, "clean"), img)
    with pytest.raises(ValueError):
        corrupt(img, "fog")
    with pytest.raises(ValueError):
        corrupt(img, kind, 6)


def test_photo_splits_are_disjoint_and_load() -> None:
    names = [n for s in PHOTO_SPLITS.values() for n in s]
    assert len(names) == len(set(names))
    photos = photo_tensors("test")
    assert len(photos) == 3 and all(p.shape[0] == 1 and min(p.shape[1:]) <= 256
                                    for p in photos)
    assert all(0 <= float(p.min()) and float(p.max()) <= 1 for p in photos)
    with pytest.raises(ValueError):
        photo_tensors("nope")


def test_motorcycle_flow_points_from_left_to_right() -> None:
    p = motorcycle_pair()
    ok = np.isfinite(p.flow).all(0)
    assert p.a.shape == (500, 741, 3) and 0.8 < ok.mean() < 1.0
    assert np.nanmax(p.flow[0]) < 0 and np.nanmax(np.abs(p.flow[1])) == 0
    a, b = to_gray(p.a), to_gray(p.b)
    warped = warp_image(b, np.nan_to_num(p.flow))
    assert np.abs(warped - a)[ok].mean() < 0.4 * np.abs(b - a)[ok].mean()


def _png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 6), value, np.uint8)).save(path)


def test_flow_folder_layouts(tmp_path: Path) -> None:
    flow = np.ones((2, 4, 6), np.float32)
    # MPI Sintel: <pass>/<scene>/frame_NNNN.png, flow/<scene>/frame_NNNN.flo
    s = tmp_path / "sintel"
    for i in (1, 2, 3):
        _png(s / "clean" / "alley_1" / f"frame_{i:04d}.png", i)
    for i in (1, 2):
        (s / "flow" / "alley_1").mkdir(parents=True, exist_ok=True)
        write_flo(s / "flow" / "alley_1" / f"frame_{i:04d}.flo", flow * i)
    pairs = load_flow_folder(s)
    assert [p.name for p in pairs] == ["alley_1/frame_0001", "alley_1/frame_0002"]
    assert pairs[1].flow[0, 0, 0] == 2 and pairs[0].a.shape == (4, 6)
    # Middlebury: other-data/<scene>/frame10.png, frame11.png; other-gt-flow/<scene>/flow10.flo
    m = tmp_path / "middlebury"
    _png(m / "other-data" / "Venus" / "frame10.png", 1)
    _png(m / "other-data" / "Venus" / "frame11.png", 2)
    unknown = flow.copy()
    unknown[:, 0, 0] = 1e10
    (m / "other-gt-flow" / "Venus").mkdir(parents=True)
    write_flo(m / "other-gt-flow" / "Venus" / "flow10.flo", unknown)
    (mp,) = load_flow_folder(m)
    assert mp.name == "Venus" and np.isnan(mp.flow[:, 0, 0]).all() and mp.flow[0, 1, 1] == 1
    with pytest.raises(ValueError, match="neither"):
        load_flow_folder(tmp_path)
