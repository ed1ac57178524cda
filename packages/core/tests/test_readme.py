"""The README's 20-line example runs as written, and matches examples/quickstart.py."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def _first_python_block(text: str) -> str:
    m = re.search(r"```python\n(.*?)```", text, re.S)
    assert m, "README has no python block"
    return m.group(1)


def test_readme_example_is_the_quickstart_and_short():
    code = _first_python_block((HERE / "README.md").read_text())
    assert code == (HERE / "examples" / "quickstart.py").read_text()
    body = [ln for ln in code.splitlines() if ln.strip() and not ln.startswith(('"""', "import",
                                                                                  "from"))]
    assert len(body) <= 20, f"the example has {len(body)} lines of code"


def test_readme_example_runs(tmp_path):
    code = _first_python_block((HERE / "README.md").read_text())
    script = tmp_path / "example.py"
    script.write_text(code)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=600, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 7
    errs = [float(ln.rsplit(" ", 1)[1]) for ln in lines[:6]]
    # more steps, smaller error, for both samplers
    assert errs[4] < errs[2] < errs[0] and errs[5] < errs[3] < errs[1]
    ll, exact = re.findall(r"(-?\d+\.\d+)", lines[6])[:2]
    assert abs(float(ll) - float(exact)) < 0.05
