"""Tabular benchmarks: look up the trained accuracy of an architecture instead of training it.

* :class:`NASBenchGraph`: NAS-Bench-Graph (Qin et al. 2022), whose tables (validation and
  test accuracy, latency, parameters of 26,206 unique architectures on 9 datasets; 2,021 on
  ogbn-proteins) ship inside the ``nas-bench-graph`` package, so it works offline. The
  files are pickles of plain dicts; they are read with an unpickler that admits only
  numpy scalars (never arbitrary objects). Lookups go through the canonical form of
  :class:`~polydiff.graphnas.spaces.nbgraph.NBGraphSpace`, so every raw encoding of an
  architecture finds its entry.
* :func:`load_nb201_table`: NAS-Bench-201 accuracies from a flat export (CSV with an ``arch``
  column, or JSON ``{arch_string: {metric: value}}`` / a list of records with ``arch``), the
  file a user writes once with the official API; keyed by the cell's canonical form.
* :class:`Oracle`: a query counter in front of a table, for search-cost accounting.
"""

from __future__ import annotations

import csv
import io
import json
import math
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from polydiff.graphnas.spaces.nb201 import NB201Space
from polydiff.graphnas.spaces.nbgraph import NBG_OPS, PROTEINS_OPS, GraphArch, NBGraphSpace

__all__ = ["NBG_DATASETS", "NASBenchGraph", "Record", "Oracle", "load_nb201_table",
           "parse_benchmark"]

NBG_DATASETS = ("cora", "citeseer", "pubmed", "cs", "physics", "photo", "computers", "arxiv",
                "proteins")
# the benchmark's 9 link patterns (index = the key's leading digit) and op order (key digits)
_LINKS = ((0, 0, 0, 0), (0, 0, 0, 1), (0, 0, 1, 1), (0, 0, 1, 2), (0, 0, 1, 3), (0, 1, 1, 1),
          (0, 1, 1, 2), (0, 1, 2, 2), (0, 1, 2, 3))


@dataclass(frozen=True)
class Record:
    """One architecture's benchmark entry."""

    arch: GraphArch
    valid: float
    test: float
    latency: float
    params: float  # millions


