"""Runs (task, runner, seed) cells, grades them, and keeps the results resumable.

Layout of an evaluation folder::

    tasks/public/<task>/    what runners see (train.csv, test.csv, description.md, ...)
    tasks/private/<task>/   the grader's answers; never handed to a runner
    work/<task>/<runner>/seed<k>/   each cell's working folder and submission.csv
    results.jsonl           one row per finished cell (appended as cells finish)
    summary.md, summary.html

A cell already in ``results.jsonl`` (same task, runner, seed and budget) is not run
again, so an interrupted ``mlpilot eval`` continues where it stopped.
"""

from __future__ import annotations

import html
import json
import math
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from mlpilot.evals.grader import MEDALS, grade
from mlpilot.evals.runners import PublicTask, Runner
from mlpilot.evals.tasks import EvalTask, PreparedTask, prepare

RESULTS = "results.jsonl"


@dataclass(frozen=True)
class Cell:
    task: str
    runner: str
    seed: int
    budget: float

    def key(self) -> tuple[str, str, int, float]:
        return (self.task, self.runner, self.seed, float(self.budget))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The rows of a results file; a line torn by a kill mid-write is skipped."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def append_jsonl(path: Path, row: dict[str, Any]) -> None:
    """Appends one row; after a torn last line the row starts on a line of its own."""
    torn = path.exists() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
    with path.open("a") as f:
        f.write(("\n" if torn else "") + json.dumps(row, default=str) + "\n")


def read_results(out: Path) -> list[dict[str, Any]]:
    return read_jsonl(out / RESULTS)


