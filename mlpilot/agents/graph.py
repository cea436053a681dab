"""The run as a LangGraph: plan -> dispatch -> (hpo | ensemble)* -> finalize -> report.

Nodes are ``State -> partial State``; the task, LLM, sandbox and storage come
through the runtime context. The graph is checkpointed in SQLite after every
node and the Optuna studies live in SQLite too, so a killed run resumes where
it stopped without re-running a finished trial.
"""

from __future__ import annotations

import json
import operator
import shlex
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypedDict

import joblib
import numpy as np
import optuna
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from mlpilot.agents import verifier
from mlpilot.agents.ensemble import Member, greedy_ensemble
from mlpilot.agents.hpo import SOURCE_ATTR, HpoAgent, HpoSettings, trial_cores
from mlpilot.agents.planner import RUNNABLE_STEPS, Plan, default_plan, make_plan
from mlpilot.agents.reporter import history_svg, write_report
from mlpilot.agents.trials import TrialOutcome, TrialRunner, refit
from mlpilot.llm import LLM
from mlpilot.sandbox import Limits, Sandbox
from mlpilot.task import TaskSpec
from mlpilot.tools.metrics import predictions_for
from mlpilot.tools.model import PilotModel, WeightedEnsemble
from mlpilot.tools.profile import PROBLEM_WORDS, profile_frame

ENSEMBLE_MEMBERS = 20  # best trials offered to greedy selection
BUDGET_MARGIN_S = 15.0  # a run may overshoot its budget by this much (refit, report)
PLAN_SHARE = 0.15  # most of the budget the LLM planner may take

Progress = Callable[[str, dict[str, Any]], None]


@dataclass
class RunContext:
    """What every node needs and nothing in the state should hold."""

    task: TaskSpec
    llm: LLM | None
    sandbox: Sandbox
    run_dir: Path
    request: str
    time_budget_s: float
    max_trials: int
    started: float  # time.monotonic() at (re)start
    spent_before_s: float = 0.0  # wall time used by earlier processes of a resumed run
    store: Path | None = None
    hpo_settings: HpoSettings = field(default_factory=HpoSettings)
    progress: Progress | None = None
    command: str = ""

    @property
    def deadline(self) -> float:
        return self.started + self.time_budget_s - self.spent_before_s

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def elapsed(self) -> float:
        return self.spent_before_s + time.monotonic() - self.started

    def emit(self, event: str, **data: Any) -> None:
        if self.progress is not None:
            self.progress(event, data)

    @property
    def storage_url(self) -> str:
        return f"sqlite:///{self.run_dir / 'optuna.db'}"

    @property
    def predictions_dir(self) -> Path:
        return self.run_dir / "predictions"

    @property
    def sandbox_data_dir(self) -> Path:
        """Training features+labels and holdout features, as the sandbox reads them."""
        return self.run_dir / "sandbox-data"


class RunState(TypedDict, total=False):
    plan: dict[str, Any]
    step: int
    hpo: dict[str, Any]
    ensemble: dict[str, Any] | None
    final: dict[str, Any]
    checks: list[dict[str, Any]]
    verified: list[str]  # trial keys whose scores the host recomputed and confirmed
    events: Annotated[list[str], operator.add]
    status: str


# -- nodes ------------------------------------------------------------------------


def plan_node(state: RunState, runtime: Runtime[RunContext]) -> RunState:
    ctx = runtime.context
    task = ctx.task
    profile = profile_frame(
        task.X, task.y, text_columns=task.text_columns, classification=task.is_classification
    )
    # Planning gets a small share of the budget; past it, the default plan is used.
    share = max(10.0, PLAN_SHARE * ctx.time_budget_s)
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(
        make_plan,
        ctx.llm,
        ctx.request,
        task,
        profile,
        time_budget_s=ctx.time_budget_s,
        max_trials=ctx.max_trials,
        store=ctx.store,
        timeout=share,
    )
    pool.shutdown(wait=False)  # a late answer is dropped, never waited for
    try:
        plan = future.result(timeout=share + 5.0)  # the LLM call itself stops at `share`
    except FutureTimeout:
        plan = default_plan(
            task,
            profile,
            time_budget_s=ctx.time_budget_s,
            max_trials=ctx.max_trials,
            reason=f"the LLM did not plan within its {share:.0f} s share of the budget",
        )
    ctx.emit("plan", plan=plan.model_dump())
    return {"plan": plan.model_dump(), "step": 0, "events": [f"planned: {plan.source}"]}


