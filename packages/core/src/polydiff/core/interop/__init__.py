"""Interoperability with other libraries (optional extras).

Submodules import their library lazily, inside functions and classes, so importing
``polydiff.core`` (or these modules) never requires the extra:

* :mod:`polydiff.core.interop.diffusers`: drive polydiff samplers with a ``diffusers`` model
  and scheduler, and expose polydiff's samplers as a ``diffusers`` scheduler
  (``pip install "polydiff-core[diffusers]"``).
"""

__all__: list[str] = []
