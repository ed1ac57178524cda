"""The app README's example runs as written, with the shipped starter weights."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from polydiff.dense.flow import flow_metrics, read_flo

ROOT = Path(__file__).resolve().parents[1]


def test_readme_example_runs(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", readme, re.S).group(1)
    script, command = block.split("\ndiffmatch match")
    code = script.split('python -c "', 1)[1].rsplit('"', 1)[0]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True, timeout=120, env=env)
    args = ("match" + command).split()
    proc = subprocess.run([sys.executable, "-m", "polydiff.apps.diffmatch.main", *args],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("flow.flo", "flow.png", "flow-warped.png", "flow-uncertainty.png"):
        assert (tmp_path / name).is_file(), name
    flow = read_flo(tmp_path / "flow.flo")
    assert flow.shape == (2, 400, 600)
    # the true flow of a 4-degree rotation about the image centre (skimage.transform.rotate
    # turns the content counter-clockwise, so B(R(x)) = A(x))
    import numpy as np

    h, w = 400, 600
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    cx, cy = (w - 1) / 2, (h - 1) / 2
    t = np.deg2rad(4)
    xr = cx + np.cos(t) * (xs - cx) + np.sin(t) * (ys - cy)
    yr = cy - np.sin(t) * (xs - cx) + np.cos(t) * (ys - cy)
    gt = np.stack([xr - xs, yr - ys])
    inner = np.zeros((h, w), bool)
    inner[40:-40, 40:-40] = True
    m = flow_metrics(flow, gt, inner)
    zero = flow_metrics(np.zeros_like(gt), gt, inner)
    assert m["aepe"] < 0.5 * zero["aepe"], (m, zero)
