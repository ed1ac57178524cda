"""Paired image-caption data: scikit-learn's digits with generated captions, and loaders for
real image-caption folders.

**Captioned digits.** The 1,797 real 8x8 handwritten digits of
:func:`sklearn.datasets.load_digits` (offline). Each digit gets three measured attributes,
binned into tertiles *within its class* on the training split (so they are independent of the
label and balanced):

* thickness: total ink (sum of intensities) -> ``thin`` / ``medium`` / ``thick``;
* slant: ``-mu11 / mu02`` from the central image moments (horizontal shift per row going up)
  -> ``leaning left`` / ``upright`` / ``leaning right``;
* size: radius of gyration of the ink about its centroid -> ``small`` / ``mid-sized`` /
  ``large``.

Captions come from a small grammar (several templates and synonyms; each attribute is
mentioned with probability ``mention_prob``), so one image has many captions and one caption
("a thick seven") fits many images: text and image relate many-to-many. :func:`parse_caption`
reads a caption back into (label, attribute bins) for scoring generated text.

**Real folders** (:func:`load_caption_folder`), the standard public layouts:

* Flickr8k/Flickr30k (Kaggle release): ``captions.txt`` (CSV with header ``image,caption``,
  several rows per image) beside ``Images/`` (or ``images/``);
* COCO captions: ``annotations/captions_<split>.json`` (``images`` with ``id``/``file_name``,
  ``annotations`` with ``image_id``/``caption``) beside ``<split>/`` holding the images;
* a plain folder of images with a same-named ``.txt`` caption file each (one caption per
  line), the layout of many web-scraped sets.

Images are converted to grayscale or RGB, resized to a square side and scaled to ``[-1, 1]``.
"""

from __future__ import annotations

import csv
import functools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "ATTRIBUTES", "DIGIT_WORDS", "CaptionedImages", "DigitAttributes", "caption_digit",
    "digit_captions", "load_caption_folder", "load_captioned_digits", "measure_attributes",
    "parse_caption", "read_image", "tokenize", "CAPTION_LAYOUTS", "N_TEMPLATES", "DigitSplits",
]

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ATTRIBUTES = ("thickness", "slant", "size")
#: words that say each bin of each attribute (the first is the canonical one)
ATTRIBUTE_WORDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "thickness": (("thin", "light", "faint"), ("medium", "regular"),
                  ("thick", "bold", "heavy")),
    "slant": (("leaning left", "slanted left", "tilted left"), ("upright", "straight"),
              ("leaning right", "slanted right", "tilted right")),
    "size": (("small", "compact", "tiny"), ("mid-sized", "average-sized"),
             ("large", "big", "wide")),
}
CAPTION_LAYOUTS = ("flickr", "coco", "txt")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def tokenize(text: str) -> list[str]:
    """Lower-case words (letters, digits, inner hyphens/apostrophes) and commas."""
    return re.findall(r"[a-z0-9]+(?:['-][a-z0-9]+)*|,", text.lower())


