"""The README's example runs as written (on CPU here: eager graph path, no compilation)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_example_runs(tmp_path: Path) -> None:
    m = re.search(r"```python\n(.*?)```", README.read_text(), re.S)
    assert m, "README has no python block"
    script = tmp_path / "example.py"
    script.write_text(m.group(1))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "POLYDIFF_DEVICE": "cpu"}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert re.fullmatch(r"cpu fp32 graph=False \d+\.\d{3} ms/loop peak=\S+ \S+\n", out.stdout)


def test_readme_whole_step_example_runs(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 2, "README has no whole-step example"
    script = tmp_path / "whole_step.py"
    script.write_text(blocks[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "POLYDIFF_DEVICE": "cpu"}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    m = re.fullmatch(r"graphs=False loss (\d+\.\d+) -> (\d+\.\d+) sample \(32, 64\)\n",
                     out.stdout)
    assert m, out.stdout
    assert float(m.group(2)) < float(m.group(1))  # it trains
