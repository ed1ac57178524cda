"""The README's ProDiff example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_prodiff_readme_example_runs(tmp_path, monkeypatch, capsys):
    pytest.importorskip("espeakng_loader")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## ProDiff text-to-speech", 1)[1]
    code = re.findall(r"```python\n(.*?)```", section, re.S)[0]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CI", "true")
    exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})
    assert "seconds" in capsys.readouterr().out
    assert (tmp_path / "run" / "distill" / "2to1").is_dir()
