"""The README's CDCD example runs as written (in a fresh interpreter, temporary folder)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_cdcd_readme_example_runs(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## CDCD"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "train_cdcd" in code and "score_digits" in code
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CI": "true"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == "(4, 64) True"
    assert lines[-1] == "['accuracy', 'digits', 'level_tv', 'nn_distance', 'steps']"
    assert (tmp_path / "runs" / "cdcd" / "stats.jsonl").is_file()