def run_eval(
    tasks: list[EvalTask],
    runners: list[Runner],
    *,
    seeds: Iterable[int],
    budget: float,
    out: Path,
    reference: dict[str, Any],
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Runs every missing cell and returns all rows of this budget (old and new)."""
    out.mkdir(parents=True, exist_ok=True)
    seeds = list(seeds)
    done = {Cell(r["task"], r["runner"], r["seed"], r["budget"]).key() for r in read_results(out)}
    prepared = {t.name: prepare(t, out / "tasks") for t in tasks}
    cells = [Cell(t.name, r.name, s, budget) for t in tasks for r in runners for s in seeds]
    todo = [c for c in cells if c.key() not in done]
    if len(todo) < len(cells):
        log(f"resuming: {len(cells) - len(todo)} of {len(cells)} cells already done")
    by_name = {r.name: r for r in runners}
    for i, cell in enumerate(todo, 1):
        row = run_cell(prepared[cell.task], by_name[cell.runner], cell, out, reference)
        append_jsonl(out / RESULTS, row)
        shown = "invalid" if not row["valid"] else f"{row['score']:.4f}"
        medal = f" {row['medal']}" if row.get("medal") else ""
        log(
            f"[{i}/{len(todo)}] {cell.task} / {cell.runner} / seed {cell.seed}: "
            f"{shown}{medal} ({row['wall_s']:.0f} s){'  ' + row['error'] if row['error'] else ''}"
        )
    keys = {c.key() for c in cells}
    return [
        r
        for r in read_results(out)
        if Cell(r["task"], r["runner"], r["seed"], r["budget"]).key() in keys
    ]


def run_cell(
    prepared: PreparedTask, runner: Runner, cell: Cell, out: Path, reference: dict[str, Any]
) -> dict[str, Any]:
    """Runs one cell in a fresh working folder and grades its submission. A runner that
    fails is an invalid submission with the reason; Ctrl-C is not caught."""
    work = out / "work" / cell.task / cell.runner / f"seed{cell.seed}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    public = PublicTask(prepared.task, prepared.public)
    started = time.perf_counter()
    tokens, cost, error = 0, 0.0, ""
    submission = work / "submission.csv"
    try:
        outcome = runner(public, work, cell.seed, cell.budget)
        submission, tokens, cost = outcome.submission, outcome.tokens, outcome.cost_usd
    except Exception as e:
        error = f"runner failed: {type(e).__name__}: {str(e)[:300]}"
    wall = time.perf_counter() - started
    result = grade(prepared.task, submission, prepared.answers(), reference.get(prepared.task.name))
    return {
        "task": cell.task,
        "runner": cell.runner,
        "seed": cell.seed,
        "budget": cell.budget,
        "metric": prepared.task.metric,
        **result.as_dict(),
        "error": error or result.error,
        "wall_s": round(wall, 2),
        "tokens": tokens,
        "cost_usd": cost,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


# -- summary -------------------------------------------------------------------------


def _mean_se(values: list[float]) -> tuple[float, float]:
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if len(arr) == 0:
        return math.nan, math.nan
    se = float(arr.std(ddof=1) / math.sqrt(len(arr))) if len(arr) > 1 else math.nan
    return float(arr.mean()), se  # one seed: no standard error


def _fmt(mean: float, se: float, digits: int = 4) -> str:
    if math.isnan(mean):
        return "—"
    if math.isnan(se):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {se:.{digits}f}"


def summarise(rows: list[dict[str, Any]], tasks: list[EvalTask]) -> dict[str, Any]:
    """Per-task scores and per-runner aggregates (mean ± standard error over seeds)."""
    runners = list(dict.fromkeys(r["runner"] for r in rows))
    per_task: dict[str, dict[str, dict[str, Any]]] = {}
    for task in tasks:
        per_task[task.name] = {}
        for runner in runners:
            cell = [r for r in rows if r["task"] == task.name and r["runner"] == runner]
            if not cell:
                continue
            mean, se = _mean_se([r["score"] for r in cell if r["valid"]])
            per_task[task.name][runner] = {
                "mean": mean,
                "se": se,
                "n": len(cell),
                "valid": sum(r["valid"] for r in cell),
                "medals": [r.get("medal") for r in cell],
            }
    overall = {}
    for runner in runners:
        mine = [r for r in rows if r["runner"] == runner]
        seeds = sorted({r["seed"] for r in mine})
        # Per seed: the share of tasks with a medal and the mean normalised score; then
        # mean ± standard error over seeds.
        medal_rate, gold_rate, norm = [], [], []
        for seed in seeds:
            these = [r for r in mine if r["seed"] == seed]
            medal_rate.append(float(np.mean([r.get("medal") in MEDALS for r in these])))
            gold_rate.append(float(np.mean([r.get("medal") == "gold" for r in these])))
            # an invalid submission counts as the dummy's score (normalised 0)
            norm.append(
                float(
                    np.mean(
                        [
                            r["normalised"] if r["valid"] and r["normalised"] is not None else 0.0
                            for r in these
                        ]
                    )
                )
            )
        overall[runner] = {
            "cells": len(mine),
            "valid_rate": float(np.mean([r["valid"] for r in mine])),
            "any_medal": _mean_se(medal_rate),
            "gold": _mean_se(gold_rate),
            "normalised": _mean_se(norm),
            "wall_s": float(np.mean([r["wall_s"] for r in mine])),
            "tokens": int(sum(r.get("tokens", 0) for r in mine)),
            "cost_usd": float(sum(r.get("cost_usd", 0.0) for r in mine)),
        }
    return {"runners": runners, "per_task": per_task, "overall": overall}


def summary_tables(
    summary: dict[str, Any], tasks: list[EvalTask]
) -> tuple[list[str], list[list[str]], list[str], list[list[str]]]:
    runners = summary["runners"]
    head1 = [
        "runner",
        "any medal",
        "gold",
        "mean normalised score",
        "valid",
        "mean wall s",
        "tokens",
        "cost $",
    ]
    body1 = []
    for runner in runners:
        o = summary["overall"][runner]
        body1.append(
            [
                runner,
                _fmt(*o["any_medal"], digits=2),
                _fmt(*o["gold"], digits=2),
                _fmt(*o["normalised"], digits=3),
                f"{o['valid_rate']:.0%}",
                f"{o['wall_s']:.0f}",
                str(o["tokens"]),
                f"{o['cost_usd']:.4f}",
            ]
        )
    head2 = ["task (metric)", *runners]
    body2 = []
    for task in tasks:
        cells = summary["per_task"].get(task.name, {})
        row = [
            f"{task.name} ({task.scorer.display}, {'↑' if task.scorer.greater_is_better else '↓'})"
        ]
        for runner in runners:
            c = cells.get(runner)
            if c is None:
                row.append("")
                continue
            medals = ", ".join(sorted({m for m in c["medals"] if m}, key=MEDALS.index))
            invalid = f" ({c['n'] - c['valid']} invalid)" if c["valid"] < c["n"] else ""
            row.append(_fmt(c["mean"], c["se"]) + (f" [{medals}]" if medals else "") + invalid)
        body2.append(row)
    return head1, body1, head2, body2


def write_summary(out: Path, rows: list[dict[str, Any]], tasks: list[EvalTask], title: str) -> str:
    """Writes summary.md and summary.html; returns the markdown."""
    summary = summarise(rows, tasks)
    head1, body1, head2, body2 = summary_tables(summary, tasks)
    seeds = sorted({r["seed"] for r in rows})
    budgets = sorted({r["budget"] for r in rows})
    intro = (
        f"{len(tasks)} tasks, seeds {seeds}, budget {', '.join(f'{b:g}' for b in budgets)} s per "
        "cell. Rates and scores are mean ± standard error over seeds; a medal compares a "
        "test score with the task's reference pool (gold: at least its best run, silver: "
        "its 75th percentile, bronze: its median); normalised score: 0 = constant predictor, "
        "1 = the pool's best run; an invalid submission counts as 0."
    )
    md = [
        f"# {title}",
        "",
        intro,
        "",
        *_md(head1, body1),
        "",
        "## Test score per task",
        "",
        *_md(head2, body2),
        "",
    ]
    text = "\n".join(md)
    (out / "summary.md").write_text(text)
    page = (
        "<!doctype html><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:80em}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
        "padding:.3em .6em;text-align:right}td:first-child,th:first-child{text-align:left}"
        "</style>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(intro)}</p>"
        f"{_html(head1, body1)}<h2>Test score per task</h2>{_html(head2, body2)}"
    )
    (out / "summary.html").write_text(page)
    return text


def _md(head: list[str], body: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(row) + " |" for row in body),
    ]


def _html(head: list[str], body: list[list[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    trs = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body
    )
    return f"<table><tr>{th}</tr>{trs}</table>"
