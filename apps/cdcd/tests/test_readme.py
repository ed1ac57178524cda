"""The README's example commands run as written (with the starter weights)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from polydiff.apps.cdcd.main import main
from polydiff.apps.cdcd.starter import starter_available

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not starter_available(), reason="starter weights not installed")
def test_readme_commands_run(tmp_path, monkeypatch, capsys) -> None:
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    commands = [shlex.split(line) for line in block.strip().splitlines()]
    assert [c[:2] for c in commands] == [["cdcd", "sample"], ["cdcd", "evaluate"]]
    monkeypatch.chdir(tmp_path)
    for argv in commands:
        assert main(argv[1:] + ["--json"]) == 0, argv
        out = json.loads(capsys.readouterr().out)
        if argv[1] == "evaluate":
            assert out["scores"]["accuracy"] > 0.3  # well above chance (0.1)
    assert len(json.loads((tmp_path / "out/samples/samples.json").read_text())["samples"]) == 8
