"""Generation metrics on sets of architectures: validity, uniqueness and novelty.

* validity: the share of generated graphs that obey the space's rules (``None`` entries, as
  :meth:`~polydiff.graphnas.spaces.SearchSpace.from_state` returns for invalid graphs, and
  architectures that fail :meth:`~polydiff.graphnas.spaces.SearchSpace.validate`);
* uniqueness: distinct canonical forms among the valid ones, over the valid count
  (isomorphic architectures count once);
* novelty: valid distinct architectures whose canonical form is not in the training set,
  over the distinct valid count.

These are the definitions of the graph-generation literature used by DiffusionNAG (An et al.
2024, Table 6) and the molecule generators it follows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from polydiff.graphnas.spaces.base import SearchSpace

__all__ = ["generation_metrics", "unique_archs"]


def unique_archs(space: SearchSpace, archs: Iterable[Any]) -> list[Any]:
    """The first architecture of every canonical form, in order."""
    seen: set[str] = set()
    out = []
    for a in archs:
        key = space.canonical(a)
        if key not in seen:
            seen.add(key)
            out.append(a)
    return out


def generation_metrics(space: SearchSpace, generated: Sequence[Any | None],
                       train: Iterable[Any] | set[str] = ()) -> dict[str, float]:
    """``validity``, ``uniqueness``, ``novelty`` (fractions in [0, 1]) and counts.

    ``train``: the training architectures, or a set of their canonical forms."""
    n = len(generated)
    valid = [a for a in generated if a is not None and space.is_valid(a)]
    forms = {space.canonical(a) for a in valid}
    train_forms = train if isinstance(train, set) else {space.canonical(a) for a in train}
    novel = forms - train_forms
    return {
        "n": float(n),
        "valid": float(len(valid)),
        "validity": len(valid) / n if n else 0.0,
        "uniqueness": len(forms) / len(valid) if valid else 0.0,
        "novelty": len(novel) / len(forms) if forms else 0.0,
    }
