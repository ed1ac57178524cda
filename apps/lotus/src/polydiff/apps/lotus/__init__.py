"""The ``lotus`` app: a command-line tool over :mod:`polydiff.dense.lotus` (Lotus, He et al.
2024: single-step diffusion dense prediction of depth and surface normals) and its
``polydiff tour`` demo.

* :mod:`~polydiff.apps.lotus.main`: the ``lotus`` command (``train``, ``predict``,
  ``evaluate``, ``demo``); only the standard library at import;
* :mod:`~polydiff.apps.lotus.commands`: the verbs; :mod:`~polydiff.apps.lotus.workflow`:
  model folders, starter weights, training with a manifest, re-scoring;
* :mod:`~polydiff.apps.lotus.demo`: ``DEMO``, the tour demo.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("polydiff-lotus")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"
