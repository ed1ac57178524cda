"""polydiff.core.lazy: names load on first access, are cached, and unknown names fail."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

from polydiff.core.lazy import lazy_exports


def test_lazy_exports_import_on_first_access(monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = types.ModuleType("fake_pkg")
    monkeypatch.setitem(sys.modules, "fake_pkg", pkg)
    pkg.__getattr__, pkg.__dir__ = lazy_exports(
        "fake_pkg", {"OrderedDict": "collections", "dedent": "textwrap"}, submodules=())
    assert "OrderedDict" not in pkg.__dict__
    import collections

    assert pkg.OrderedDict is collections.OrderedDict
    assert pkg.__dict__["OrderedDict"] is collections.OrderedDict  # cached
    assert {"OrderedDict", "dedent"} <= set(pkg.__dir__())
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        _ = pkg.nope


def test_domain_packages_import_without_torch() -> None:
    code = ("import sys, polydiff.core, polydiff.timeseries, polydiff.timeseries.tsdiff, "
            "polydiff.speech.sgmse; assert 'torch' not in sys.modules, 'torch imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-1000:]
