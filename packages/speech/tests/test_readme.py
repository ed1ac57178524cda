"""The package README's example runs as written (examples/quickstart.py) and does what it
says: a corpus in the standard layout, a trained model, an enhanced file and metrics."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_example_runs(tmp_path: Path) -> None:
    script = ROOT / "examples" / "quickstart.py"
    body = script.read_text().split('work = Path', 1)[1].split("\n", 1)[1]
    readme = (ROOT / "README.md").read_text()
    for line in ("model = SGMSE(SGMSEConfig(preset=\"tiny\", objective=\"data\"))",
                 "enhanced = enhance(model, noisy, sr, sampler=\"pc\", steps=10)"):
        assert line in readme and line in body  # the README shows the tested code
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "corpus" / "train" / "clean").is_dir()
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()
    assert (tmp_path / "enhanced.wav").is_file()
    assert "'si_sdr'" in proc.stdout and "'pesq'" in proc.stdout
