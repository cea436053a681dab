"""The run report: report.md and report.html, with verified numbers only."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from mlpilot.agents import verifier
from mlpilot.agents.rundir import HISTORY_SVG, REPORT_HTML, REPORT_MD, RunDir
from mlpilot.agents.state import RunState, SandboxInfo
from mlpilot.tools.featurize import formula
from mlpilot.tools.profile import PROBLEM_WORDS

if TYPE_CHECKING:
    from mlpilot.agents.context import RunContext


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
    env.filters["formula"] = formula
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


def write_report(run: RunDir, data: dict[str, Any]) -> tuple[str, str]:
    """Renders report.md and report.html (and history.svg) into the run directory."""
    env = _env()
    svg = data.get("history_svg", "")
    if svg:
        run.write_text(HISTORY_SVG, svg)
    md = env.get_template("report.md.j2").render(**data)
    page = env.get_template("report.html.j2").render(**data)
    run.write_text(REPORT_MD, md)
    run.write_text(REPORT_HTML, page)
    return md, page


def report_data(ctx: RunContext, state: RunState) -> dict[str, Any]:
    """What the report templates show, from the run's state (verified numbers only)."""
    task = ctx.task
    rows = state.get("trials", [])
    checks = state.get("checks", [])
    confirmed = set(state.get("verified", []))
    ordered = sorted([r for r in rows if r.finished], key=lambda r: r.started)
    points = [(i, float(r.cv_score)) for i, r in enumerate(ordered)]  # type: ignore[arg-type]
    best: list[float] = []
    for _, score in points:
        best.append(score if not best or task.metric.better(score, best[-1]) else best[-1])
    final = state["final"]
    hpo = state.get("hpo") or {}
    notes = []
    for family, info in hpo.items():
        llm = info.llm
        if llm and ctx.llm is not None:
            notes.append(
                f"{family}: the LLM proposed {llm['proposed']} configurations, "
                f"{llm['enqueued']} entered the study ({llm['invalid']} invalid, "
                f"{llm['duplicates']} duplicates)"
                + (f"; LLM errors: {'; '.join(llm['llm_errors'][:2])}" if llm["llm_errors"] else "")
            )
    if ctx.llm is None:
        notes.append("no LLM: default plan and plain TPE")
    ok = final.ok and verifier.all_ok(checks)
    return {
        "status_line": (
            f"Status: finished in {ctx.elapsed():.0f} s; every number below was recomputed "
            "on the host."
            if ok
            else "Status: FAILED verification — no model is reported as a success; "
            "see Verification."
        ),
        "request": ctx.request,
        "run_dir": str(ctx.run.path),
        "task": {
            "name": task.name,
            "target": task.target,
            "modality": task.modality,
            "problem": PROBLEM_WORDS[task.problem_type],
            "metric": task.metric.display,
            "direction": "higher" if task.metric.greater_is_better else "lower",
            "n_train": len(task.train),
            "n_holdout": len(task.holdout.features),
            "n_features": len(task.feature_columns),
            "warnings": list(task.warnings),
        },
        "plan": state["plan"],
        "final": final,
        "leaderboard": [r for r in rows if r.finished and r.key in confirmed][:25],
        "failed": [r for r in rows if r.state == "FAIL"],
        "stopped": {f: h.stopped for f, h in hpo.items() if h.stopped},
        "history_svg": history_svg(points, best, f"CV {task.metric.display}"),
        "isolation": _isolation(final.sandbox or SandboxInfo()),
        "reruns": set(state.get("reruns", [])),
        "ensemble": state.get("ensemble"),
        "features": state.get("features"),
        "checks": [c.as_row() for c in checks],
        "usage": ctx.llm.ledger.as_rows() if ctx.llm is not None else [],
        "llm_model": ctx.llm.model if ctx.llm is not None else None,
        "llm_notes": notes,
        "command": ctx.command,
    }


def _isolation(sandbox: SandboxInfo) -> dict[str, str]:
    """What the sandbox's wall did for this run's jobs, in the report's words."""
    from mlpilot.sandbox.isolation import PROMISES

    level = sandbox.isolation
    line = f"Jobs ran with isolation level `{level}`: {PROMISES.get(level, level)}."
    warning = ""
    if level == "none":
        warning = (
            "Generated code and training jobs ran as a plain subprocess: they could read "
            "and write this user's files and reach the network. Install bubblewrap "
            "(`apt-get install bubblewrap`) or use `--sandbox docker` for a real wall."
        )
    return {"level": level, "line": line, "warning": warning}
