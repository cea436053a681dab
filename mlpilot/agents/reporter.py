"""The run report: report.md and report.html, with verified numbers only."""

from __future__ import annotations

import contextlib
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from jinja2 import Environment, PackageLoader, StrictUndefined

from mlpilot.agents import plots, verifier
from mlpilot.agents.rundir import REPORT_HTML, REPORT_MD, USAGE_JSON, RunDir, task_of
from mlpilot.agents.state import RunState, SandboxInfo
from mlpilot.errors import ConfigError
from mlpilot.task import TaskSpec
from mlpilot.tools.featurize import formula
from mlpilot.tools.profile import PROBLEM_WORDS
from mlpilot.tools.subnets import SubNet

if TYPE_CHECKING:
    from mlpilot.agents.context import RunContext


NO_LLM_NOTE = "no LLM: default plan and plain TPE"


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


def write_report(run: RunDir, data: dict[str, Any]) -> tuple[str, str]:
    """Draws the plots and renders report.md (which links them) and report.html (which
    holds them, so it opens offline on its own) into the run directory."""
    env = _env()
    data = dict(data)
    inputs = data.pop("plot_inputs", None)
    drawn, problems = plots.draw_all(run.path, inputs) if inputs is not None else ([], [])
    if data.get("nas"):
        drawn = _nas_plots(run, data["nas"], problems) + drawn
    data["plots"] = [{"file": p.file, "title": p.title, "uri": p.data_uri(run.path)} for p in drawn]
    data["plot_problems"] = problems
    md = env.get_template("report.md.j2").render(**data)
    page = env.get_template("report.html.j2").render(**data)
    run.write_text(REPORT_MD, md)
    run.write_text(REPORT_HTML, page)
    return md, page


def _nas_plots(run: RunDir, nas: dict[str, Any], problems: list[str]) -> list[plots.Plot]:
    """The pruning step's Pareto fronts: validation error against size and latency."""
    out = []
    for objective, file, xlabel, title in (
        (
            "params",
            "plot-nas-params.png",
            "encoder parameters / full",
            "Pareto front: error vs size",
        ),
        ("latency", "plot-nas-latency.png", "CPU latency / full", "Pareto front: error vs latency"),
    ):
        key = "params_ratio" if objective == "params" else "latency_ratio"
        fronts = {
            name: [(c[key], c["error"]) for c in cands] for name, cands in nas["sources"].items()
        }
        chosen = (nas["chosen"][key], nas["chosen"]["error"])
        try:
            plots.pareto_plot(run.path / file, fronts, xlabel=xlabel, chosen=chosen, title=title)
            out.append(plots.Plot(file, title))
        except Exception as e:  # a plot is never worth a failed report
            problems.append(f"{title}: {type(e).__name__}: {e}"[:200])
    return out


def nas_view(state: RunState) -> dict[str, Any] | None:
    """The pruning step's numbers for the report: the Pareto sub-networks, the chosen
    one and why, each method's hypervolume, the host's measurements."""
    from mlpilot.tools.pareto import pareto_mask

    nas = state.get("nas")
    if nas is None:
        return None
    cands = nas.candidates
    mask = pareto_mask([(c["error"], c["params_ratio"]) for c in cands]) if cands else []
    front = sorted(
        (c for c, keep in zip(cands, mask, strict=True) if keep), key=lambda c: c["params_ratio"]
    )
    return {
        "column": nas.text_column,
        "device": nas.device,
        "why": nas.why,
        "full": nas.full,
        "chosen": nas.chosen,
        "front": [{**c, "describe": SubNet.from_dict(c["subnet"]).describe()} for c in front],
        "sources": {f"search ({nas.settings.get('method', '')})": cands, **nas.baselines},
        "hypervolume": nas.hypervolume,
        "reference_point": nas.reference_point,
        "seconds": nas.seconds,
        "host": nas.host,
        "evaluations": len(cands),
        "settings": nas.settings,
    }


@dataclass
class ReportSource:
    """What a report is rendered from beside the run's state: the run's context while
    it runs, or its directory read back (``mlpilot report RUN`` re-renders one).

    Attributes:
        usage: the LLM's ledger rows (per role, total last); empty without an LLM.
        llm_model: the LLM's model name; None for a run without an LLM.
    """

    task: TaskSpec
    run: RunDir
    request: str
    command: str
    elapsed_s: float
    usage: list[dict[str, Any]] = field(default_factory=list)
    llm_model: str | None = None

    @classmethod
    def of(cls, ctx: RunContext) -> ReportSource:
        return cls(
            task=ctx.task,
            run=ctx.run,
            request=ctx.request,
            command=ctx.command,
            elapsed_s=ctx.elapsed(),
            usage=ctx.llm.ledger.as_rows() if ctx.llm is not None else [],
            llm_model=ctx.llm.model if ctx.llm is not None else None,
        )


