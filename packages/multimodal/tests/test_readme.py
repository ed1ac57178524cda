"""The README's example runs as written: its first ``python`` block is executed in a fresh
interpreter (in a temporary folder) and must print what it promises."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_example_runs(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    assert "train_unidiffuser" in code and 'sample(model, "i2t2i"' in code
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CI": "true"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=900, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("['") and lines[-1].startswith("(1, 1, 8, 8) [")
    assert (tmp_path / "runs" / "joint" / "stats.jsonl").is_file()
