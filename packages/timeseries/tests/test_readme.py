"""The package README's example runs as written (examples/quickstart.py) and prints the
comparison it promises."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_example_runs(tmp_path: Path) -> None:
    script = ROOT / "examples" / "quickstart.py"
    body, readme = script.read_text(), (ROOT / "README.md").read_text()
    for line in ('config = TSDiffConfig.tiny(context_length=72, prediction_length=24, '
                 'lags=(24,))',
                 'tsdiff = TSDiffForecaster(model, num_samples=32, guidance="quantile", '
                 'scale=4.0,',
                 "naive = np.stack([seasonal_naive(h, 24, season=24, num_samples=32) for h in "
                 "history])"):
        assert line in readme and line in body  # the README shows the tested code
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [ln for ln in proc.stdout.splitlines() if "CRPS" in ln]
    assert len(lines) == 2 and lines[0].strip().startswith("tsdiff")
    crps = [float(ln.split("CRPS")[1].split()[0]) for ln in lines]
    assert all(0 < c < 10 for c in crps)
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()