# --------------------------------------------------------------------------- attributes
@dataclass
class DigitAttributes:
    """Per-class tertile thresholds of the three attributes (fitted on training digits)."""

    thresholds: dict[str, list[list[float]]]  # attribute -> per class [lo, hi]

    @staticmethod
    def raw(images: np.ndarray) -> np.ndarray:
        """``(N, 3)`` raw (thickness, slant, size) of ``(N, 8, 8)`` (or ``(N, 1, H, W)``)
        images in ``[-1, 1]``."""
        x = np.asarray(images, dtype=np.float64)
        x = x.reshape(x.shape[0], x.shape[-2], x.shape[-1])
        ink = np.clip((x + 1.0) / 2.0, 0.0, None)  # 0 = background
        h, w = ink.shape[1:]
        yy, xx = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64),
                             indexing="ij")
        mass = ink.sum((1, 2))
        m = np.maximum(mass, 1e-8)
        cy = (ink * yy).sum((1, 2)) / m
        cx = (ink * xx).sum((1, 2)) / m
        dy, dx = yy[None] - cy[:, None, None], xx[None] - cx[:, None, None]
        mu02 = np.maximum((ink * dy * dy).sum((1, 2)) / m, 1e-8)
        mu11 = (ink * dy * dx).sum((1, 2)) / m
        mu20 = (ink * dx * dx).sum((1, 2)) / m
        slant = -mu11 / mu02  # rows grow downwards: top to the right = positive
        size = np.sqrt(mu02 + mu20)
        return np.stack([mass * 64.0 / (h * w), slant, size], axis=1)

    @classmethod
    def fit(cls, images: np.ndarray, labels: np.ndarray) -> DigitAttributes:
        raw = cls.raw(images)
        labels = np.asarray(labels)
        thr: dict[str, list[list[float]]] = {}
        for j, name in enumerate(ATTRIBUTES):
            thr[name] = []
            for c in range(10):
                v = raw[labels == c, j]
                if v.size < 3:
                    raise ValueError(f"class {c} has too few images to fit attribute bins")
                thr[name].append([float(q) for q in np.quantile(v, [1 / 3, 2 / 3])])
        return cls(thr)

    def bins(self, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """``(N, 3)`` bins in ``{0, 1, 2}`` of (thickness, slant, size), relative to the
        given classes (the intended or the classifier's label)."""
        raw = self.raw(images)
        labels = np.asarray(labels, dtype=np.int64)
        out = np.zeros(raw.shape, dtype=np.int64)
        for j, name in enumerate(ATTRIBUTES):
            thr = np.asarray(self.thresholds[name])[labels]  # (N, 2)
            out[:, j] = (raw[:, j] > thr[:, 0]).astype(np.int64) + (raw[:, j] > thr[:, 1])
        return out

    def to_dict(self) -> dict:
        return {"thresholds": self.thresholds}

    @classmethod
    def from_dict(cls, d: dict) -> DigitAttributes:
        return cls({k: [list(map(float, v)) for v in vs] for k, vs in d["thresholds"].items()})


def measure_attributes(images: np.ndarray, labels: np.ndarray,
                       attrs: DigitAttributes) -> np.ndarray:
    """Shorthand for ``attrs.bins(images, labels)``."""
    return attrs.bins(images, labels)


# --------------------------------------------------------------------------- captions
def _and(items: list[str]) -> str:
    """``a``, ``a and b``, ``a , b and c``."""
    return items[0] if len(items) == 1 else " , ".join(items[:-1]) + " and " + items[-1]


def _template(k: int, digit: str, th: str, sl: str, sz: str) -> str:
    adjs = [w for w in (th, sz) if w]
    attrs = [w for w in (th, sz, sl) if w]
    if k == 0:
        return " ".join(["a", *adjs, digit] + ([sl] if sl else []))
    if k == 1:
        return digit + (" , " + _and(attrs) if attrs else "")
    if k == 2:
        return f"a handwritten {digit}" + (" that is " + _and(attrs) if attrs else "")
    if k == 3:
        parts = [f"the digit {digit}" + (f" {sl}" if sl else "")]
        parts += [sz] if sz else []
        parts += [f"{th} strokes"] if th else []
        return " , ".join(parts)
    return " ".join([*adjs[::-1], digit] + ([f"written {sl}"] if sl else []))


N_TEMPLATES = 5


def caption_digit(label: int, bins: Sequence[int] | np.ndarray | None, rng: np.random.Generator, *,
                  mention_prob: float = 0.7) -> str:
    """One caption of a digit with attribute ``bins`` (``-1`` or ``None``: unknown, never
    mentioned); each known attribute is mentioned with probability ``mention_prob``, in one
    of :data:`N_TEMPLATES` sentence patterns with synonyms."""
    k = int(rng.integers(N_TEMPLATES))
    words = []
    for j, name in enumerate(ATTRIBUTES):
        b = -1 if bins is None else int(bins[j])
        if b >= 0 and rng.random() < mention_prob:
            options = ATTRIBUTE_WORDS[name][b]
            words.append(options[int(rng.integers(len(options)))])
        else:
            words.append("")
    text = _template(k, DIGIT_WORDS[int(label)], *words)
    toks = text.split()
    for i in range(len(toks) - 1):  # a/an by the next word's sound
        if toks[i] in ("a", "an"):
            toks[i] = "an" if toks[i + 1][0] in "aeiou" else "a"
    return " ".join(toks)


def digit_captions(labels: np.ndarray, bins: np.ndarray, per_image: int, seed: int, *,
                   mention_prob: float = 0.7) -> list[list[str]]:
    """``per_image`` captions for each image (seeded)."""
    rng = np.random.default_rng(seed)
    return [[caption_digit(int(lab), b, rng, mention_prob=mention_prob)
             for _ in range(per_image)] for lab, b in zip(labels, bins)]


def parse_caption(text: str) -> tuple[int, list[int]]:
    """``(label, [thickness, slant, size])`` read from a caption: ``label`` is -1 unless
    exactly one digit word occurs; an attribute is -1 when not mentioned, and -2 when the
    caption names two different bins of it."""
    toks = tokenize(text)
    digits = {DIGIT_WORDS.index(t) for t in toks if t in DIGIT_WORDS}
    label = digits.pop() if len(digits) == 1 else -1
    found: list[int] = []
    for name in ATTRIBUTES:
        seen = set()
        for b, options in enumerate(ATTRIBUTE_WORDS[name]):
            for phrase in options:
                words = phrase.split()
                n = len(words)
                if any(toks[i:i + n] == words for i in range(len(toks) - n + 1)):
                    seen.add(b)
        found.append(seen.pop() if len(seen) == 1 else (-1 if not seen else -2))
    return label, found


# --------------------------------------------------------------------------- datasets
@dataclass
class CaptionedImages:
    """Images ``(N, C, H, W)`` float32 in ``[-1, 1]`` with their captions (a list per image);
    ``labels``/``bins`` are known for the digits (else ``None``)."""

    images: np.ndarray
    captions: list[list[str]]
    labels: np.ndarray | None = None
    bins: np.ndarray | None = None
    names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W), got {self.images.shape}")
        if len(self.captions) != len(self.images):
            raise ValueError("one caption list per image is needed")
        if any(not c for c in self.captions):
            raise ValueError("every image needs at least one caption")

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, idx: np.ndarray) -> CaptionedImages:
        idx = np.asarray(idx)
        return CaptionedImages(self.images[idx], [self.captions[i] for i in idx],
                               None if self.labels is None else self.labels[idx],
                               None if self.bins is None else self.bins[idx],
                               [self.names[i] for i in idx] if self.names else [])

    def pairs(self) -> tuple[np.ndarray, list[str]]:
        """``(image_index, caption)`` for every caption."""
        idx = np.array([i for i, cs in enumerate(self.captions) for _ in cs], dtype=np.int64)
        return idx, [c for cs in self.captions for c in cs]


