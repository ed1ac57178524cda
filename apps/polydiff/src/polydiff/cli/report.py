"""The tour's results and its single self-contained HTML report (inline CSS, figures and audio
embedded as base64 data URIs, so the file can be mailed or archived on its own)."""

from __future__ import annotations

import base64
import html
import os
import platform
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from polydiff.core.cli import DemoReport, atomic_write

__all__ = ["DemoResult", "collect_environment", "render_html", "write_report"]

_MIME = {
    ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
    ".svg": "image/svg+xml", ".webp": "image/webp", ".wav": "audio/wav", ".mp3": "audio/mpeg",
    ".ogg": "audio/ogg", ".flac": "audio/flac",
}


@dataclass
class DemoResult:
    """One app's demo run within a tour: its report, or the error that stopped it."""

    name: str
    summary: str
    distribution: str | None
    version: str | None
    out_dir: Path
    wall_s: float = 0.0
    report: DemoReport | None = None
    error: str | None = None
    traceback: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether the demo finished and returned a report."""
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (metrics and file paths, no embedded data)."""
        rep = self.report
        return {
            "name": self.name, "ok": self.ok, "title": rep.title if rep else None,
            "summary": self.summary, "distribution": self.distribution,
            "version": self.version, "wall_s": round(self.wall_s, 3),
            "out_dir": str(self.out_dir), "metrics": dict(rep.metrics) if rep else {},
            "units": dict(getattr(rep, "units", {}) or {}) if rep else {},
            "figures": [str(p) for p in rep.figures] if rep else [],
            "audio": [str(p) for p in rep.audio] if rep else [],
            "warnings": list(self.warnings), "error": self.error,
        }


def _versions() -> dict[str, str]:
    from importlib.metadata import distributions

    found = {}
    for dist in distributions():
        name = dist.metadata["Name"] or ""
        if name.lower().startswith("polydiff"):
            found[name] = dist.version
    return dict(sorted(found.items()))


def collect_environment() -> dict[str, str]:
    """Python, platform, torch and polydiff versions, and the compute device (imports torch)."""
    env = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "cpu cores": str(os.cpu_count()),
    }
    try:
        import torch

        env["torch"] = torch.__version__
        env["torch threads"] = str(torch.get_num_threads())
        if torch.cuda.is_available():
            env["device"] = f"cuda: {torch.cuda.get_device_name(0)}"
        elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            env["device"] = "mps"
        else:
            env["device"] = "cpu"
    except ImportError:
        env["torch"] = env["device"] = "torch not installed"
    env.update(_versions())
    return env


def _data_uri(path: Path) -> str:
    mime = _MIME.get(path.suffix.lower(), "application/octet-stream")
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _fmt(value: Any) -> tuple[str, str]:
    """Display text and full-precision tooltip of a metric value."""
    if isinstance(value, float):
        return f"{value:.4g}", repr(value)
    return str(value), str(value)


_CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2433;
background:#f5f6f8}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{margin:0 0 4px}h2{margin:0 0 4px;font-size:1.25em}
.muted{color:#667085;font-size:.9em}
section,.card{background:#fff;border:1px solid #e3e6ea;border-radius:8px;padding:16px 20px;
margin:16px 0}
section.failed{border-left:5px solid #d92d20}section.ok{border-left:5px solid #12b76a}
table{border-collapse:collapse;margin:8px 0}
td,th{padding:3px 12px 3px 0;text-align:left;vertical-align:top;border-bottom:1px solid #eef0f3}
td.num{font-variant-numeric:tabular-nums;text-align:right}
.badge{display:inline-block;padding:0 8px;border-radius:10px;font-size:.8em;color:#fff}
.badge.ok{background:#12b76a}.badge.failed{background:#d92d20}
.text{white-space:pre-wrap}.error{color:#b42318;font-weight:600}
pre{background:#f2f4f7;padding:8px;overflow-x:auto;font-size:.85em}
figure{display:inline-block;margin:8px 16px 8px 0;vertical-align:top}
figure img{max-width:100%;border:1px solid #e3e6ea}
figcaption{font-size:.85em;color:#667085}
"""


def _badge(ok: bool) -> str:
    return f'<span class="badge {"ok" if ok else "failed"}">{"ok" if ok else "failed"}</span>'


def _anchor(name: str) -> str:
    return "demo-" + "".join(c if c.isalnum() else "-" for c in name)


def _media(paths: list[Path], kind: str, warnings: list[str]) -> list[str]:
    parts = []
    for p in paths:
        try:
            uri = _data_uri(p)
        except OSError as e:
            warnings.append(f"{kind} {p.name}: {e.strerror or e}")
            continue
        name = html.escape(p.name)
        media = (f'<img src="{uri}" alt="{name}">' if kind == "figure"
                 else f'<audio controls preload="none" src="{uri}"></audio>')
        parts.append(f"<figure>{media}<figcaption>{name}</figcaption></figure>")
    return parts


def _section(res: DemoResult) -> str:
    e = html.escape
    rep, warnings = res.report, list(res.warnings)
    title = e(rep.title) if rep else "demo failed"
    origin = " ".join(filter(None, [res.distribution, res.version]))
    out = [f'<section id="{_anchor(res.name)}" class="{"ok" if res.ok else "failed"}">',
           f"<h2>{e(res.name)}: {title} {_badge(res.ok)}</h2>",
           f'<p class="muted">{e(res.summary)}{" · " + e(origin) if origin else ""}'
           f" · {res.wall_s:.2f} s wall</p>"]
    if res.error:
        out.append(f'<p class="error">{e(res.error)}</p>')
        if res.traceback:
            out.append(f"<details><summary>traceback</summary><pre>{e(res.traceback)}</pre>"
                       "</details>")
    if rep is not None:
        if rep.text:
            out.append(f'<div class="text">{e(rep.text.strip())}</div>')
        if rep.metrics:
            rows = []
            units = getattr(rep, "units", None) or {}
            for k, v in rep.metrics.items():
                shown, full = _fmt(v)
                rows.append(f'<tr><td>{e(str(k))}</td><td class="num" title="{e(full)}">'
                            f'{e(shown)}</td><td class="unit">{e(units.get(k, ""))}</td></tr>')
            out.append('<table class="metrics"><tr><th>metric</th><th>value</th><th>unit</th>'
                       "</tr>" + "".join(rows) + "</table>")
        out.extend(_media([Path(p) for p in rep.figures], "figure", warnings))
        out.extend(_media([Path(p) for p in rep.audio], "audio", warnings))
    if warnings:
        out.append("<ul>" + "".join(f"<li class='muted'>{e(w)}</li>" for w in warnings)
                   + "</ul>")
    out.append("</section>")
    return "\n".join(out)


def render_html(results: list[DemoResult], env: dict[str, str], *, title: str = "polydiff tour",
                quick: bool = False) -> str:
    """The whole report as one HTML document (no external resources)."""
    e = html.escape
    failed = sum(not r.ok for r in results)
    total = sum(r.wall_s for r in results)
    head = (f"{len(results)} demo{'s' if len(results) != 1 else ''}, {failed} failed, "
            f"{total:.1f} s{' · quick mode' if quick else ''} · {e(env.get('date', ''))}")
    summary_rows = "".join(
        f'<tr><td><a href="#{_anchor(r.name)}">{e(r.name)}</a></td><td>{_badge(r.ok)}</td>'
        f'<td class="num">{r.wall_s:.2f} s</td>'
        f"<td>{e(r.report.title if r.report else (r.error or ''))}</td></tr>" for r in results)
    env_rows = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in env.items())
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(title)}</title><style>{_CSS}</style></head><body><main>",
        f'<h1>{e(title)}</h1><p class="muted">{head}</p>',
        '<div class="card"><table><tr><th>app</th><th>status</th><th>wall time</th>'
        f"<th>demo</th></tr>{summary_rows}</table></div>",
        *(_section(r) for r in results),
        f'<div class="card"><h2>environment</h2><table>{env_rows}</table></div>',
        "</main></body></html>", ""])


def write_report(path: str | os.PathLike[str], results: list[DemoResult], env: dict[str, str],
                 **kwargs: Any) -> Path:
    """Render and write the report atomically; returns its path."""
    return atomic_write(path, render_html(results, env, **kwargs))
