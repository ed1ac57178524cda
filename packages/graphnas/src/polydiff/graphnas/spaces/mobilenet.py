"""A MobileNetV3-style chain: the Once-for-All search space (Cai et al. 2020, "Once-for-All:
Train One Network and Specialize it for Efficient Deployment") that DiffusionNAG uses for its
transferable-NAS experiments (An et al. 2024, Sec. 4.1).

Five stages of up to four inverted-residual (MBConv) layers: 20 nodes in a chain, each one of
9 operations (kernel size 3/5/7 x expansion ratio 3/4/6, written ``k5e4``) or ``none`` (the
layer is skipped). A stage keeps its first 2, 3 or 4 layers, so ``none`` may only fill the
tail of a stage. The wiring is a fixed chain; only the node types diffuse.

String form: the stages separated by ``|``, the layers by ``,``, e.g.
``k3e4,k5e6,none,none|k3e3,k3e3,k3e3,none|...`` (5 stages x 4 layers).

Canonical form: the active layers of each stage (the chain has no other symmetry).

Exact properties: ``depth`` (active layers) and ``params``, the parameter count of the 20
searchable MBConv layers with OFA's MobileNetV3 widths (24, 40, 80, 112, 160), squeeze-and-
excitation in stages 2, 4, 5 and affine BN (1x1 expansion, depthwise kxk, SE, 1x1
projection, as in OFA's ``MBConvLayer``; the fixed stem and head are not counted).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from polydiff.core.nn.graph import GraphLayout
from polydiff.graphnas.spaces.base import InvalidArchitecture, SearchSpace

__all__ = ["MBV3_OPS", "MBV3Arch", "MobileNetV3Space"]

KERNELS = (3, 5, 7)
EXPANDS = (3, 4, 6)
MBV3_OPS = tuple(f"k{k}e{e}" for k in KERNELS for e in EXPANDS)
NODE_TYPES = MBV3_OPS + ("none",)
STAGES, LAYERS = 5, 4
WIDTHS = (24, 40, 80, 112, 160)
USE_SE = (False, True, False, True, True)
STEM_OUT = 16
MIN_DEPTH = 2


@dataclass(frozen=True)
class MBV3Arch:
    """20 layer types (stage-major), each an operation of :data:`MBV3_OPS` or ``none``."""

    layers: tuple[str, ...]


def _divisible(v: float, divisor: int = 8) -> int:
    """MobileNet's channel rounding (``make_divisible``, Sandler et al. 2018)."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def mbconv_params(c_in: int, c_out: int, kernel: int, expand: int, se: bool) -> int:
    """Parameters of one MBConv layer (expansion, depthwise, optional SE, projection)."""
    mid = _divisible(c_in * expand)
    total = c_in * mid + 2 * mid + kernel * kernel * mid + 2 * mid
    if se:
        r = _divisible(mid // 4)
        total += mid * r + r + r * mid + mid
    return total + mid * c_out + 2 * c_out


class MobileNetV3Space(SearchSpace[MBV3Arch]):
    """The MobileNetV3 chain (module docstring)."""

    name = "mbv3"
    node_types = NODE_TYPES
    n_nodes = STAGES * LAYERS

    def layout(self) -> GraphLayout:
        return GraphLayout(self.n_nodes, self.n_types, (), self._chain())

    def _chain(self) -> Tensor:
        a = torch.zeros(self.n_nodes, self.n_nodes)
        idx = torch.arange(self.n_nodes - 1)
        a[idx, idx + 1] = 1.0
        return a

    def graph(self, arch: MBV3Arch) -> tuple[list[str], Tensor]:
        return list(arch.layers), self._chain()

    def from_graph(self, types: Sequence[str], adj: Tensor) -> MBV3Arch:
        if len(types) != self.n_nodes:
            raise InvalidArchitecture(f"mbv3: expected {self.n_nodes} layers, got {len(types)}")
        if not torch.equal(torch.as_tensor(adj, dtype=torch.float32), self._chain()):
            raise InvalidArchitecture("mbv3: the wiring is a fixed chain")
        return MBV3Arch(tuple(types))

    # ------------------------------------------------------------------ strings
    def parse(self, text: str) -> MBV3Arch:
        stages = text.strip().split("|")
        if len(stages) != STAGES:
            raise InvalidArchitecture(f"mbv3: need {STAGES} stages separated by '|', got "
                                      f"{len(stages)}")
        layers: list[str] = []
        for s, stage in enumerate(stages, start=1):
            items = [v.strip() for v in stage.split(",")]
            if len(items) != LAYERS:
                raise InvalidArchitecture(f"mbv3: stage {s} needs {LAYERS} layers (pad with "
                                          f"'none'), got {len(items)}")
            layers += items
        return self.validate(MBV3Arch(tuple(layers)))

    def format(self, arch: MBV3Arch) -> str:
        return "|".join(",".join(arch.layers[s * LAYERS:(s + 1) * LAYERS])
                        for s in range(STAGES))

    # ------------------------------------------------------------------ rules
    def validate(self, arch: MBV3Arch) -> MBV3Arch:
        if len(arch.layers) != self.n_nodes:
            raise InvalidArchitecture(f"mbv3: need {self.n_nodes} layers, got "
                                      f"{len(arch.layers)}")
        bad = [v for v in arch.layers if v not in NODE_TYPES]
        if bad:
            raise InvalidArchitecture(f"mbv3: unknown operation {bad[0]!r}; expected k3e3 ... "
                                      "k7e6 or none")
        for s in range(STAGES):
            stage = arch.layers[s * LAYERS:(s + 1) * LAYERS]
            depth = sum(v != "none" for v in stage)
            if any(v == "none" for v in stage[:depth]):
                raise InvalidArchitecture(f"mbv3: stage {s + 1} skips a layer before an active "
                                          "one ('none' may only end a stage)")
            if depth < MIN_DEPTH:
                raise InvalidArchitecture(f"mbv3: stage {s + 1} needs at least {MIN_DEPTH} "
                                          "layers")
        return arch

    def canonical(self, arch: MBV3Arch) -> str:
        self.validate(arch)
        return "mbv3:" + "|".join(
            ",".join(v for v in arch.layers[s * LAYERS:(s + 1) * LAYERS] if v != "none")
            for s in range(STAGES))

    def random(self, rng: random.Random) -> MBV3Arch:
        layers: list[str] = []
        for _ in range(STAGES):
            d = rng.randint(MIN_DEPTH, LAYERS)
            layers += [rng.choice(MBV3_OPS) for _ in range(d)] + ["none"] * (LAYERS - d)
        return MBV3Arch(tuple(layers))

    def properties(self, arch: MBV3Arch) -> dict[str, float]:
        self.validate(arch)
        params, c_in = 0, STEM_OUT
        for s in range(STAGES):
            for v in arch.layers[s * LAYERS:(s + 1) * LAYERS]:
                if v == "none":
                    continue
                k, e = int(v[1]), int(v[3])
                params += mbconv_params(c_in, WIDTHS[s], k, e, USE_SE[s])
                c_in = WIDTHS[s]
        return {"params": float(params),
                "depth": float(sum(v != "none" for v in arch.layers))}
