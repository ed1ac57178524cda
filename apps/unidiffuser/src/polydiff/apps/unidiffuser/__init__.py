"""The ``unidiffuser`` app: a command-line tool over :mod:`polydiff.multimodal.unidiffuser`
(UniDiffuser, Bao et al. 2023) and its ``polydiff tour`` demo.

* :mod:`~polydiff.apps.unidiffuser.main`: the ``unidiffuser`` command (``train``, ``sample``,
  ``evaluate``, ``demo``); only the standard library at import;
* :mod:`~polydiff.apps.unidiffuser.commands`: the verbs (torch imported inside);
* :mod:`~polydiff.apps.unidiffuser.starter`: the starter weights shipped with the app;
* :mod:`~polydiff.apps.unidiffuser.demo`: ``DEMO``, the tour demo.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("polydiff-unidiffuser")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"