def dispatch_node(state: RunState, runtime: Runtime[RunContext]) -> RunState:
    return {}


def route(state: RunState) -> str:
    plan = Plan.model_validate(state["plan"])
    step = state.get("step", 0)
    while step < len(plan.steps) and plan.steps[step].kind in ("profile",):
        step += 1
    if step >= len(plan.steps):
        return "finalize"
    kind = plan.steps[step].kind
    return kind if kind in RUNNABLE_STEPS else "skip"


def skip_node(state: RunState, runtime: Runtime[RunContext]) -> RunState:
    plan = Plan.model_validate(state["plan"])
    step = _next_runnable(plan, state.get("step", 0))
    kind = plan.steps[step].kind
    return {"step": step + 1, "events": [f"step {kind!r} is not available in this version"]}


def _next_runnable(plan: Plan, step: int) -> int:
    while step < len(plan.steps) and plan.steps[step].kind == "profile":
        step += 1
    return step


def hpo_node(state: RunState, runtime: Runtime[RunContext]) -> RunState:
    ctx = runtime.context
    plan = Plan.model_validate(state["plan"])
    step = _next_runnable(plan, state.get("step", 0))
    families = plan.steps[step].families or plan.families
    runner = TrialRunner(
        ctx.sandbox, ctx.task, limits=_trial_limits(ctx), data_dir=ctx.sandbox_data_dir
    )

    def on_trial(family: str, number: int, outcome: TrialOutcome) -> None:
        ctx.emit(
            "trial",
            family=family,
            number=number,
            ok=outcome.ok,
            score=outcome.cv_score,
            reason=outcome.reason,
        )

    agent = HpoAgent(
        runner,
        ctx.llm,
        storage=ctx.storage_url,
        artifacts=ctx.predictions_dir,
        settings=ctx.hpo_settings,
        on_trial=on_trial,
    )
    # Leave time for ensembling, the refit and the report after the search.
    reserve = min(0.2 * ctx.time_budget_s, 60.0)
    hpo_deadline = ctx.deadline - reserve
    per_family_trials = max(1, plan.max_trials // max(1, len(families)))
    ctx.emit("family", family=", ".join(families), seconds=hpo_deadline - time.monotonic())
    studies = agent.optimize_all(list(families), n_trials=per_family_trials, deadline=hpo_deadline)
    summary: dict[str, Any] = dict(state.get("hpo") or {})
    for family, study in studies.items():
        stats = agent.stats.get(family)
        summary[family] = {
            "trials": sum(1 for t in study.trials if t.state.is_finished()),
            "failed": sum(1 for t in study.trials if t.state == optuna.trial.TrialState.FAIL),
            "best": _best_value(study),
            "llm": None if stats is None else stats.__dict__,
            "stopped": agent.stopped.get(family),
        }
    events = [f"tuned {', '.join(summary)}"]
    events += [f"stopped tuning {f}: {why}" for f, why in agent.stopped.items()]
    return {"hpo": summary, "step": step + 1, "events": events}


def _trial_limits(ctx: RunContext) -> Limits:
    """Trials share the cores with the LLM and with each other: oversubscribed OpenMP
    slows fits a hundredfold."""
    free = trial_cores(with_llm=ctx.llm is not None)
    return Limits(timeout_s=300, cpus=max(1, free // max(1, ctx.hpo_settings.parallel)))


def _best_value(study: optuna.Study) -> float | None:
    try:
        return float(study.best_value)
    except ValueError:
        return None


def _completed(ctx: RunContext) -> list[dict[str, Any]]:
    """Every finished trial of every study in the run, best first."""
    rows = []
    for summary in optuna.get_all_study_summaries(ctx.storage_url):
        study = optuna.load_study(study_name=summary.study_name, storage=ctx.storage_url)
        family = summary.study_name.removeprefix(f"{ctx.task.name}-")
        for t in study.trials:
            row = {
                "key": f"{family}-{t.number}",
                "family": family,
                "number": t.number,
                "params": t.params,
                "source": t.user_attrs.get(SOURCE_ATTR, "tpe"),
                "seconds": float(t.user_attrs.get("seconds", 0.0)),
                "reason": t.user_attrs.get("reason", ""),
                "state": t.state.name,
                "cv_score": t.value if t.state == optuna.trial.TrialState.COMPLETE else None,
                "holdout_score": t.user_attrs.get("holdout_score"),
                "started": t.datetime_start.timestamp() if t.datetime_start else 0.0,
            }
            rows.append(row)
    sign = ctx.task.metric.sign()
    done = [r for r in rows if r["cv_score"] is not None]
    done.sort(key=lambda r: -sign * r["cv_score"])
    return done + [r for r in rows if r["cv_score"] is None and r["state"] == "FAIL"]


def ensemble_node(state: RunState, runtime: Runtime[RunContext]) -> RunState:
    ctx = runtime.context
    plan = Plan.model_validate(state["plan"])
    step = _next_runnable(plan, state.get("step", 0))
    done = [r for r in _completed(ctx) if r["cv_score"] is not None][:ENSEMBLE_MEMBERS]
    members = []
    classes = None
    for row in done:
        path = ctx.predictions_dir / f"{row['key']}.npz"
        if not path.exists():
            continue
        with np.load(path, allow_pickle=False) as saved:
            members.append(Member(row["key"], saved["oof"], saved["holdout_pred"]))
            classes = list(saved["classes"]) or None
    if len(members) < 2:
        return {
            "ensemble": None,
            "step": step + 1,
            "events": ["ensemble skipped: fewer than two finished trials"],
        }
    result = greedy_ensemble(members, ctx.task.y.to_numpy(), ctx.task.metric, classes=classes)
    ctx.emit("ensemble", kept=result.kept, score=result.score)
    data = {
        "kept": result.kept,
        "score": result.score,
        "best_single": result.best_single,
        "best_single_name": result.best_single_name,
        "weights": result.normalized_weights(),
    }
    return {
        "ensemble": data,
        "step": step + 1,
        "events": [f"ensemble {'kept' if result.kept else 'not better than best single'}"],
    }


def finalize_node(state: RunState, runtime: Runtime[RunContext]) -> RunState:
    """Verifies trial scores, refits the winner in the sandbox, checks its holdout score;
    falls back to the next candidate when a check fails."""
    ctx = runtime.context
    task = ctx.task
    rows = _completed(ctx)
    claimed = {r["key"]: r["cv_score"] for r in rows if r["cv_score"] is not None}
    checks, confirmed = verifier.verify_trial_scores(task, claimed, ctx.predictions_dir)
    checks += verifier.check_leakage(task)
    by_key = {r["key"]: r for r in rows}
    candidates: list[tuple[str, dict[str, float], float | None]] = []
    ens = state.get("ensemble")
    if ens and ens["kept"] and set(ens["weights"]) <= confirmed:
        candidates.append(("ensemble", ens["weights"], ens["score"]))
    for key in [r["key"] for r in rows if r["key"] in confirmed][:3]:
        candidates.append((key, {key: 1.0}, by_key[key]["cv_score"]))
    runner = TrialRunner(ctx.sandbox, task, data_dir=ctx.sandbox_data_dir)
    final: dict[str, Any] = {
        "ok": False,
        "description": "no verified model",
        "cv_score": None,
        "holdout_score": None,
    }
    for label, weights, cv_score in candidates:
        model, claimed_holdout, why = _refit_candidate(ctx, runner, weights, by_key)
        if model is None:
            checks.append(verifier.Check(f"refit {label}", False, why))
            continue
        check = verifier.verify_holdout(task, model, claimed_holdout)
        checks.append(check)
        if not check.ok:
            continue  # retried with the next candidate, never reported as a success
        joblib.dump(model, ctx.run_dir / "model.joblib")
        holdout = task.score_holdout(
            predictions_for(task.metric, _raw_predictions(task, model), _classes(task, model))
        )
        final = {
            "ok": True,
            "label": label,
            "weights": weights,
            "cv_score": cv_score,
            "holdout_score": holdout,
            "description": _describe(label, weights, by_key),
        }
        break
    checks.append(verifier.check_budget(ctx.elapsed(), ctx.time_budget_s, BUDGET_MARGIN_S))
    final["sandbox"] = runner.last_sandbox
    return {
        "final": final,
        "checks": [c.as_row() for c in checks],
        "verified": sorted(confirmed),
        "events": [f"final model: {final['description']}"],
    }


def _refit_candidate(
    ctx: RunContext, runner: TrialRunner, weights: dict[str, float], rows: dict[str, Any]
) -> tuple[PilotModel | None, float | None, str]:
    task = ctx.task
    members, holdouts, classes = [], [], None
    for key in weights:
        row = rows[key]
        out = refit(
            runner,
            row["family"],
            row["params"],
            ctx.run_dir / "members" / f"{key}.joblib",
            timeout_s=max(30.0, ctx.remaining() + BUDGET_MARGIN_S),
        )
        if not out.ok:
            return None, None, f"{key}: {out.reason}"
        members.append(joblib.load(out.model_path))  # our own pipeline code, fitted in the sandbox
        holdouts.append(out.holdout_pred)
        classes = out.classes
    w = np.asarray(list(weights.values()), dtype=float)
    estimator = (
        members[0]
        if len(members) == 1
        else WeightedEnsemble(members, list(w), classification=task.is_classification)
    )
    model = PilotModel(estimator, task.feature_columns, task.target, task.problem_type)
    blended = sum(wi * h for wi, h in zip(w / w.sum(), holdouts, strict=True))
    claimed = task.score_holdout(predictions_for(task.metric, blended, classes))
    return model, claimed, ""


def _raw_predictions(task: TaskSpec, model: PilotModel) -> np.ndarray:
    X = task.holdout.features
    return model.predict_proba(X) if task.is_classification else model.predict(X)


def _classes(task: TaskSpec, model: PilotModel) -> list[Any] | None:
    return list(model.classes_) if task.is_classification else None


def _describe(label: str, weights: dict[str, float], rows: dict[str, Any]) -> str:
    if label == "ensemble":
        parts = ", ".join(f"{k} ({w:.2f})" for k, w in weights.items())
        return f"weighted ensemble of {len(weights)} models: {parts}"
    row = rows[label]
    return f"{row['family']} (trial {label}) with {json.dumps(row['params'])}"


def report_node(state: RunState, runtime: Runtime[RunContext]) -> RunState:
    ctx = runtime.context
    data = report_data(ctx, state)
    write_report(ctx.run_dir, data)
    status = "finished" if state["final"]["ok"] else "failed"
    _write_run_json(ctx, state, status)
    ctx.emit("report", path=str(ctx.run_dir / "report.md"))
    return {"status": status, "events": [f"report written ({status})"]}


def report_data(ctx: RunContext, state: RunState) -> dict[str, Any]:
    task = ctx.task
    rows = _completed(ctx)
    checks = state.get("checks", [])
    confirmed = set(state.get("verified", []))
    verified_rows = [r for r in rows if r["cv_score"] is not None and r["key"] in confirmed]
    ordered = sorted([r for r in rows if r["cv_score"] is not None], key=lambda r: r["started"])
    points = [(i, r["cv_score"]) for i, r in enumerate(ordered)]
    best: list[float] = []
    for _, score in points:
        best.append(score if not best or task.metric.better(score, best[-1]) else best[-1])
    final = state["final"]
    plan = state["plan"]
    usage = ctx.llm.ledger.as_rows() if ctx.llm is not None else []
    notes = []
    for family, info in (state.get("hpo") or {}).items():
        llm = info.get("llm")
        if llm and ctx.llm is not None:
            notes.append(
                f"{family}: the LLM proposed {llm['proposed']} configurations, "
                f"{llm['enqueued']} entered the study ({llm['invalid']} invalid, "
                f"{llm['duplicates']} duplicates)"
                + (f"; LLM errors: {'; '.join(llm['llm_errors'][:2])}" if llm["llm_errors"] else "")
            )
    if ctx.llm is None:
        notes.append("no LLM: default plan and plain TPE")
    ok = final["ok"] and verifier.all_ok(
        [verifier.Check(c["check"], c["ok"], c["detail"], c["severity"]) for c in checks]
    )
    return {
        "status_line": (
            f"Status: finished in {ctx.elapsed():.0f} s; every number below was recomputed "
            "on the host."
            if ok
            else "Status: FAILED verification — no model is reported as a success; "
            "see Verification."
        ),
        "request": ctx.request,
        "run_dir": str(ctx.run_dir),
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
        "plan": plan,
        "final": final,
        "leaderboard": verified_rows[:25],
        "failed": [r for r in rows if r["state"] == "FAIL"],
        "stopped": {
            f: h["stopped"] for f, h in (state.get("hpo") or {}).items() if h.get("stopped")
        },
        "history_svg": history_svg(points, best, f"CV {task.metric.display}"),
        "ensemble": state.get("ensemble"),
        "checks": checks,
        "usage": usage,
        "llm_model": ctx.llm.model if ctx.llm is not None else None,
        "llm_notes": notes,
        "command": ctx.command,
    }


def _write_run_json(ctx: RunContext, state: RunState, status: str) -> None:
    path = ctx.run_dir / "run.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    final = state["final"]
    best_family = None
    if final.get("ok"):
        best_family = (
            "ensemble" if final["label"] == "ensemble" else final["label"].rsplit("-", 1)[0]
        )
    data.update(
        status=status,
        spent_s=round(ctx.elapsed(), 1),
        best_family=best_family,
        best_score=final.get("cv_score"),
        holdout_score=final.get("holdout_score"),
        metric=ctx.task.metric.name,
        problem_type=ctx.task.problem_type,
        profile={"n_rows": len(ctx.task.train), "n_features": len(ctx.task.feature_columns)},
    )
    path.write_text(json.dumps(data, indent=2, default=str))


# -- the graph ---------------------------------------------------------------------


def build_graph() -> StateGraph:
    g = StateGraph(RunState, context_schema=RunContext)
    g.add_node("plan", plan_node)
    g.add_node("dispatch", dispatch_node)
    g.add_node("hpo", hpo_node)
    g.add_node("ensemble", ensemble_node)
    g.add_node("skip", skip_node)
    g.add_node("finalize", finalize_node)
    g.add_node("report", report_node)
    g.add_edge(START, "plan")
    g.add_edge("plan", "dispatch")
    g.add_conditional_edges(
        "dispatch",
        route,
        {"hpo": "hpo", "ensemble": "ensemble", "skip": "skip", "finalize": "finalize"},
    )
    for node in ("hpo", "ensemble", "skip"):
        g.add_edge(node, "dispatch")
    g.add_edge("finalize", "report")
    g.add_edge("report", END)
    return g


def run_graph(ctx: RunContext, *, resume: bool = False) -> RunState:
    """Runs (or resumes) the graph with a SQLite checkpointer in the run directory."""
    conn = sqlite3.connect(ctx.run_dir / "checkpoints.db", check_same_thread=False)
    try:
        graph = build_graph().compile(checkpointer=SqliteSaver(conn))
        config = {"configurable": {"thread_id": "run"}, "recursion_limit": 50}
        has_checkpoint = graph.get_state(config).values != {}
        payload = None if (resume and has_checkpoint) else {"events": []}
        return graph.invoke(payload, config, context=ctx)  # type: ignore[return-value]
    finally:
        conn.close()


def command_line(
    request: str, data: str, target: str | None, budget: float, llm: str | None, sandbox: str
) -> str:
    parts = [
        "mlpilot",
        "run",
        request,
        "--data",
        data,
        "--time-budget",
        f"{budget:g}",
        "--sandbox",
        sandbox,
    ]
    if target:
        parts += ["--target", target]
    if llm:
        parts += ["--llm", llm]
    return shlex.join(parts)
