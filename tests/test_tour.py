"""The main job, `polydiff tour`, over every installed app in quick mode: every demo runs,
the report is written, and every numeric metric carries a unit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_quick_tour_of_every_installed_app(tmp_path: Path) -> None:
    out = tmp_path / "tour"
    env = {**os.environ, "POLYDIFF_CACHE": str(tmp_path / "cache"), "CI": "true"}
    proc = subprocess.run([sys.executable, "-m", "polydiff.cli.main", "tour", "--quick",
                           "-o", str(out), "--json"], capture_output=True, text=True,
                          env=env, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout)
    assert result["ok"] and not result["failed"]
    names = {d["name"] for d in result["demos"]}
    assert {"core-samplers", "digits", "sgmse", "tsdiff"} <= names, names
    missing = {d["name"]: [k for k, v in d["metrics"].items()
                           if not isinstance(v, str) and not d["units"].get(k)]
               for d in result["demos"]}
    assert not any(missing.values()), missing
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "<th>unit</th>" in page
    for d in result["demos"]:
        for f in d["figures"] + d["audio"]:
            assert Path(f).is_file(), f
