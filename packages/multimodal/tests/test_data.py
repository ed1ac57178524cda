"""Tests of polydiff.multimodal.data: the caption grammar parses back, the measured attributes
respond to the image changes they name, the digit splits, and the caption-folder loaders on
small fixtures laid out like Flickr, COCO and per-image-text folders."""

from __future__ import annotations

import json

import numpy as np
import pytest

from polydiff.multimodal.data import (
    ATTRIBUTE_WORDS,
    DIGIT_WORDS,
    DigitAttributes,
    caption_digit,
    load_caption_folder,
    load_captioned_digits,
    parse_caption,
    tokenize,
)


def test_captions_parse_back_to_label_and_attributes() -> None:
    rng = np.random.default_rng(0)
    mentions = np.zeros(3)
    shapes = set()
    for _ in range(2000):
        label, bins = int(rng.integers(10)), rng.integers(0, 3, 3)
        cap = caption_digit(label, bins, rng)
        got_label, got = parse_caption(cap)
        assert got_label == label, cap
        for j in range(3):
            assert got[j] in (-1, bins[j]), cap
        mentions += np.array(got) >= 0
        shapes.add(cap.split()[0])
    assert np.all(np.abs(mentions / 2000 - 0.7) < 0.05)  # mention_prob
    assert len(shapes) >= 4  # several sentence patterns
    # no attribute without bins; "an" before vowels
    assert parse_caption(caption_digit(8, None, np.random.default_rng(1)))[1] == [-1, -1, -1]
    assert "an eight" in " ".join(caption_digit(8, None, np.random.default_rng(s))
                                  for s in range(40))


def test_parse_caption_edge_cases() -> None:
    assert parse_caption("a thick seven leaning right") == (7, [2, 2, -1])
    assert parse_caption("seven or one") == (-1, [-1, -1, -1])  # two digits: unreadable
    assert parse_caption("a thin thick two")[1][0] == -2  # contradictory
    assert parse_caption("")[0] == -1
    assert tokenize("A Thick, seven!") == ["a", "thick", ",", "seven"]
    every_word = {w for ws in ATTRIBUTE_WORDS.values() for b in ws for p in b
                  for w in p.split()} | set(DIGIT_WORDS)
    assert "upright" in every_word


def _stroke(width: int = 1, shear: float = 0.0, length: int = 6) -> np.ndarray:
    """A vertical bar in an 8x8 image in [-1, 1], optionally sheared (top to the right)."""
    img = -np.ones((8, 8))
    for r in range(1, 1 + length):
        c = 3 + int(round(shear * (4 - r)))
        img[r, max(0, c):min(8, c + width)] = 1.0
    return img


def test_attributes_measure_what_they_name() -> None:
    raw = DigitAttributes.raw(np.stack([_stroke(1), _stroke(2), _stroke(1, 0.6),
                                        _stroke(1, -0.6), _stroke(1, length=3)]))
    thick, slant, size = raw.T
    assert thick[1] > thick[0]  # more ink
    assert slant[2] > 0.3 and slant[3] < -0.3 and abs(slant[0]) < 1e-9
    assert size[4] < size[0]  # a shorter stroke is smaller


def test_digit_splits_and_balanced_bins() -> None:
    s = load_captioned_digits(seed=0)
    assert (len(s.train), len(s.val), len(s.test)) == (1077, 360, 360)
    names = set(s.train.names) | set(s.val.names) | set(s.test.names)
    assert len(names) == 1797  # disjoint
    for j in range(3):  # tertiles per class on the training split
        counts = np.bincount(s.train.bins[:, j], minlength=3)
        assert counts.min() > 0.28 * len(s.train)
    assert all(len(c) == 5 for c in s.test.captions)
    lab, bins = parse_caption(s.test.captions[0][0])
    assert lab == s.test.labels[0]
    assert all(b in (-1, s.test.bins[0][j]) for j, b in enumerate(bins))
    from polydiff.multimodal.data import digit_captions

    again = digit_captions(s.test.labels, s.test.bins, 5, 2)  # seeded: split 2 of seed 0
    assert again == s.test.captions
    idx, caps = s.val.pairs()
    assert len(caps) == 5 * 360 and idx[5] == 1


# --------------------------------------------------------------------------- folders
def _png(path, value: int, size: int = 12, rgb: bool = False) -> None:
    from PIL import Image

    arr = np.full((size, size, 3) if rgb else (size, size), value, np.uint8)
    Image.fromarray(arr).save(path)


def test_flickr_layout(tmp_path) -> None:
    (tmp_path / "Images").mkdir()
    _png(tmp_path / "Images" / "a.jpg", 255, rgb=True)
    _png(tmp_path / "Images" / "b.png", 0, rgb=True)
    (tmp_path / "captions.txt").write_text(
        "image,caption\na.jpg,A dog runs.\na.jpg,\"A dog, running fast\"\nb.png,Night sky\n")
    d = load_caption_folder(tmp_path, size=4)
    assert d.images.shape == (2, 1, 4, 4) and d.names == ["a.jpg", "b.png"]
    assert d.captions[0] == ["a dog runs", "a dog , running fast"]
    assert np.allclose(d.images[0], 1.0) and np.allclose(d.images[1], -1.0)
    rgb = load_caption_folder(tmp_path, size=4, channels=3, limit=1)
    assert rgb.images.shape == (1, 3, 4, 4)


def test_coco_layout(tmp_path) -> None:
    (tmp_path / "annotations").mkdir()
    (tmp_path / "val2017").mkdir()
    _png(tmp_path / "val2017" / "000001.jpg", 128)
    _png(tmp_path / "val2017" / "000002.jpg", 200)
    ann = {"images": [{"id": 1, "file_name": "000001.jpg"}, {"id": 2, "file_name": "000002.jpg"}],
           "annotations": [{"image_id": 1, "caption": "A cat."},
                           {"image_id": 2, "caption": "Two birds"},
                           {"image_id": 1, "caption": "a grey cat"}]}
    (tmp_path / "annotations" / "captions_val2017.json").write_text(json.dumps(ann))
    d = load_caption_folder(tmp_path, size=8)
    assert d.captions == [["a cat", "a grey cat"], ["two birds"]]
    assert d.images.shape == (2, 1, 8, 8)
    with pytest.raises(ValueError, match="captions_train2017"):
        load_caption_folder(tmp_path, split="train2017")


def test_txt_layout_and_errors(tmp_path) -> None:
    _png(tmp_path / "x.png", 10)
    (tmp_path / "x.txt").write_text("first caption\n\nsecond one\n")
    _png(tmp_path / "no_caption.png", 10)
    d = load_caption_folder(tmp_path)
    assert d.captions == [["first caption", "second one"]] and d.names == ["x.png"]
    with pytest.raises(FileNotFoundError):
        load_caption_folder(tmp_path / "missing")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "captions.txt").write_text("file,text\n")
    with pytest.raises(ValueError, match="header"):
        load_caption_folder(bad)
    gone = tmp_path / "gone"
    (gone / "Images").mkdir(parents=True)
    (gone / "captions.txt").write_text("image,caption\nnot_there.png,hello\n")
    with pytest.raises(FileNotFoundError, match="missing"):
        load_caption_folder(gone)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no captions.txt"):
        load_caption_folder(empty)
