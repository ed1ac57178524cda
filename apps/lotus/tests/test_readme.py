"""The app README's example runs as written, with the shipped starter weights."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def test_readme_example_runs(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", readme, re.S).group(1)
    script, *commands = block.split("\nlotus ")
    code = script.split('python -c "', 1)[1].rsplit('"', 1)[0]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True, timeout=120, env=env)
    assert len(commands) == 2
    for command in commands:
        proc = subprocess.run([sys.executable, "-m", "polydiff.apps.lotus.main",
                               *command.split()], cwd=tmp_path, capture_output=True,
                              text=True, timeout=300, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
    depth = np.load(tmp_path / "depth.npy")
    normals = np.load(tmp_path / "normals.npy")
    assert depth.shape == (400, 600) and normals.shape == (400, 600, 3)
    assert np.isfinite(depth).all() and depth.std() > 0
    assert np.allclose(np.linalg.norm(normals, axis=-1), 1.0, atol=1e-3)
    for name in ("depth.png", "normals.png"):
        assert (tmp_path / name).stat().st_size > 1000
