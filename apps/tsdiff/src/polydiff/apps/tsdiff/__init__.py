"""The ``tsdiff`` app: a command-line tool over :mod:`polydiff.timeseries.tsdiff` (TSDiff,
Kollovieh et al. 2023) and its ``polydiff tour`` demo.

* :mod:`~polydiff.apps.tsdiff.main`: the ``tsdiff`` command (``train``, ``forecast``,
  ``refine``, ``synthesize``, ``evaluate``, ``demo``); only the standard library at import;
* :mod:`~polydiff.apps.tsdiff.commands`: the verbs; :mod:`~polydiff.apps.tsdiff.workflow`: data,
  presets, baselines, metrics and output shared with the demo and ``tools/bench/tsdiff.py``;
* :mod:`~polydiff.apps.tsdiff.demo`: ``DEMO``, the tour demo on real offline series.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("polydiff-tsdiff")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"
