"""Procedurally rendered RGB-D scenes with exact depth and surface normals.

A pinhole camera at the origin (x right, y up, looking along +z, tilted down by a random
pitch) ray-casts a floor plane, a back wall (random distance and yaw), and one to four
objects resting on the floor: spheres, yawed boxes and upright cylinders (with caps). Every
surface is textured with a photograph (looked up by its surface coordinates: floor ``(x,
z)``, wall ``(along, y)``, sphere arc lengths, box face coordinates, cylinder arc and
height), mirrored-tiled, tinted with a random colour, and shaded Lambertian by one
directional light plus ambient light. Per pixel the renderer returns the image, the depth
(distance along the optical axis) and the unit normal in camera coordinates (x right,
y up, z towards the camera, so visible surfaces have ``n_z > 0``).

Everything is numpy, vectorised over pixels, and a function of the scene's seed.
:func:`render_split` draws the splits by texture photograph: ``train`` scenes use the
training photographs (:data:`polydiff.dense.data.PHOTO_SPLITS`), ``val`` scenes the same
photographs with seeds no training scene uses, ``test`` scenes the held-out test
photographs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from polydiff.dense.data import photo_tensors

__all__ = ["Scene", "render_scene", "render_split", "render_batch", "SPLIT_SEEDS",
           "split_textures"]

#: Seed offsets of the rendered splits: training scenes draw their seeds below 2**40, the
#: validation and test scenes sit above it, so no seed is shared.
SPLIT_SEEDS: dict[str, int] = {"train": 0, "val": 2**40, "test": 2**41}
_EPS = 1e-4
_FAR = 1e9


@dataclass
class Scene:
    """One rendered view: ``image`` ``(H, W, 3)`` in [0, 1], ``depth`` ``(H, W)`` (> 0, scene
    units along the optical axis), ``normal`` ``(H, W, 3)`` unit vectors (camera frame) and
    the focal length in pixels (principal point at the image centre)."""

    image: np.ndarray
    depth: np.ndarray
    normal: np.ndarray
    focal: float = 0.0


def split_textures(split: str) -> list[np.ndarray]:
    """The texture photographs of a rendered split (``val`` shares ``train``'s)."""
    if split not in SPLIT_SEEDS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLIT_SEEDS)}")
    source = "test" if split == "test" else "train"
    return [t[0].numpy() for t in photo_tensors(source)]


