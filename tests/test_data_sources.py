"""The reserved data sources of shared/data-sources.toml are used nowhere: only the guard
files that refuse them may name them, and the speech package refuses each speech one."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCES = tomllib.loads((REPO / "shared" / "data-sources.toml").read_text())


def _tracked_python() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "*.py", "*.sh", "*.toml"], cwd=REPO,
                         capture_output=True, text=True, check=True, timeout=60).stdout
    return [REPO / p for p in out.split() if (REPO / p).is_file()]


def test_reserved_sources_appear_only_in_guards():
    guards = set(SOURCES["guards"])
    patterns = [r["pattern"] for r in SOURCES["reserved"]]
    offenders = []
    for path in _tracked_python():
        rel = path.relative_to(REPO).as_posix()
        if rel in guards or rel.startswith("shared/"):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        offenders += [f"{rel}: {p}" for p in patterns if p in text]
    assert not offenders, offenders


def test_speech_refuses_every_reserved_speech_package():
    from polydiff.speech.realspeech import is_reserved

    for r in SOURCES["reserved"]:
        if r["pattern"].startswith("asterisk"):
            assert is_reserved(r["pattern"] + "wav"), r
    for u in SOURCES["used"]:
        if u["kind"] == "debian":
            assert not is_reserved(u["name"]), u


def test_guards_exist_or_are_planned():
    missing = [g for g in SOURCES["guards"] if not (REPO / g).exists()]
    assert not missing, missing
