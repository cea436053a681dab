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
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypedDict

import numpy as np
import optuna
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from mlpilot.agents import leakage, verifier
from mlpilot.agents.ensemble import Member, greedy_ensemble
from mlpilot.agents.hpo import SOURCE_ATTR, HpoAgent, HpoSettings, trial_cores
from mlpilot.agents.planner import RUNNABLE_STEPS, Plan, default_plan, make_plan
from mlpilot.agents.reporter import history_svg, write_report
from mlpilot.agents.trials import TrialOutcome, TrialRunner
from mlpilot.llm import LLM
from mlpilot.sandbox import Limits, Sandbox
from mlpilot.task import TaskSpec
from mlpilot.tools import model_io
from mlpilot.tools.metrics import predictions_for
from mlpilot.tools.model import PilotModel, WeightedEnsemble
from mlpilot.tools.profile import PROBLEM_WORDS, profile_frame

ENSEMBLE_MEMBERS = 20  # best trials offered to greedy selection
FINAL_SINGLES = 3  # single trials refit as the final model after the ensemble, at most
MAX_RERUN_SINGLES = 10  # single trials whose CV may be re-run fold by fold, at most
LEAK_REVIEW_S = 30.0  # most seconds the LLM's leakage review may take
JOB_OVERHEAD_S = 0.3  # a warm sandbox job's start, data and clean-up, beyond its fits
MODEL_FILE = model_io.MODEL_FILE  # the delivered model, in the run directory
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
    trial_code: str | None = None  # the trial job's source; None: mlpilot's CV job

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
    verified: list[str]  # finished trials' keys, less those a fold-by-fold re-run refuted
    reruns: list[str]  # the final candidates whose fold-by-fold re-run agreed
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
        ctx.sandbox,
        ctx.task,
        limits=_trial_limits(ctx),
        data_dir=ctx.sandbox_data_dir,
        code=ctx.trial_code,
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
    free = trial_cores(local_llm=ctx.llm is not None and ctx.llm.runs_locally)
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
    """Re-runs the final candidates' CV fold by fold, refits the first that holds in the
    sandbox and checks its holdout score; falls back to the next candidate when a
    check fails."""
    ctx = runtime.context
    task = ctx.task
    rows = _completed(ctx)
    review = _start_leak_review(ctx)  # the LLM reads the columns while candidates re-run
    checks = [verifier.check_claims(rows)]
    by_key = {r["key"]: r for r in rows}
    candidates: list[tuple[str, dict[str, float], float | None]] = []
    ens = state.get("ensemble")
    if ens and ens["kept"]:
        candidates.append(("ensemble", ens["weights"], ens["score"]))
    for row in [r for r in rows if r["cv_score"] is not None][:MAX_RERUN_SINGLES]:
        candidates.append((row["key"], {row["key"]: 1.0}, row["cv_score"]))
    refits = 0
    runner = TrialRunner(ctx.sandbox, task, data_dir=ctx.sandbox_data_dir, code=ctx.trial_code)
    verdicts: dict[str, verifier.RerunVerdict] = {}
    final: dict[str, Any] = {
        "ok": False,
        "description": "no verified model",
        "cv_score": None,
        "holdout_score": None,
    }
    skipped: list[str] = []
    for label, weights, cv_score in candidates:
        cost = _verification_cost(weights, by_key, verdicts, runner.folds)
        # Singles are tried until one holds, whatever the time; others only if they fit.
        if label == "ensemble" and cost > ctx.remaining() + BUDGET_MARGIN_S / 2:
            skipped.append(
                f"the ensemble was not re-run (about {cost:.0f} s of jobs, "
                f"{max(0.0, ctx.remaining()):.0f} s left)"
            )
            continue
        for key in weights:
            if key not in verdicts:
                row = by_key[key]
                rerun = runner.refold(
                    row["family"],
                    row["params"],
                    timeout_s=max(30.0, ctx.remaining() + BUDGET_MARGIN_S),
                    workers=ctx.hpo_settings.parallel,
                )
                verdicts[key] = verifier.judge_rerun(key, row["cv_score"], rerun)
                ctx.emit("rerun", key=key, ok=verdicts[key].ok)
        if not all(verdicts[key].ok for key in weights):
            continue  # never reported: the next candidate is tried
        if refits > FINAL_SINGLES:
            break
        refits += 1
        model, claimed_holdout, why = _refit_candidate(ctx, runner, weights, by_key)
        if model is None:
            checks.append(verifier.Check(f"refit {label}", False, why))
            continue
        check = verifier.verify_holdout(task, model, claimed_holdout)
        checks.append(check)
        if not check.ok:
            continue  # retried with the next candidate, never reported as a success
        model_io.dump(model, ctx.run_dir / MODEL_FILE)
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
    checks.append(verifier.check_reruns(list(verdicts.values()), skipped))
    strength = _model_strength(ctx, [r for r in rows if r["cv_score"] is not None])
    findings = leakage.find_leaks(task, model=strength) + review(ctx.remaining())
    checks.append(leakage.leakage_check(findings, rerun=ctx.command))
    checks.append(verifier.check_budget(ctx.elapsed(), ctx.time_budget_s, BUDGET_MARGIN_S))
    final["sandbox"] = runner.last_sandbox
    excluded = {k for k, v in verdicts.items() if not v.ok}
    return {
        "final": final,
        "checks": [c.as_row() for c in checks],
        "verified": sorted(
            r["key"] for r in rows if r["cv_score"] is not None and r["key"] not in excluded
        ),
        "reruns": sorted(k for k, v in verdicts.items() if v.ok),
        "events": [f"final model: {final['description']}"],
    }


