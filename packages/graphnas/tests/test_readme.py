"""The README's example runs as written (its python block is executed)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) == 1
    monkeypatch.chdir(tmp_path)
    exec(compile(blocks[0], str(README), "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("True {'depth': 3.0")
    assert out[2].startswith("cora test accuracy 0.")
    assert "'validity'" in out[3]
    assert (tmp_path / "runs" / "readme" / "model" / "diffusion.json").is_file()
