"""The ``diffmatch`` app: a command-line tool over :mod:`polydiff.dense.diffmatch` (DiffMatch,
Nam et al. 2024) and its ``polydiff tour`` demo.

* :mod:`~polydiff.apps.diffmatch.main`: the ``diffmatch`` command (``train``, ``match``,
  ``evaluate``, ``demo``); only the standard library at import;
* :mod:`~polydiff.apps.diffmatch.commands`: the verbs; :mod:`~polydiff.apps.diffmatch.workflow`:
  starter weights, training with a manifest, re-scoring, figures (shared with the demo and
  ``tools/bench/diffmatch.py``);
* :mod:`~polydiff.apps.diffmatch.demo`: ``DEMO``, the tour demo.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("polydiff-diffmatch")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"