def _verification_cost(
    weights: dict[str, float],
    rows: dict[str, Any],
    verdicts: dict[str, verifier.RerunVerdict],
    folds: int,
) -> float:
    """Seconds of sandbox jobs a candidate still needs: a fold-by-fold re-run of each
    member not yet re-run (about one trial's time, in ``folds`` jobs) and a refit of
    every member (about one fold's, in one job)."""
    rerun = sum(rows[k]["seconds"] + folds * JOB_OVERHEAD_S for k in weights if k not in verdicts)
    refit = sum(rows[k]["seconds"] / (folds + 1) + JOB_OVERHEAD_S for k in weights)
    return rerun + refit


def _start_leak_review(ctx: RunContext) -> Callable[[float], list[leakage.Finding]]:
    """Starts the LLM's leakage review in the background; the returned function waits
    for it at most the given seconds (a late or missing answer adds nothing)."""
    llm = ctx.llm
    if llm is None or not llm.available:
        return lambda _: []
    found: list[leakage.Finding] = []
    crashed: list[BaseException] = []
    timeout = max(5.0, min(LEAK_REVIEW_S, ctx.remaining() + BUDGET_MARGIN_S))

    def work() -> None:
        try:
            found.extend(leakage.ask_llm(llm, ctx.task, timeout=timeout))
        except BaseException as e:  # a bug, or a test double's alarm: surfaced below
            crashed.append(e)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()

    def wait(seconds: float) -> list[leakage.Finding]:
        thread.join(timeout=max(1.0, seconds + BUDGET_MARGIN_S))
        if crashed:
            raise crashed[0]
        return list(found) if not thread.is_alive() else []

    return wait


def _model_strength(ctx: RunContext, done: list[dict[str, Any]]) -> float | None:
    """The best trial's strength (see :func:`leakage.model_strength`), from its saved
    out-of-fold predictions."""
    if not done:
        return None
    path = ctx.predictions_dir / f"{done[0]['key']}.npz"
    try:
        with np.load(path, allow_pickle=False) as saved:
            oof, classes = saved["oof"], list(saved["classes"]) or None
    except (OSError, KeyError, ValueError):
        return None
    return leakage.model_strength(ctx.task.y, oof, classes, ctx.task.problem_type)


def _refit_candidate(
    ctx: RunContext, runner: TrialRunner, weights: dict[str, float], rows: dict[str, Any]
) -> tuple[PilotModel | None, float | None, str]:
    task = ctx.task
    members, holdouts, classes = [], [], None
    for key in weights:
        row = rows[key]
        out = runner.refit(
            row["family"],
            row["params"],
            timeout_s=max(30.0, ctx.remaining() + BUDGET_MARGIN_S),
        )
        if not out.ok:
            return None, None, f"{key}: {out.reason}"
        members.append(out.model)  # built from a skops file of trusted types only
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
        "isolation": _isolation(final.get("sandbox") or {}),
        "reruns": set(state.get("reruns", [])),
        "ensemble": state.get("ensemble"),
        "checks": checks,
        "usage": usage,
        "llm_model": ctx.llm.model if ctx.llm is not None else None,
        "llm_notes": notes,
        "command": ctx.command,
    }


def _isolation(sandbox: dict[str, Any]) -> dict[str, str]:
    """What the sandbox's wall did for this run's jobs, in the report's words."""
    from mlpilot.sandbox.isolation import PROMISES

    level = sandbox.get("isolation", "none")
    line = f"Jobs ran with isolation level `{level}`: {PROMISES.get(level, level)}."
    warning = ""
    if level == "none":
        warning = (
            "Generated code and training jobs ran as a plain subprocess: they could read "
            "and write this user's files and reach the network. Install bubblewrap "
            "(`apt-get install bubblewrap`) or use `--sandbox docker` for a real wall."
        )
    return {"level": level, "line": line, "warning": warning}


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
    request: str,
    data: str,
    target: str | None,
    budget: float,
    llm: str | None,
    sandbox: str,
    *,
    drop: Sequence[str] = (),
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
    for column in drop:
        parts += ["--drop", column]
    return shlex.join(parts)