@dataclass
class DigitSplits:
    """The captioned digits split into train / val / test, with the attribute bins."""

    train: CaptionedImages
    val: CaptionedImages
    test: CaptionedImages
    attributes: DigitAttributes


def load_captioned_digits(*, seed: int = 0, val: float = 0.2, test: float = 0.2,
                          captions_per_image: int = 5, mention_prob: float = 0.7
                          ) -> DigitSplits:
    """scikit-learn's digits, split stratified by class (``seed``), with attribute bins fitted
    on the training split and ``captions_per_image`` seeded captions per digit. Cached per
    process: callers share the arrays (treat them as read-only)."""
    return _captioned_digits(int(seed), float(val), float(test), int(captions_per_image),
                             float(mention_prob))


@functools.lru_cache(maxsize=4)
def _captioned_digits(seed: int, val: float, test: float, captions_per_image: int,
                      mention_prob: float) -> DigitSplits:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images.astype(np.float32) / 8.0 - 1.0)[:, None]
    y = d.target.astype(np.int64)
    idx = np.arange(len(y))
    rest, te = train_test_split(idx, test_size=test, random_state=seed, stratify=y)
    tr, va = train_test_split(rest, test_size=val / (1 - test), random_state=seed,
                              stratify=y[rest])
    attrs = DigitAttributes.fit(x[tr], y[tr])
    out = []
    for k, part in enumerate((tr, va, te)):
        bins = attrs.bins(x[part], y[part])
        caps = digit_captions(y[part], bins, captions_per_image, seed * 1000 + k,
                              mention_prob=mention_prob)
        out.append(CaptionedImages(x[part], caps, y[part], bins,
                                   [f"digit-{i}" for i in part]))
    return DigitSplits(out[0], out[1], out[2], attributes=attrs)


