"""The package README's example runs as written (examples/quickstart.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_example_runs(tmp_path: Path) -> None:
    script = ROOT / "examples" / "quickstart.py"
    body, readme = script.read_text(), (ROOT / "README.md").read_text()
    for line in ('pairs = heldout_pairs(4)', 'daisy = methods(None, opencv=False)["argmax_daisy"]',
                 'flow = daisy(p.a, corrupt(p.b, "jpeg", severity=2))'):
        assert line in readme and line in body  # the README shows the tested code
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("argmax_daisy")]
    assert len(lines) == 2
    aepe = [float(ln.split("AEPE")[1].split()[0]) for ln in lines]
    assert all(0 < a < 30 for a in aepe)
    assert (tmp_path / "flow.flo").is_file() and (tmp_path / "flow.png").is_file()
