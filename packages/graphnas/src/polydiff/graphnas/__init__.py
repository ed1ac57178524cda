"""polydiff for neural architecture search: architectures as graphs, a graph diffusion model
and predictor-guided generation (DiffusionNAG, An et al. 2024, "DiffusionNAG:
Predictor-guided Neural Architecture Generation with Diffusion Models").

Modules (nothing heavy is imported with the package; the names below load on first use):

* :mod:`polydiff.graphnas.spaces`: search spaces as graphs (NAS-Bench-201 cell,
  NAS-Bench-Graph, a MobileNetV3 chain) with string/PyG encode-decode, validity rules,
  canonical hashing and exact properties;
* :mod:`polydiff.graphnas.hashing`: exact canonical forms of labelled DAGs;
* :mod:`polydiff.graphnas.benchmarks`: the NAS-Bench-Graph tables (offline), a NAS-Bench-201
  table loader, query accounting;
* :mod:`polydiff.graphnas.model`: the architecture diffusion model (core's VP process, graph
  transformer, samplers);
* :mod:`polydiff.graphnas.predictor`, :mod:`polydiff.graphnas.meta`,
  :mod:`polydiff.graphnas.tasks`: noise-aware (meta-)predictors, task embeddings,
  leave-one-dataset-out folds;
* :mod:`polydiff.graphnas.train`: training both with core's Trainer;
* :mod:`polydiff.graphnas.search`: generate-then-rank / Bayesian-optimisation search,
  random search, regularised evolution;
* :mod:`polydiff.graphnas.metrics`: validity, uniqueness, novelty;
* :mod:`polydiff.graphnas.draw`: figures of cells.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from polydiff.core.lazy import lazy_exports

if TYPE_CHECKING:
    from polydiff.graphnas.benchmarks import NASBenchGraph, Oracle, load_nb201_table
    from polydiff.graphnas.metrics import generation_metrics
    from polydiff.graphnas.model import ArchDiffusion, DiffusionConfig, SamplerConfig
    from polydiff.graphnas.predictor import ArchPredictor, PredictorConfig
    from polydiff.graphnas.spaces import InvalidArchitecture, SearchSpace, get_space

try:
    __version__ = version("polydiff-graphnas")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

_HOME = {
    **dict.fromkeys(("NASBenchGraph", "Oracle", "load_nb201_table"),
                    "polydiff.graphnas.benchmarks"),
    "generation_metrics": "polydiff.graphnas.metrics",
    **dict.fromkeys(("ArchDiffusion", "DiffusionConfig", "SamplerConfig"),
                    "polydiff.graphnas.model"),
    **dict.fromkeys(("ArchPredictor", "PredictorConfig"), "polydiff.graphnas.predictor"),
    **dict.fromkeys(("InvalidArchitecture", "SearchSpace", "get_space"),
                    "polydiff.graphnas.spaces"),
}
_SUBMODULES = frozenset({"spaces", "hashing", "benchmarks", "model", "predictor", "meta",
                         "tasks", "train", "search", "metrics", "draw"})

__all__ = ["ArchDiffusion", "ArchPredictor", "DiffusionConfig", "InvalidArchitecture",
           "NASBenchGraph", "Oracle", "PredictorConfig", "SamplerConfig", "SearchSpace",
           "__version__", "generation_metrics", "get_space", "load_nb201_table"]

__getattr__, __dir__ = lazy_exports(__name__, _HOME, _SUBMODULES)