# --------------------------------------------------------------------------- folders
def read_image(path: Path, size: int, channels: int) -> np.ndarray:
    """The image at ``path`` as a ``(channels, size, size)`` float array in ``[-1, 1]``
    (grey for one channel, else RGB; bicubic resize); an unreadable file is a one-line
    ``ValueError``."""
    from PIL import Image

    try:
        with Image.open(path) as f:
            im = f.convert("L" if channels == 1 else "RGB")
            im = im.resize((size, size), Image.Resampling.BICUBIC)
            arr = np.asarray(im, dtype=np.float32) / 127.5 - 1.0
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read image '{path}': {exc}") from None
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


def _detect(root: Path) -> str:
    if (root / "captions.txt").is_file():
        return "flickr"
    if (root / "annotations").is_dir() and any((root / "annotations").glob("captions_*.json")):
        return "coco"
    if any(p.suffix.lower() == ".txt" for p in root.iterdir()):
        return "txt"
    raise ValueError(f"'{root}' has no captions.txt (Flickr), annotations/captions_*.json "
                     "(COCO) or per-image .txt captions")


def _flickr(root: Path) -> dict[str, list[str]]:
    img_dir = next((root / d for d in ("Images", "images", "Flicker8k_Dataset")
                    if (root / d).is_dir()), root)
    caps: dict[str, list[str]] = {}
    with (root / "captions.txt").open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip().lower() for h in header[:2]] != ["image", "caption"]:
            raise ValueError(f"'{root / 'captions.txt'}' must start with the header "
                             "'image,caption'")
        for row in reader:
            if len(row) < 2:
                continue
            caps.setdefault(str(img_dir / row[0].strip()), []).append(",".join(row[1:]).strip())
    return caps


def _coco(root: Path, split: str | None) -> dict[str, list[str]]:
    files = sorted((root / "annotations").glob("captions_*.json"))
    if split is not None:
        files = [f for f in files if f.stem == f"captions_{split}"]
        if not files:
            raise ValueError(f"no annotations/captions_{split}.json in '{root}'")
    caps: dict[str, list[str]] = {}
    for f in files:
        name = f.stem.removeprefix("captions_")
        data = json.loads(f.read_text(encoding="utf-8"))
        try:
            names = {int(im["id"]): im["file_name"] for im in data["images"]}
            for a in data["annotations"]:
                path = root / name / names[int(a["image_id"])]
                caps.setdefault(str(path), []).append(str(a["caption"]).strip())
        except (KeyError, TypeError) as exc:
            raise ValueError(f"'{f}' is not a COCO captions file ({exc!r} missing)") from None
    return caps


def _txt(root: Path) -> dict[str, list[str]]:
    caps: dict[str, list[str]] = {}
    for p in sorted(root.iterdir()):
        if p.suffix.lower() in _IMAGE_SUFFIXES and p.with_suffix(".txt").is_file():
            lines = [s.strip() for s in p.with_suffix(".txt").read_text(
                encoding="utf-8").splitlines() if s.strip()]
            if lines:
                caps[str(p)] = lines
    return caps


def load_caption_folder(root: str | Path, *, size: int = 8, channels: int = 1,
                        layout: str | None = None, split: str | None = None,
                        limit: int | None = None) -> CaptionedImages:
    """Read an image-caption folder (Flickr ``captions.txt``, COCO ``annotations/``, or
    per-image ``.txt``; ``layout=None`` detects it) into :class:`CaptionedImages` of
    ``(N, channels, size, size)`` images in ``[-1, 1]``; ``limit`` keeps the first images
    (sorted by file name). Images that are listed but missing are an error."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"caption folder '{root}' does not exist")
    if channels not in (1, 3) or size < 2:
        raise ValueError("channels must be 1 or 3 and size >= 2")
    layout = layout or _detect(root)
    if layout not in CAPTION_LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {CAPTION_LAYOUTS}")
    caps = _flickr(root) if layout == "flickr" else _coco(root, split) if layout == "coco" \
        else _txt(root)
    names = sorted(caps)[:limit] if limit else sorted(caps)
    if not names:
        raise ValueError(f"no captioned images found in '{root}'")
    missing = [n for n in names if not Path(n).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} captioned image(s) missing, e.g. '{missing[0]}'")
    images = np.stack([read_image(Path(n), size, channels) for n in names])
    captions = [[" ".join(tokenize(c)) for c in caps[n] if tokenize(c)] for n in names]
    keep = [i for i, c in enumerate(captions) if c]
    return CaptionedImages(images[keep], [captions[i] for i in keep],
                           names=[Path(names[i]).name for i in keep])