class _TableUnpickler(pickle.Unpickler):
    """Admits only what the benchmark's tables hold: dicts of numbers and numpy scalars."""

    _ALLOWED = {("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
                ("numpy", "dtype")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a benchmark "
                                         "table")
        import numpy as np

        if name == "dtype":
            return np.dtype
        try:
            from numpy._core.multiarray import scalar  # numpy >= 2
        except ImportError:  # pragma: no cover - numpy 1.x
            from numpy.core.multiarray import scalar  # type: ignore[no-redef]
        return scalar


@lru_cache(maxsize=16)
def _read_table(dataset: str) -> dict[int, dict[str, float]]:
    ref = resources.files("nas_bench_graph") / "light" / f"{dataset}.bench"
    raw = _TableUnpickler(io.BytesIO(ref.read_bytes())).load()
    return {int(k): {kk: float(vv) for kk, vv in v.items()} for k, v in raw.items()}


@cache
def _canonical_of_key(key: int) -> tuple[GraphArch, str]:
    arch = _decode_key(key)
    return arch, NBGraphSpace().canonical(arch)


def _decode_key(key: int) -> GraphArch:
    digits = []
    for _ in range(4):
        key, d = divmod(key, 10)
        digits.append(d)
    return GraphArch(_LINKS[key], tuple(NBG_OPS[d] for d in reversed(digits)))


def parse_benchmark(spec: str) -> tuple[str, str]:
    """``"nas-bench-graph:cora"`` -> ``("nas-bench-graph", "cora")``; ``ValueError`` (one
    line) for anything else."""
    name, sep, dataset = spec.strip().partition(":")
    if name != "nas-bench-graph" or not sep:
        raise ValueError(f"unknown benchmark {spec!r}; expected nas-bench-graph:<dataset> with "
                         f"dataset one of {', '.join(NBG_DATASETS)}")
    if dataset not in NBG_DATASETS:
        raise ValueError(f"unknown NAS-Bench-Graph dataset {dataset!r}; expected one of "
                         f"{', '.join(NBG_DATASETS)}")
    return name, dataset


class NASBenchGraph:
    """The NAS-Bench-Graph table of one dataset (module docstring).

    ``records``: one :class:`Record` per unique architecture; ``lookup(arch)`` finds any
    encoding's entry (``None`` if it has none, e.g. operations outside ogbn-proteins' five).
    """

    def __init__(self, dataset: str):
        if dataset not in NBG_DATASETS:
            raise ValueError(f"unknown NAS-Bench-Graph dataset {dataset!r}; expected one of "
                             f"{', '.join(NBG_DATASETS)}")
        self.dataset, self.space = dataset, NBGraphSpace()
        self.ops = PROTEINS_OPS if dataset == "proteins" else NBG_OPS
        table = _read_table(dataset)
        self.records: list[Record] = []
        self._index: dict[str, int] = {}
        self.keys = tuple(sorted(table))  # the benchmark's own architecture keys, row order
        for key in self.keys:
            v = table[key]
            arch, form = _canonical_of_key(key)
            self._index[form] = len(self.records)
            self.records.append(Record(arch, v["valid_perf"], v["perf"], v["latency"],
                                       v["para"]))

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def index(self, arch: GraphArch) -> int | None:
        """Row of ``arch``'s entry (any equivalent encoding), or ``None``."""
        if not self.space.is_valid(arch):
            return None
        return self._index.get(self.space.canonical(arch))

    def lookup(self, arch: GraphArch) -> Record | None:
        i = self.index(arch)
        return None if i is None else self.records[i]

    def quantile(self, q: float, metric: str = "test") -> float:
        """The ``q`` quantile of a metric over the table (linear interpolation)."""
        vals = sorted(getattr(r, metric) for r in self.records)
        pos = q * (len(vals) - 1)
        lo = math.floor(pos)
        hi = min(lo + 1, len(vals) - 1)
        return vals[lo] + (pos - lo) * (vals[hi] - vals[lo])


class Oracle:
    """Counts benchmark queries; each new architecture (by table row) costs one query.

    ``query(arch)`` returns the record (``None`` for architectures without an entry, which
    also cost a query: the search asked for them) and appends to ``history``.
    """

    def __init__(self, bench: NASBenchGraph):
        self.bench = bench
        self.history: list[tuple[GraphArch, Record | None]] = []
        self._seen: set[Any] = set()

    @property
    def queries(self) -> int:
        return len(self.history)

    def seen(self, arch: GraphArch) -> bool:
        return self._key(arch) in self._seen

    def _key(self, arch: GraphArch) -> Any:
        i = self.bench.index(arch)
        return ("row", i) if i is not None else ("raw", arch)

    def query(self, arch: GraphArch) -> Record | None:
        self._seen.add(self._key(arch))
        rec = self.bench.lookup(arch)
        self.history.append((arch, rec))
        return rec


def load_nb201_table(path: str | Path) -> dict[str, dict[str, float]]:
    """Accuracies of NAS-Bench-201 cells from a CSV/JSON export, keyed by canonical form.

    CSV: a header with an ``arch`` column (NAS-Bench-201 strings) and numeric metric columns.
    JSON: ``{arch: {metric: value}}`` or ``[{"arch": ..., metric: value, ...}, ...]``.
    Isomorphic cells share a key (their entries are averaged)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no such NAS-Bench-201 table: {path}")
    rows: list[dict[str, Any]]
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    elif path.suffix.lower() == ".json":
        data = json.loads(path.read_text())
        rows = [{"arch": k, **v} for k, v in data.items()] if isinstance(data, dict) else data
    else:
        raise ValueError(f"{path}: expected a .csv or .json NAS-Bench-201 table")
    space = NB201Space()
    sums: dict[str, dict[str, list[float]]] = {}
    for n, row in enumerate(rows, start=1):
        if not isinstance(row, dict) or "arch" not in row:
            raise ValueError(f"{path}: row {n} has no 'arch' field")
        cell = space.parse(str(row["arch"]))
        key = space.canonical(cell)
        entry = sums.setdefault(key, {})
        for k, v in row.items():
            if k == "arch" or v in (None, ""):
                continue
            try:
                entry.setdefault(k, []).append(float(v))
            except (TypeError, ValueError):
                raise ValueError(f"{path}: row {n}: {k}={v!r} is not a number") from None
    return {k: {m: sum(v) / len(v) for m, v in e.items()} for k, e in sums.items()}
