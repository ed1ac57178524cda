"""The ``polydiff-med`` app: a command-line tool over :mod:`polydiff.medical` and its
``polydiff tour`` demo.

* :mod:`~polydiff.apps.medical.main`: the ``polydiff-med`` command (``train-prior``,
  ``reconstruct``, ``subsample``, ``anomaly``, ``evaluate``, ``demo``); only the standard
  library at import;
* :mod:`~polydiff.apps.medical.commands`: the verbs;
* :mod:`~polydiff.apps.medical.demo`: ``DEMO``, the tour demo;
* ``weights/prior``: the starter prior (safetensors) and its ``manifest.json``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("polydiff-med")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"
