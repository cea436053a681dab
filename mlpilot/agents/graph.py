"""The run as a LangGraph: plan -> (features | hpo | ensemble)* -> finalize -> report.

Nodes are ``RunState -> partial RunState`` (typed: :mod:`mlpilot.agents.state`);
the task, LLM, sandbox and run directory come through the runtime context
(:class:`~mlpilot.agents.context.RunContext`). The graph is checkpointed in SQLite
after every node and the Optuna studies live in SQLite too, so a killed run
resumes where it stopped without re-running a finished trial.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import sqlite3
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

import optuna
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from mlpilot.agents import stacking
from mlpilot.agents.context import RunContext
from mlpilot.agents.ensemble import Member, greedy_ensemble
from mlpilot.agents.feature_eval import Evaluator
from mlpilot.agents.features import FeatureAgent, evaluator_family
from mlpilot.agents.finalize import (
    all_rows_cost,
    final_time_left,
    finalize_node,
    finish_seconds,
    rows_ratio,
    start_leak_review,
    verification_cost,
)
from mlpilot.agents.hpo import HpoAgent, trial_cores, trial_limits, trial_rows
from mlpilot.agents.nas_step import nas_finalize_node, nas_prune_node
from mlpilot.agents.planner import (
    FEATURES_SHARE,
    Plan,
    default_plan,
    feature_step,
    make_plan,
    pruning_plan,
    with_feature_step,
)
from mlpilot.agents.reporter import report_data, write_report
from mlpilot.agents.rundir import CHECKPOINTS_DB, USAGE_JSON, RunMeta
from mlpilot.agents.state import (
    CHECKPOINT_TYPES,
    EnsembleSummary,
    FamilySummary,
    FeatureSummary,
    RunState,
)
from mlpilot.agents.trials import TrialOutcome, TrialRunner
from mlpilot.llm.embedded import cores_to_itself
from mlpilot.sandbox import Limits
from mlpilot.tools import combiners, model_io
from mlpilot.tools.featurize import formula
from mlpilot.tools.profile import profile_frame

# Best trials offered to greedy selection and the combiners. Each member of the delivered
# ensemble is re-run fold by fold and refit twice in the sandbox: with 20, a 400 s run on
# 300 rows spent 215 s after its search on 60 such jobs for the neural ensembler.
ENSEMBLE_MEMBERS = 8
ENSEMBLE_SHARE = 0.25  # of the time left, what comparing the combiners may take
ENSEMBLE_SAFETY_S = 1.0  # between choosing the ensemble and checking its re-runs' time
PLAN_SHARE = 0.15  # most of the budget the LLM planner may take
HPO_RESERVE = 0.2  # share of the budget kept for what follows the search, within:
# at least what ensembling, one candidate's fold-by-fold re-run, its two refits and the
# report took at a 40 s budget on two cores (about 12 s), at most 60 s
HPO_RESERVE_S = (12.0, 60.0)


def plan_node(state: RunState, runtime: Runtime[RunContext]) -> RunState:
    ctx = runtime.context
    task = ctx.task
    profile = profile_frame(
        task.X, task.y, text_columns=task.text_columns, classification=task.is_classification
    )
    if ctx.llm is not None:
        # The model's load (begun with the run) is not the planner's share: every LLM
        # step needs it, and on two cores it takes 3-5 s of the 18 s of a 120 s run.
        ctx.llm.warm_up()
    pruning = pruning_plan(
        ctx.request, task, time_budget_s=ctx.time_budget_s, max_trials=ctx.max_trials
    )
    if pruning is not None:  # the request names the step and its constraint
        ctx.emit("plan", plan=pruning.model_dump())
        return {"plan": pruning, "step": 0, "events": ["planned: pruning, from the request"]}
    # Planning gets a small share of the budget; past it, the default plan is used.
    share = max(10.0, PLAN_SHARE * ctx.time_budget_s)
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(
        _plan_alone,
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
    step, note = feature_step(
        ctx.request,
        task,
        description=ctx.description,
        has_llm=ctx.llm is not None,
        time_budget_s=ctx.time_budget_s,
        choice=ctx.features,
    )
    plan = with_feature_step(plan, step, note)
    ctx.emit("plan", plan=plan.model_dump())
    return {"plan": plan, "step": 0, "events": [f"planned: {plan.source}"]}


def _plan_alone(*args: Any, **kwargs: Any) -> Plan:
    """make_plan, with the cores to the LLM: no job runs until the plan is in."""
    with cores_to_itself():
        return make_plan(*args, **kwargs)


def features_node(state: RunState, runtime: Runtime[RunContext]) -> RunState:
    ctx = runtime.context
    plan, step = state["plan"], state.get("step", 0)
    share = plan.steps[step].share or FEATURES_SHARE
    deadline = min(time.monotonic() + share * ctx.time_budget_s, ctx.deadline - 30.0)
    if ctx.llm is None:  # a resumed run whose LLM is gone: tune on the data as it is
        summary = FeatureSummary(stopped="no LLM when the step ran (a resumed run)")
        return {"features": summary, "step": step + 1, "events": ["features: no LLM"]}
    free = trial_cores(local_llm=False)  # the LLM waits while the evaluation runs
    evaluator = Evaluator(
        ctx.sandbox,
        ctx.task,
        evaluator_family(list(plan.families)),
        limits=Limits(timeout_s=120, cpus=free),
    )

    def on_round(summary: FeatureSummary) -> None:
        ctx.emit(
            "features",
            round=summary.rounds,
            kept=[formula(f) for f in summary.kept],
            score=summary.score,
        )

    summary = FeatureAgent(
        ctx.llm,
        evaluator,
        ctx.task,
        request=ctx.request,
        description=ctx.description,
        run_dir=ctx.run,
        on_round=on_round,
    ).run(deadline)
    kept = ", ".join(formula(f) for f in summary.kept) or "none"
    return {
        "features": summary,
        "step": step + 1,
        "events": [f"features: {summary.rounds} rounds, kept {kept} ({summary.stopped})"],
    }


def route(state: RunState) -> str:
    """The node of the plan's next step, or the finalize node when every step has run
    (a pruning plan's own: its model is the pruned transformer, not a trial)."""
    plan, step = state["plan"], state.get("step", 0)
    if step < len(plan.steps):
        return plan.steps[step].kind
    return "nas_finalize" if any(s.kind == "nas_prune" for s in plan.steps) else "finalize"


def hpo_node(state: RunState, runtime: Runtime[RunContext]) -> RunState:
    ctx = runtime.context
    plan, step = state["plan"], state.get("step", 0)
    families = plan.steps[step].families or plan.families
    features = state.get("features")
    runner = TrialRunner(
        ctx.sandbox,
        ctx.task,
        limits=_trial_limits(ctx),
        data_dir=ctx.run.sandbox_data,
        code=ctx.trial_code,
        folds=ctx.hpo_settings.folds,
        features=features.features if features is not None else None,
    )

    def on_trial(family: str, number: int, outcome: TrialOutcome) -> None:
        ctx.emit(
            "trial",
            family=family,
            number=number,
            ok=outcome.ok,
            pruned=outcome.pruned,
            score=outcome.cv_score,
            reason=outcome.reason,
        )

    agent = HpoAgent(
        runner,
        ctx.llm,
        storage=ctx.run.storage_url,
        run_dir=ctx.run,
        settings=ctx.hpo_settings,
        on_trial=on_trial,
    )
    if ctx.llm is not None and ctx.llm.runs_locally and ctx.leak_review is None:
        # a local model reads the leakage review's prompt beside the trials, once the
        # warm starts are in (see finalize.start_leak_review)
        ctx.leak_review = start_leak_review(ctx, after=agent.trials_started)
    # Leave time for ensembling, the fold-by-fold re-runs, the refits and the report: a
    # share of the budget, or more once the best trial shows these take longer
    low, high = HPO_RESERVE_S
    reserve = min(max(HPO_RESERVE * ctx.time_budget_s, low), high)
    ratio = rows_ratio(ctx.task)

    def hpo_deadline() -> float:
        best = agent.best_trial_seconds
        if best is None:
            return ctx.deadline - reserve
        after = finish_seconds(best, runner.folds, ctx.hpo_settings.parallel, ratio)
        return ctx.deadline - max(reserve, after)

    per_family_trials = max(1, plan.max_trials // max(1, len(families)))
    ctx.emit("family", family=", ".join(families), seconds=hpo_deadline() - time.monotonic())
    studies = agent.optimize_all(list(families), n_trials=per_family_trials, deadline=hpo_deadline)
    summary = dict(state.get("hpo") or {})
    for family, study in studies.items():
        stats = agent.stats.get(family)
        summary[family] = FamilySummary(
            trials=sum(1 for t in study.trials if t.state.is_finished()),
            failed=sum(1 for t in study.trials if t.state == optuna.trial.TrialState.FAIL),
            pruned=sum(1 for t in study.trials if t.state == optuna.trial.TrialState.PRUNED),
            best=_best_value(study),
            llm=None if stats is None else dict(stats.__dict__),
            stopped=agent.stopped.get(family),
        )
    # skops (the refit models' format) takes ~2 s to import, torch included: while the
    # ensemble is chosen rather than in the final step (and not at the start, where it
    # would compete with the LLM's planning). The sandbox's warm workers import it too,
    # once each, instead of every refit job paying it (the final step's refits on the
    # training rows and on all rows: six jobs for a three-member ensemble).
    model_io.preload()
    ctx.sandbox.warm_up(["skops.io"])
    events = [f"tuned {', '.join(summary)}"]
    if agent.upfront_waited_s >= 0.5:
        events.append(
            f"waited {agent.upfront_waited_s:.0f} s for the LLM's warm starts before the "
            "first trial (a local LLM generates fastest with the cores to itself)"
        )
    events += [f"stopped tuning {f}: {why}" for f, why in agent.stopped.items()]
    return {"hpo": summary, "step": step + 1, "events": events}


def _trial_limits(ctx: RunContext) -> Limits:
    local_llm = ctx.llm is not None and ctx.llm.runs_locally
    return trial_limits(ctx.hpo_settings.parallel, local_llm=local_llm)


def _best_value(study: optuna.Study) -> float | None:
    try:
        return float(study.best_value)
    except ValueError:
        return None


def affordable_members(
    ranked: Sequence[str],
    seconds: dict[str, float | None],
    budget_s: float,
    *,
    folds: int,
    workers: int,
    all_rows_ratio: float = 0.0,
) -> list[str]:
    """The trials of ``ranked`` (in that order, repeats ignored) taken while the
    fold-by-fold re-run and refit of all taken so far, and their refit on all rows
    (``all_rows_ratio`` times the training rows; 0: none), fit in ``budget_s`` (as the final
    step estimates them); the first is always taken."""
    taken: list[str] = []
    for key in dict.fromkeys(ranked):
        trial = [float(seconds.get(k) or 0.0) for k in [*taken, key]]
        cost = verification_cost(trial, trial, folds, workers)
        if all_rows_ratio:
            cost += all_rows_cost(trial, folds, workers, all_rows_ratio)
        if taken and cost > budget_s:
            break
        taken.append(key)
    return taken


def ensemble_node(state: RunState, runtime: Runtime[RunContext]) -> RunState:
    ctx = runtime.context
    step = state.get("step", 0)
    done = [r for r in trial_rows(ctx.run.storage_url, ctx.task) if r.finished]
    members, classes = [], None
    for row in done[:ENSEMBLE_MEMBERS]:
        saved = ctx.run.load_predictions(row.key)
        if saved is None:
            continue
        oof, holdout, classes = saved
        members.append(Member(row.key, oof, holdout))
    if len(members) < 2:
        return {
            "ensemble": None,
            "step": step + 1,
            "events": ["ensemble skipped: fewer than two finished trials"],
        }
    task = ctx.task
    y = task.y.to_numpy()
    result = greedy_ensemble(members, y, task.metric, classes=classes)
    choice = stacking.choose(
        members,
        y,
        task.metric,
        classes=classes,
        classification=task.is_classification,
        deadline=time.monotonic() + max(0.0, ENSEMBLE_SHARE * ctx.remaining()),
    )
    # The final step re-runs every member fold by fold before it delivers the ensemble,
    # and skips an ensemble whose re-runs do not fit the time left (at 60 s, most did):
    # greedy selection keeps to the members whose re-runs fit, best single first.
    note, unaffordable = choice.note, False
    seconds = {r.key: r.seconds for r in done}
    budget_s = final_time_left(ctx) - ENSEMBLE_SAFETY_S
    workers, folds = ctx.hpo_settings.parallel, ctx.hpo_settings.folds
    # an ensemble's members are kept to what leaves time for their refit on all rows too:
    # the delivered model should learn from every row (on diamonds at 120 s, a 2-member
    # ensemble trained on the training rows only scored 589 RMSE, the single trial refit
    # on all rows 549)
    ratio = rows_ratio(task)
    if choice.method in ("stacking", "neural"):
        # a combiner uses every member: when their re-runs do not all fit (on ames and
        # diamonds at 120 s: about 95 s of jobs with 22 s left), the final step would
        # deliver a single trial; compare the combiners again over the best members that
        # fit instead, in what the re-runs leave of the time
        names = [m.name for m in members]
        fits = affordable_members(
            names, seconds, budget_s, folds=folds, workers=workers, all_rows_ratio=ratio
        )
        if 2 <= len(fits) < len(names):
            members = [m for m in members if m.name in fits]
            result = greedy_ensemble(members, y, task.metric, classes=classes)
            costs = [float(seconds.get(k) or 0.0) for k in fits]
            slack = budget_s - verification_cost(costs, costs, folds, workers)
            slack -= all_rows_cost(costs, folds, workers, ratio)
            choice = stacking.choose(
                members,
                y,
                task.metric,
                classes=classes,
                classification=task.is_classification,
                deadline=time.monotonic() + max(0.0, min(ENSEMBLE_SHARE * ctx.remaining(), slack)),
            )
            note = "; ".join(
                [
                    *filter(None, [choice.note]),
                    f"compared over the {len(members)} best of {len(names)} members: the "
                    "others' fold-by-fold re-runs did not fit the time left",
                ]
            )
            budget_s = final_time_left(ctx) - ENSEMBLE_SAFETY_S
    pool = affordable_members(
        [result.best_single_name, *sorted(result.weights, key=lambda k: -result.weights[k])],
        seconds,
        budget_s,
        folds=folds,
        workers=workers,
        all_rows_ratio=ratio,
    )
    if choice.method != "single" and result.kept and not set(result.weights) <= set(pool):
        chosen = [m for m in members if m.name in pool]
        restricted = f"greedy kept to {len(chosen)} of its {len(result.weights)} members"
        if len(chosen) >= 2:
            result = greedy_ensemble(chosen, y, task.metric, classes=classes)
        else:
            result, unaffordable = dataclasses.replace(result, kept=False), True
        note = "; ".join(
            [*filter(None, [note]), f"{restricted}: their fold-by-fold re-runs fit the time left"]
        )
    combined = choice.method in ("stacking", "neural")
    kept = combined or (choice.method == "greedy" and result.kept)
    score = choice.nested[choice.method] if combined else result.score
    ctx.emit("ensemble", kept=kept, score=score, method=choice.method)
    summary = EnsembleSummary(
        kept=kept,
        score=score,  # greedy's: its selection score; a combiner's: nested out of fold
        best_single=result.best_single,
        best_single_name=result.best_single_name,
        weights=(
            {m.name: 1.0 / len(members) for m in members}
            if combined
            else result.normalized_weights()
        ),
        method=choice.method if kept else "single",
        nested=choice.nested,
        members=[m.name for m in members] if combined else [],
        params=combiners.as_lists(choice.params) if combined else {},
        note=note,
        unaffordable=unaffordable and not kept,
        greedy_weights=result.normalized_weights() if combined and result.kept else {},
        greedy_score=result.score if combined and result.kept else None,
    )
    said = f"{summary.method} kept" if kept else "not better than best single"
    return {"ensemble": summary, "step": step + 1, "events": [f"ensemble: {said}"]}


def report_node(state: RunState, runtime: Runtime[RunContext]) -> RunState:
    ctx = runtime.context
    final = state["final"]
    write_report(ctx.run, report_data(ctx, state))
    if ctx.llm is not None:  # what the LLM cost, for answers read back from the directory
        rows = ctx.llm.ledger.as_rows()
        rows[-1]["model"] = ctx.llm.model  # the total row names the model (a re-render shows it)
        usage = json.dumps(rows, indent=1, default=str)
        ctx.run.write_text(USAGE_JSON, usage)
    status = "finished" if final.ok else "failed"
    ctx.run.update(
        status=status,
        spent_s=round(ctx.elapsed(), 2),
        best_family=final.family,
        best_score=final.cv_score,
        holdout_score=final.holdout_score,
        problem_type=ctx.task.problem_type,
        profile={"n_rows": len(ctx.task.train), "n_features": len(ctx.task.feature_columns)},
    )
    ctx.emit("report", path=str(ctx.run.report_path))
    return {"status": status, "events": [f"report written ({status})"]}


# -- the graph ---------------------------------------------------------------------


def build_graph() -> StateGraph:
    g = StateGraph(RunState, context_schema=RunContext)
    g.add_node("plan", plan_node)
    g.add_node("features", features_node)
    g.add_node("hpo", hpo_node)
    g.add_node("ensemble", ensemble_node)
    g.add_node("nas_prune", nas_prune_node)
    g.add_node("finalize", finalize_node)
    g.add_node("nas_finalize", nas_finalize_node)
    g.add_node("report", report_node)
    g.add_edge(START, "plan")
    steps = {k: k for k in ("features", "hpo", "ensemble", "nas_prune", "finalize", "nas_finalize")}
    for node in ("plan", "features", "hpo", "ensemble", "nas_prune"):
        g.add_conditional_edges(node, route, steps)
    g.add_edge("finalize", "report")
    g.add_edge("nas_finalize", "report")
    g.add_edge("report", END)
    return g


def run_graph(ctx: RunContext, *, resume: bool = False) -> RunState:
    """Runs (or resumes) the graph with a SQLite checkpointer in the run directory."""
    conn = sqlite3.connect(ctx.run.checkpoints, check_same_thread=False)
    try:
        serde = JsonPlusSerializer(allowed_msgpack_modules=CHECKPOINT_TYPES)
        graph = build_graph().compile(checkpointer=SqliteSaver(conn, serde=serde))
        config = {"configurable": {"thread_id": "run"}, "recursion_limit": 50}
        has_checkpoint = graph.get_state(config).values != {}
        payload = None if (resume and has_checkpoint) else {"events": []}
        return graph.invoke(payload, config, context=ctx)  # type: ignore[return-value]
    finally:
        conn.close()


def saved_state(run_dir: Path) -> RunState:
    """A run's last checkpointed state (plan, trials, checks, final model), read back
    without running anything; empty when the run has no checkpoint."""
    path = Path(run_dir) / CHECKPOINTS_DB
    if not path.exists():
        return {}
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    try:
        serde = JsonPlusSerializer(allowed_msgpack_modules=CHECKPOINT_TYPES)
        graph = build_graph().compile(checkpointer=SqliteSaver(conn, serde=serde))
        config = {"configurable": {"thread_id": "run"}}
        return graph.get_state(config).values  # type: ignore[return-value]
    finally:
        conn.close()


def command_of(meta: RunMeta, sandbox: str) -> str:
    """The ``mlpilot run`` command that reproduces the run ``meta`` describes."""
    return command_line(
        meta.request,
        meta.data,
        meta.target,
        meta.time_budget,
        meta.llm,
        sandbox,
        drop=meta.drop,
        description=meta.description_file,
        features=meta.features,
        refit=meta.refit,
    )


def command_line(
    request: str,
    data: str,
    target: str | None,
    budget: float,
    llm: str | None,
    sandbox: str,
    *,
    drop: Sequence[str] = (),
    description: str | None = None,
    features: bool | None = None,
    refit: str = "all",
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
    if description:
        parts += ["--description", description]
    if features is not None:
        parts.append("--features" if features else "--no-features")
    if refit != "all":
        parts += ["--refit", refit]
    return shlex.join(parts)
