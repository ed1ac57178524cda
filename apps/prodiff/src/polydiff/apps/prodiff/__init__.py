"""The ``prodiff`` app: fast diffusion text-to-speech from the command line.

Huang, Zhao, Ren, Liu, Cui, Ren, Zhao (2022), "ProDiff: Progressive Fast Diffusion Model for
High-Quality Text-to-Speech". Modules:

* :mod:`.main`: the ``prodiff`` command (``train-teacher``, ``distill``, ``synthesize``,
  ``evaluate``, ``bench``, ``demo``); standard library only at import time;
* :mod:`.commands`: the verbs (they import torch);
* :mod:`.demo`: the tour demo (entry point ``polydiff.apps: prodiff = ...demo:DEMO``);
* ``weights/``: the starter voice (package data) and its ``manifest.json``.
"""

__version__ = "0.1.0"
