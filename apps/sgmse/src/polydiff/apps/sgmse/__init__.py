"""The ``sgmse`` app: SGMSE+ speech enhancement from the command line.

Richter, Welker, Lemercier, Lay, Gerkmann (2023), "Speech Enhancement and Dereverberation with
Diffusion-based Generative Models". Modules:

* :mod:`.main`: the ``sgmse`` command (``train``, ``enhance``, ``evaluate``, ``bench``,
  ``demo``); standard library only at import time, so ``--help`` is instant;
* :mod:`.config`: the typed settings of ``train`` and ``enhance`` (TOML + overrides);
* :mod:`.commands`: the verbs (they import torch);
* :mod:`.experiment`: corpus, training of SGMSE and the predictive baseline under one budget,
  and their evaluation (shared by the demo and ``tools/bench/sgmse.py``);
* :mod:`.demo`: the tour demo (entry point ``polydiff.apps: sgmse = ...demo:DEMO``).
"""

__version__ = "0.1.0"
