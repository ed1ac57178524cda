"""Search spaces: the NAS-Bench-201 cell, the NAS-Bench-Graph space and a MobileNetV3 chain.

``get_space(name)`` returns one by name (``nb201``, ``nbgraph``, ``mbv3``).
"""

from __future__ import annotations

from polydiff.graphnas.spaces.base import InvalidArchitecture, SearchSpace
from polydiff.graphnas.spaces.mobilenet import MBV3_OPS, MBV3Arch, MobileNetV3Space
from polydiff.graphnas.spaces.nb201 import NB201_OPS, NB201Cell, NB201Space
from polydiff.graphnas.spaces.nbgraph import NBG_OPS, PROTEINS_OPS, GraphArch, NBGraphSpace

__all__ = [
    "SearchSpace", "InvalidArchitecture", "NB201Space", "NB201Cell", "NB201_OPS",
    "NBGraphSpace", "GraphArch", "NBG_OPS", "PROTEINS_OPS", "MobileNetV3Space", "MBV3Arch",
    "MBV3_OPS", "SPACES", "get_space",
]

SPACES: dict[str, type[SearchSpace]] = {
    "nb201": NB201Space, "nbgraph": NBGraphSpace, "mbv3": MobileNetV3Space,
}


def get_space(name: str) -> SearchSpace:
    """The search space called ``name``; ``ValueError`` (one line) for an unknown name."""
    try:
        return SPACES[name]()
    except KeyError:
        raise ValueError(f"unknown search space {name!r}; expected one of "
                         f"{', '.join(SPACES)}") from None
