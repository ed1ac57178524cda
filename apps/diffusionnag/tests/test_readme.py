"""The README's example commands run as written."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from polydiff.apps.diffusionnag.main import main

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_commands_run(tmp_path, monkeypatch, capsys):
    block = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)[0]
    lines = [ln for ln in block.splitlines() if ln.startswith("diffusionnag ")]
    assert len(lines) == 3
    monkeypatch.chdir(tmp_path)
    for line in lines:
        assert main(shlex.split(line)[1:]) == 0, line
    out = capsys.readouterr().out
    assert "test_best_percentile" in out and "queries_to_top1pct" in out
    assert (tmp_path / "nag-photo" / "cells.png").is_file()
    assert (tmp_path / "nag-search" / "trace.csv").is_file()
