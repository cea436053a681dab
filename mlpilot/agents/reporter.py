"""The run report: report.md and report.html, with verified numbers only."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined


def _env() -> Environment:
    env = Environment(
        loader=PackageLoader("mlpilot.agents", "templates"),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["fmt"] = lambda v: "-" if v is None else f"{v:.4f}"
    env.filters["e"] = html.escape
    return env


def history_svg(points: list[tuple[int, float]], best: list[float], label: str) -> str:
    """A small dependency-free SVG plot of trial scores and the best-so-far line."""
    if not points:
        return ""
    width, height, pad = 640, 260, 40
    xs = [p[0] for p in points]
    ys = [p[1] for p in points] + best
    x0, x1 = min(xs), max(xs) or 1
    y0, y1 = min(ys), max(ys)
    if y1 == y0:
        y1 = y0 + 1e-9

    def sx(x: float) -> float:
        return pad + (x - x0) / max(1, x1 - x0) * (width - 2 * pad)

    def sy(y: float) -> float:
        return height - pad - (y - y0) / (y1 - y0) * (height - 2 * pad)

    dots = "".join(
        f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="#4c78a8"/>' for x, y in points
    )
    line = " ".join(f"{sx(x):.1f},{sy(b):.1f}" for x, b in zip(xs, best, strict=True))
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="11">'
        f'<rect width="{width}" height="{height}" fill="white"/>'
        f'<polyline points="{line}" fill="none" stroke="#e45756" stroke-width="2"/>{dots}'
        f'<text x="{pad}" y="15">{html.escape(label)} per trial (dots) and best so far (line)'
        f"</text>"
        f'<text x="{pad}" y="{height - 10}">trial 0</text>'
        f'<text x="{width - pad - 40}" y="{height - 10}">trial {x1}</text>'
        f'<text x="4" y="{sy(y1) + 4:.1f}">{y1:.4f}</text>'
        f'<text x="4" y="{sy(y0) + 4:.1f}">{y0:.4f}</text></svg>'
    )


def write_report(run_dir: Path, data: dict[str, Any]) -> tuple[Path, Path]:
    """Renders report.md and report.html (and history.svg) into ``run_dir``."""
    env = _env()
    svg = data.get("history_svg", "")
    if svg:
        (run_dir / "history.svg").write_text(svg)
    md = env.get_template("report.md.j2").render(**data)
    page = env.get_template("report.html.j2").render(**data)
    md_path, html_path = run_dir / "report.md", run_dir / "report.html"
    md_path.write_text(md)
    html_path.write_text(page)
    return md_path, html_path