def report_data(ctx: RunContext | ReportSource, state: RunState) -> dict[str, Any]:
    """What the report templates show, from the run's state (verified numbers only)."""
    ctx = ctx if isinstance(ctx, ReportSource) else ReportSource.of(ctx)
    task = ctx.task
    rows = state.get("trials", [])
    checks = state.get("checks", [])
    confirmed = set(state.get("verified", []))
    final = state["final"]
    hpo = state.get("hpo") or {}
    notes = []
    for family, info in hpo.items():
        llm = info.llm
        if llm and ctx.llm_model is not None:
            notes.append(
                f"{family}: the LLM proposed {llm['proposed']} configurations, "
                f"{llm['enqueued']} entered the study ({llm['invalid']} invalid, "
                f"{llm['duplicates']} duplicates)"
                + (f"; LLM errors: {'; '.join(llm['llm_errors'][:2])}" if llm["llm_errors"] else "")
            )
    if ctx.llm_model is None:
        why = ctx.run.meta().llm_note if ctx.run.exists() else ""
        notes.append(f"{why}; default plan and plain TPE" if why else NO_LLM_NOTE)
    ok = final.ok and verifier.all_ok(checks)
    return {
        "status_line": (
            f"Status: finished in {ctx.elapsed_s:.0f} s; every number below was recomputed "
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
        "pruned": [r for r in rows if r.state == "PRUNED"],
        "stopped": {f: h.stopped for f, h in hpo.items() if h.stopped},
        "plot_inputs": plot_inputs(ctx, state),
        "isolation": _isolation(final.sandbox or SandboxInfo()),
        "reruns": set(state.get("reruns", [])),
        "ensemble": state.get("ensemble"),
        "features": state.get("features"),
        "nas": nas_view(state),
        "checks": [c.as_row() for c in checks],
        "usage": ctx.usage,
        "llm_model": ctx.llm_model,
        "llm_notes": notes,
        "command": ctx.command,
    }


def plot_inputs(ctx: ReportSource, state: RunState) -> plots.PlotInputs:
    """The numbers the plots show, computed on the host: the finished trials, each
    study's parameter importances, the scored model's predictions on the holdout rows
    (the model that did not see them) and its permutation importances, the final
    model's weights, the LLM's seconds per role and the feature step's gains."""
    from mlpilot.tools import model_io
    from mlpilot.tools.metrics import predictions_for

    task = ctx.task
    rows = sorted((r for r in state.get("trials", []) if r.finished), key=lambda r: r.started)
    final = state["final"]
    data = plots.PlotInputs(
        metric=task.metric.display,
        greater_is_better=task.metric.greater_is_better,
        problem=task.problem_type,
        trials=[(r.family, r.started, float(r.cv_score)) for r in rows],  # type: ignore[arg-type]
    )
    families = list(dict.fromkeys(r.family for r in rows))
    studies = {f: f"{task.name}-{f}" for f in families}
    with contextlib.suppress(Exception):  # an importance is a nicety, never a failure
        data.importances = plots.param_importances(ctx.run.storage_url, studies)
    scored = ctx.run.train_model_path if ctx.run.train_model_path.exists() else ctx.run.model_path
    if final.ok and scored.exists():
        model = model_io.load(scored, what="the scored model")
        X = task.holdout.features.reset_index(drop=True)
        y = np.asarray(task.holdout._labels)
        classes = list(model.classes_) if task.is_classification else None
        raw = model.predict_proba(X) if task.is_classification else model.predict(X)
        data.y_true, data.predicted, data.classes = y, np.asarray(raw), classes

        def score(frame: Any) -> float:
            out = model.predict_proba(frame) if task.is_classification else model.predict(frame)
            truth = y[frame.index.to_numpy()]
            return float(task.metric(truth, predictions_for(task.metric, out, classes)))

        with contextlib.suppress(Exception):
            data.feature_drops = plots.permutation_drops(
                score, X, task.metric.greater_is_better, seed=task.seed
            )
        if len(final.weights) > 1:
            data.ensemble = dict(final.weights)
    if ctx.llm_model is not None:
        data.llm_seconds = {
            str(u["role"]): float(u["latency_s"]) for u in ctx.usage if u["role"] != "total"
        }
    features = state.get("features")
    if features is not None:
        data.feature_gains = [
            (r.formula, float(r.gain), float(r.se or 0.0), r.verdict)
            for r in features.records
            if r.gain is not None
        ]
    return data


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


def rerender(run_dir: Path) -> Path:
    """Renders a finished run's report again from what its directory holds (the last
    checkpointed state, run.json, the LLM's usage, the data file for the holdout rows):
    after an upgrade, or when report files were deleted. Returns report.html's path.

    Raises:
        ConfigError: the directory holds no finished run, or its data file is gone.
    """
    from mlpilot.agents.graph import command_of, saved_state

    run = RunDir(run_dir)
    meta = run.meta()
    state = saved_state(run.path)
    if "final" not in state or "plan" not in state:
        raise ConfigError(f"{run.path} has no finished run to report on (status {meta.status})")
    try:
        task = task_of(meta)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot re-read the run's data {meta.data!r}: {e}") from e
    usage_file = run.path / USAGE_JSON
    usage = json.loads(usage_file.read_text(encoding="utf-8")) if usage_file.is_file() else []
    named = [str(r["model"]) for r in usage if r.get("role") == "total" and r.get("model")]
    model = named[0] if named else (None if meta.no_llm else (meta.llm or "embedded"))
    source = ReportSource(
        task=task,
        run=run,
        request=meta.request,
        command=command_of(meta, meta.sandbox),
        elapsed_s=meta.spent_s,
        usage=usage,
        llm_model=model if usage else None,
    )
    write_report(run, report_data(source, state))
    return run.path / REPORT_HTML