def _rot_x(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _rot_y(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


class _Hits:
    """Per-primitive hit distances, normals and texture coordinates (filled lazily)."""

    def __init__(self, n: int):
        self.t: list[np.ndarray] = []
        self.normal: list[np.ndarray] = []
        self.uv: list[np.ndarray] = []
        self.n = n

    def add(self, t: np.ndarray, normal: np.ndarray, uv: np.ndarray) -> None:
        self.t.append(np.where(np.isfinite(t) & (t > _EPS), t, _FAR))
        self.normal.append(normal)
        self.uv.append(uv)


def _plane(hits: _Hits, d: np.ndarray, n: np.ndarray, c: float, axes: np.ndarray) -> None:
    """The plane ``n . x = c`` (``n`` facing the camera); ``axes`` (2, 3) span its texture."""
    dn = d @ n
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(dn < -1e-6, c / dn, np.inf)
    p = d * t[:, None]
    hits.add(t, np.broadcast_to(n, d.shape), np.where(np.isfinite(p), p, 0.0) @ axes.T)


def _sphere(hits: _Hits, d: np.ndarray, centre: np.ndarray, r: float) -> None:
    a = (d * d).sum(1)
    b = -2 * (d @ centre)
    c = centre @ centre - r * r
    disc = b * b - 4 * a * c
    with np.errstate(invalid="ignore"):
        t = np.where(disc >= 0, (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a), np.inf)
    n = (d * np.where(np.isfinite(t), t, 0)[:, None] - centre) / r
    uv = np.stack([np.arctan2(n[:, 0], -n[:, 2]) * r, np.arcsin(np.clip(n[:, 1], -1, 1)) * r], 1)
    hits.add(t, n, uv)


def _box(hits: _Hits, d: np.ndarray, centre: np.ndarray, half: np.ndarray, yaw: float) -> None:
    rot = _rot_y(yaw)
    o = -centre @ rot          # ray origin in the box frame (rows @ rot = R^T applied)
    dl = d @ rot
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (-half - o) / dl
        t2 = (half - o) / dl
    lo, hi = np.minimum(t1, t2), np.maximum(t1, t2)
    lo = np.where(np.isnan(lo), -np.inf, lo)
    hi = np.where(np.isnan(hi), np.inf, hi)
    tmin, tmax = lo.max(1), hi.min(1)
    t = np.where((tmax >= tmin) & (tmin > _EPS), tmin, np.inf)
    axis = lo.argmax(1)
    rows = np.arange(len(d))
    nl = np.zeros_like(d)
    nl[rows, axis] = -np.sign(dl[rows, axis])
    p = o + dl * np.where(np.isfinite(t), t, 0)[:, None]
    other = np.array([[1, 2], [0, 2], [0, 1]])[axis]
    uv = np.stack([p[rows, other[:, 0]], p[rows, other[:, 1]]], 1)
    hits.add(t, nl @ rot.T, uv)


def _cylinder(hits: _Hits, d: np.ndarray, base: np.ndarray, r: float, height: float) -> None:
    """An upright cylinder from ``base`` (centre of the bottom) up by ``height``, top cap."""
    ox, oz = -base[0], -base[2]
    a = d[:, 0] ** 2 + d[:, 2] ** 2
    b = 2 * (ox * d[:, 0] + oz * d[:, 2])
    c = ox * ox + oz * oz - r * r
    disc = b * b - 4 * a * c
    with np.errstate(invalid="ignore", divide="ignore"):
        ts = np.where(disc >= 0, (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a), np.inf)
        y = d[:, 1] * np.where(np.isfinite(ts), ts, 0) - base[1]
        ts = np.where((y >= 0) & (y <= height), ts, np.inf)
        tc = np.where(d[:, 1] < -1e-6, (base[1] + height) / d[:, 1], np.inf)
    pc = d * np.where(np.isfinite(tc), tc, 0)[:, None]
    in_cap = (pc[:, 0] - base[0]) ** 2 + (pc[:, 2] - base[2]) ** 2 <= r * r
    tc = np.where(in_cap, tc, np.inf)
    side = ts <= tc
    t = np.minimum(ts, tc)
    p = d * np.where(np.isfinite(t), t, 0)[:, None] - base
    ns = np.stack([p[:, 0] / r, np.zeros(len(d)), p[:, 2] / r], 1)
    n = np.where(side[:, None], ns, np.array([0.0, 1.0, 0.0]))
    uv_side = np.stack([np.arctan2(p[:, 0], -p[:, 2]) * r, p[:, 1]], 1)
    uv = np.where(side[:, None], uv_side, p[:, [0, 2]])
    hits.add(t, n, uv)


def _texture(tex: np.ndarray, uv: np.ndarray, scale: float, offset: np.ndarray) -> np.ndarray:
    """Bilinear lookup of a mirrored-tiled texture at surface coordinates ``uv`` (units)."""
    h, w = tex.shape
    x = uv[:, 0] * scale + offset[0]
    y = -uv[:, 1] * scale + offset[1]

    def mirror(i: np.ndarray, n: int) -> np.ndarray:
        m = np.mod(i, 2 * n)
        return np.where(m < n, m, 2 * n - 1 - m)

    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = x - x0, y - y0
    x0i, y0i = x0.astype(np.int64), y0.astype(np.int64)
    xa, xb = mirror(x0i, w), mirror(x0i + 1, w)
    ya, yb = mirror(y0i, h), mirror(y0i + 1, h)
    top = tex[ya, xa] * (1 - fx) + tex[ya, xb] * fx
    bot = tex[yb, xa] * (1 - fx) + tex[yb, xb] * fx
    out: np.ndarray = top * (1 - fy) + bot * fy
    return out


def _tint(rng: np.random.Generator) -> np.ndarray:
    """A random colour (HSV with moderate saturation) to multiply a grey texture by."""
    h, s, v = rng.uniform(0, 1), rng.uniform(0.1, 0.7), rng.uniform(0.75, 1.0)
    k = (np.array([5.0, 3.0, 1.0]) + h * 6) % 6
    return v - v * s * np.clip(np.minimum(k, 4 - k), 0, 1)


def _place_objects(rng: np.random.Generator, hits: _Hits, d: np.ndarray, floor: float,
                   wall: float) -> None:
    for _ in range(int(rng.integers(1, 5))):
        kind = rng.choice(["sphere", "box", "cylinder"], p=[0.4, 0.4, 0.2])
        z = rng.uniform(2.2, wall - 0.8)
        x = rng.uniform(-0.45, 0.45) * z
        if kind == "sphere":
            r = rng.uniform(0.3, 0.9)
            _sphere(hits, d, np.array([x, floor + r, z]), r)
        elif kind == "box":
            half = rng.uniform(0.25, 0.8, size=3)
            _box(hits, d, np.array([x, floor + half[1], z]), half, rng.uniform(0, math.pi / 2))
        else:
            _cylinder(hits, d, np.array([x, floor, z]), rng.uniform(0.25, 0.6),
                      rng.uniform(0.5, 1.8))


def render_scene(seed: int, size: int | tuple[int, int], textures: list[np.ndarray]
                 ) -> Scene:
    """Render the scene of ``seed`` at ``size`` (``S`` or ``(H, W)``) with ``textures`` (grey
    photographs, ``(h, w)`` float arrays)."""
    h, w = (size, size) if isinstance(size, int) else size
    if not textures:
        raise ValueError("render_scene needs at least one texture")
    rng = np.random.default_rng(int(seed))
    fov = math.radians(rng.uniform(45, 65))
    f = 0.5 * w / math.tan(fov / 2)
    v, u = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    cam = np.stack([(u - w / 2) / f, -(v - h / 2) / f, np.ones_like(u)], -1).reshape(-1, 3)
    pitch = rng.uniform(0.0, 0.35)        # camera looks down by this much
    to_world = _rot_x(pitch)
    d = cam @ to_world.T                  # world directions (camera z component = 1)

    floor = -rng.uniform(0.8, 1.6)
    wall = rng.uniform(5.0, 9.0)
    hits = _Hits(len(d))
    _plane(hits, d, np.array([0.0, 1.0, 0.0]), floor, np.array([[1.0, 0, 0], [0, 0, 1.0]]))
    yaw = rng.uniform(-0.45, 0.45)
    wn = _rot_y(yaw) @ np.array([0.0, 0.0, -1.0])
    _plane(hits, d, wn, float(wn @ np.array([0.0, 0.0, wall])),
           np.array([_rot_y(yaw) @ np.array([1.0, 0, 0]), [0, 1.0, 0]]))
    _place_objects(rng, hits, d, floor, wall)

    t = np.stack(hits.t)                  # (P, N)
    which = t.argmin(0)
    tmin = t.min(0)
    if not np.all(tmin < _FAR):           # a ray that misses the wall (cannot happen with
        tmin = np.where(tmin < _FAR, tmin, wall)  # these ranges; kept finite regardless)
    normal = np.zeros_like(d)
    albedo = np.zeros_like(d)
    for k in range(len(hits.t)):
        sel = which == k
        if not sel.any():
            continue
        n = np.asarray(hits.normal[k])[sel]
        normal[sel] = n / np.linalg.norm(n, axis=1, keepdims=True)
        tex = textures[int(rng.integers(len(textures)))]
        scale = rng.uniform(25, 90) * w / 64
        offset = rng.uniform(0, 1000, size=2)
        grey = _texture(tex, hits.uv[k][sel], scale, offset)
        contrast = rng.uniform(0.6, 1.0)
        albedo[sel] = (0.5 + (grey[:, None] - 0.5) * contrast) * _tint(rng)
    light = np.array([rng.uniform(-0.7, 0.7), rng.uniform(0.4, 1.0), -rng.uniform(0.3, 1.0)])
    light /= np.linalg.norm(light)
    ambient = rng.uniform(0.35, 0.5)
    shade = ambient + (1 - ambient) * 1.2 * np.clip(normal @ light, 0, None)
    image = np.clip(albedo * shade[:, None], 0, 1)
    n_cam = normal @ to_world             # world -> camera (orthonormal: R^T)
    n_cam = n_cam * np.array([1.0, 1.0, -1.0])   # z towards the camera
    return Scene(image.reshape(h, w, 3).astype(np.float32),
                 tmin.reshape(h, w).astype(np.float32),
                 n_cam.reshape(h, w, 3).astype(np.float32), float(f))


def render_split(split: str, count: int, size: int = 64, *, start: int = 0) -> list[Scene]:
    """Scenes ``start .. start + count - 1`` of a held-out split (``val`` or ``test``; or
    ``train``), each a function of its index."""
    textures = split_textures(split)
    return [render_scene(SPLIT_SEEDS[split] + start + i, size, textures)
            for i in range(count)]


def render_batch(scenes: list[Scene]) -> dict[str, torch.Tensor]:
    """Stack scenes into ``image`` ``(B, 3, H, W)``, ``depth`` ``(B, 1, H, W)`` and
    ``normal`` ``(B, 3, H, W)`` tensors."""
    return {
        "image": torch.from_numpy(np.stack([s.image for s in scenes])).permute(0, 3, 1, 2),
        "depth": torch.from_numpy(np.stack([s.depth for s in scenes]))[:, None],
        "normal": torch.from_numpy(np.stack([s.normal for s in scenes])).permute(0, 3, 1, 2),
    }
