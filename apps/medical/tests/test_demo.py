"""The tour demo in quick mode: runs on the starter prior, writes its figures, and every numeric
metric has a unit."""

from __future__ import annotations

from pathlib import Path

from polydiff.apps.medical.demo import DEMO


def test_quick_demo(tmp_path: Path) -> None:
    report = DEMO.demo(tmp_path, quick=True)
    assert report.figures and all(Path(f).is_file() for f in report.figures)
    numeric = [k for k, v in report.metrics.items() if not isinstance(v, str)]
    assert numeric and all(report.units.get(k) for k in numeric)
    assert "SIMULATED" in report.text
    assert any(k.endswith("/dc/psnr") for k in report.metrics)
