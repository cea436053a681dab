"""The finalize step: the final candidates' CV re-run fold by fold, the winner refit in
the sandbox and rescored on the host, leakage looked for, the budget checked.

A candidate (the ensemble, then the best single trials) becomes the final model only
when every member's fold-by-fold re-run reproduces its recorded score, its refit
comes back as a skops file of trusted types, and the refit's holdout predictions
match the model's; otherwise the next candidate is tried.

With engineered features, the final model is also refit without them and both are
scored on the holdout on the host; if the model with features is worse, the one
without is delivered and the report says the features were dropped.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from langgraph.runtime import Runtime
from sklearn.pipeline import Pipeline

from mlpilot.agents import leakage, verifier
from mlpilot.agents.context import RunContext
from mlpilot.agents.hpo import trial_limits, trial_rows
from mlpilot.agents.state import FinalModel, RunState, SandboxInfo, TrialRow
from mlpilot.agents.trials import RefitOutcome, TrialRunner
from mlpilot.tools import combiners
from mlpilot.tools.featurize import FeatureBuilder
from mlpilot.tools.metrics import predictions_for
from mlpilot.tools.model import CombinedEnsemble, PilotModel, WeightedEnsemble

Combo = tuple[str, dict[str, Any]] | None  # (stacking | neural, the combiner's parameters)
BUDGET_MARGIN_S = 15.0  # a run may overshoot its budget by this much (refit, report)
FINAL_SINGLES = 3  # single trials refit as the final model after the ensemble, at most
MAX_RERUN_SINGLES = 10  # single trials whose CV may be re-run fold by fold, at most
LEAK_REVIEW_S = 30.0  # most seconds the LLM's leakage review may take
# How long past the budget the run waits for the review's answer; then the review is
# cancelled (the embedded model stops within one step of its prompt's reading or one
# token) and the run waits at most REVIEW_CANCEL_S more for its thread to end, so that
# no generation outlives the run (at the CLI's exit it would abort the process).
# The whole margin (15 s) made a 60 s run with the embedded model take 75-78 s.
REVIEW_GRACE_S = 2.0
REVIEW_CANCEL_S = 10.0
LATE_REVIEW = "the LLM's leakage review did not answer within the budget; rule-based checks only"
# A warm sandbox job's start, data and clean-up, beyond its fits, and a refit job's
# model file on top (writing it, and the host's loading it). Measured on two cores, two
# workers (local-warm sandbox, default configurations): fold-by-fold re-runs of trials
# that took 0.55-8.8 s took 0.9-6.0 s. Refits took 2.4-7.4 s (LightGBM's the slowest:
# 4.4 s on titanic's 840 rows, 6.0-7.4 s on ames' 1,875) while each job imported skops
# itself (1.9 s, torch included) and 3.5 s was counted here; since the search's end
# warms the workers with it (``Sandbox.warm_up``), refits of LightGBM, a linear model
# and a random forest on breast cancer's 569 rows take 0.5, 0.2 and 0.7 s instead of
# 2.1-2.3 s (benchmarks/refit_cost.py). With 0.3 s and 2.0 s (and the import in each
# job) the final step overran its estimate twofold on ames.
JOB_OVERHEAD_S = 0.5
REFIT_OVERHEAD_S = 1.5
# choosing the ensemble and writing the report with its plots, beyond the jobs (about
# what a 40 s run on a small data set spent on them here, two cores)
FINISH_FIXED_S = 6.0


def finalize_node(state: RunState, runtime: Runtime[RunContext]) -> RunState:
    ctx = runtime.context
    task = ctx.task
    rows = trial_rows(ctx.run.storage_url, task)
    done = [r for r in rows if r.finished]
    # the LLM reads the columns while candidates re-run (begun by the search, if local)
    review = ctx.leak_review or start_leak_review(ctx)
    ctx.leak_review = None
    checks = [verifier.check_claims(rows)]
    by_key = {r.key: r for r in rows}
    candidates: list[tuple[str, dict[str, float], float | None]] = []
    ens = state.get("ensemble")
    combo: Combo = None  # how the ensemble's members are combined, beyond weights
    if ens is not None and ens.kept:
        if ens.method in ("stacking", "neural"):
            combo = (ens.method, combiners.as_arrays(ens.params))
            # the combiner's members in the order its parameters were fit in
            candidates.append(("ensemble", {k: ens.weights[k] for k in ens.members}, ens.score))
            if ens.greedy_weights:  # greedy's blend, if the combiner cannot be verified
                candidates.append(("greedy", ens.greedy_weights, ens.greedy_score))
        else:
            candidates.append(("ensemble", ens.weights, ens.score))
    for row in done[:MAX_RERUN_SINGLES]:
        candidates.append((row.key, {row.key: 1.0}, row.cv_score))
    features = state.get("features")
    feature_set = features.features if features is not None else None
    # The trials' cores: the LLM's leakage review generates beside these jobs, and
    # OpenMP jobs given every core beside it ran a 1 s fold for 14 s.
    local_llm = ctx.llm is not None and ctx.llm.runs_locally
    limits = trial_limits(ctx.hpo_settings.parallel, local_llm=local_llm)

    def runner_with(features: Any = None) -> TrialRunner:
        return TrialRunner(
            ctx.sandbox,
            task,
            limits=limits,
            data_dir=ctx.run.sandbox_data,
            code=ctx.trial_code,
            folds=ctx.hpo_settings.folds,
            features=features,
        )

    runner = runner_with(feature_set)
    verdicts: dict[str, verifier.RerunVerdict] = {}
    skipped: list[str] = []
    final = FinalModel()
    refits = 0
    for label, weights, cv_score in candidates:
        cost = verification_cost(
            [by_key[k].seconds for k in weights if k not in verdicts],
            [by_key[k].seconds for k in weights],
            runner.folds,
            ctx.hpo_settings.parallel,
        )
        # Singles are tried until one holds, whatever the time; the ensemble if it fits.
        if label in ("ensemble", "greedy") and cost > final_time_left(ctx):
            skipped.append(
                f"the ensemble was not re-run (about {cost:.0f} s of jobs, "
                f"{max(0.0, ctx.remaining()):.0f} s left)"
            )
            continue
        for key in weights:
            if key not in verdicts:
                row = by_key[key]
                rerun = runner.refold(
                    row.family,
                    row.params,
                    timeout_s=max(30.0, ctx.remaining() + BUDGET_MARGIN_S),
                    workers=ctx.hpo_settings.parallel,
                )
                verdicts[key] = verifier.judge_rerun(key, row.cv_score or 0.0, rerun)
                ctx.emit("rerun", key=key, ok=verdicts[key].ok)
        if not all(verdicts[key].ok for key in weights):
            continue  # never reported: the next candidate is tried
        if refits > FINAL_SINGLES:
            break
        refits += 1
        how = combo if label == "ensemble" else None
        started = time.monotonic()
        model, claimed_holdout, why, _ = _refit_candidate(ctx, runner, weights, by_key, how)
        refit_s = time.monotonic() - started
        ctx.emit("refit", label=label, rows=len(task.train), ok=model is not None)
        if model is None:
            checks.append(verifier.Check(f"refit {label}", False, why))
            continue
        check = verifier.verify_holdout(task, model, claimed_holdout)
        checks.append(check)
        if not check.ok:
            continue  # retried with the next candidate, never reported as a success
        holdout = _holdout_score(task, model)
        dropped = False
        chosen = runner
        if feature_set is not None and features is not None:
            plain = runner_with(None)
            # a combiner was fit on the members with features: without them, the members
            # are averaged with the candidate's weights
            check, without = _compare_without_features(ctx, plain, weights, by_key, holdout)
            checks.append(check)
            if without is not None:
                model, holdout = without
                features = features.model_copy(update={"dropped": check.detail})
                dropped = True
                chosen = plain
                how = None
        delivered, refit = model, {"refit": "train", "rows": len(task.train)}
        if ctx.refit == "all":
            every, check = _refit_on_all_rows(ctx, chosen, weights, by_key, how, refit_s)
            ctx.emit("refit", label=label, rows="all", ok=every is not None)
            checks.append(check)
            if every is not None:
                ctx.run.save_model(model, ctx.run.train_model_path)
                delivered = every
                refit = {"refit": "all", "rows": len(task.train) + len(task.holdout.features)}
            refit["refit_note"] = check.detail
        if refit["refit"] != "all":
            ctx.run.train_model_path.unlink(missing_ok=True)  # none from an earlier attempt
        ctx.run.save_model(delivered)
        final = FinalModel(
            ok=True,
            label=label,
            weights=weights,
            cv_score=cv_score,
            holdout_score=holdout,
            description=_describe(
                label, weights, by_key, ens.method if how and ens is not None else "greedy"
            )
            + (" with the engineered features" if feature_set and not dropped else "")
            + (", refit without the engineered features" if dropped else ""),
            **refit,
        )
        break
    checks.append(verifier.check_reruns(list(verdicts.values()), skipped))
    ctx.emit("review", waiting=True)
    reviewed = review(ctx.remaining())
    ctx.emit("review", waiting=False, answered=reviewed is not None)
    findings = leakage.find_leaks(task, model=_model_strength(ctx, done)) + (reviewed or [])
    check = leakage.leakage_check(findings, rerun=ctx.command)
    if reviewed is None:
        check = dataclasses.replace(check, detail=f"{check.detail} ({LATE_REVIEW})")
    elif len(task.feature_columns) > leakage.LLM_COLUMNS:
        read = (
            f"the LLM's review read the {leakage.LLM_COLUMNS} of {len(task.feature_columns)} "
            "columns most associated with the target; the rule-based checks read all"
        )
        check = dataclasses.replace(check, detail=f"{check.detail} ({read})")
    checks.append(check)
    if features is not None:
        checks.append(verifier.check_feature_leaks(features.records))
    checks.append(verifier.check_budget(ctx.elapsed(), ctx.time_budget_s, BUDGET_MARGIN_S))
    final = final.model_copy(update={"sandbox": SandboxInfo(**runner.last_sandbox)})
    excluded = {k for k, v in verdicts.items() if not v.ok}
    out: RunState = {} if features is None else {"features": features}
    return {
        **out,
        "final": final,
        "trials": rows,
        "checks": checks,
        "verified": sorted(r.key for r in done if r.key not in excluded),
        "reruns": sorted(k for k, v in verdicts.items() if v.ok),
        "events": [
            f"final model: {final.description}"
            + (f"; refit on all {final.rows} rows" if final.refit == "all" else ""),
            *([LATE_REVIEW] if reviewed is None else []),
        ],
    }


def verification_cost(
    rerun: list[float], refit: list[float], folds: int, workers: int = 1
) -> float:
    """Wall seconds of sandbox jobs, ``workers`` at a time, for a fold-by-fold re-run of
    each trial whose seconds are in ``rerun`` (about one trial's time, in ``folds``
    jobs) and a refit of each in ``refit`` (about one fold's, in one job)."""
    rerun_s = sum(seconds + folds * JOB_OVERHEAD_S for seconds in rerun)
    refits = [seconds / (folds + 1) + REFIT_OVERHEAD_S for seconds in refit]
    return rerun_s / max(1, workers) + side_by_side(refits, workers)


def final_time_left(ctx: RunContext) -> float:
    """Seconds the final step's optional work (an ensemble's re-runs, the refit on all
    rows) may still take: the budget left and half the margin the budget check allows.
    The ensemble step keeps its members to what fits the same time."""
    return ctx.remaining() + BUDGET_MARGIN_S / 2


def finish_seconds(trial_s: float, folds: int, workers: int, all_rows_ratio: float) -> float:
    """About how long the steps after the search take when the final model is a single
    trial that took ``trial_s``: its fold-by-fold re-run and refit, its refit on all
    rows (``all_rows_ratio`` times the training rows), and ensembling and the report."""
    verify = verification_cost([trial_s], [trial_s], folds, workers)
    return verify + all_rows_cost([trial_s], folds, workers, all_rows_ratio) + FINISH_FIXED_S


def rows_ratio(task: Any) -> float:
    """All the rows the user gave (training and holdout) per training row: how much
    longer a refit on all rows takes than one on the training rows."""
    return (len(task.train) + len(task.holdout.features)) / len(task.train)


def all_rows_cost(seconds: list[float], folds: int, workers: int, all_rows_ratio: float) -> float:
    """Wall seconds of the refit on all rows (``all_rows_ratio`` times the training rows)
    of the trials whose seconds are in ``seconds``, ``workers`` at a time."""
    refits = [s / (folds + 1) * all_rows_ratio + REFIT_OVERHEAD_S for s in seconds]
    return side_by_side(refits, workers)


def side_by_side(seconds: list[float], workers: int) -> float:
    """About how long jobs of these durations take, ``workers`` at a time: never less
    than the longest, nor than their sum shared out."""
    return max([*seconds, sum(seconds) / max(1, workers)], default=0.0)


Review = Callable[[float], list[leakage.Finding] | None]


def start_leak_review(ctx: RunContext, after: threading.Event | None = None) -> Review:
    """Starts the LLM's leakage review in the background (once ``after`` is set, when
    given); the returned function waits for it at most the given seconds (plus
    ``REVIEW_GRACE_S``) and returns its findings, or None when it did not answer in
    time (a late answer adds nothing).

    The review reads only the data, so with a local model the search starts it once
    its trials run (``after``): beside them it has the search's time to read its
    prompt with one core, where after the search the final step's jobs are short and
    it was still reading when the budget ran out."""
    llm = ctx.llm
    if llm is None or not llm.available:
        return lambda _: []
    found: list[leakage.Finding] = []
    answered: list[bool] = []
    crashed: list[BaseException] = []

    def work() -> None:
        try:
            if after is not None:
                after.wait()
            timeout = max(5.0, min(LEAK_REVIEW_S, ctx.remaining() + BUDGET_MARGIN_S))
            if after is not None:  # begun early: it may take until the final step waits
                timeout = max(5.0, ctx.remaining() + REVIEW_GRACE_S)
            reply = leakage.ask_llm(llm, ctx.task, timeout=timeout)
            if reply is not None:
                found.extend(reply)
                answered.append(True)
        except BaseException as e:  # a bug, or a test double's alarm: surfaced below
            crashed.append(e)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()

    def wait(seconds: float) -> list[leakage.Finding] | None:
        thread.join(timeout=max(1.0, seconds + REVIEW_GRACE_S))
        if thread.is_alive():  # too late to matter: stop it rather than wait
            llm.cancel()
            if llm.runs_locally:  # a remote call ends at its own timeout, elsewhere
                thread.join(timeout=REVIEW_CANCEL_S)
        if crashed:
            raise crashed[0]
        return list(found) if answered and not thread.is_alive() else None

    return wait


def _model_strength(ctx: RunContext, done: list[TrialRow]) -> float | None:
    """The best trial's strength (see :func:`leakage.model_strength`), from its saved
    out-of-fold predictions."""
    saved = ctx.run.load_predictions(done[0].key) if done else None
    if saved is None:
        return None
    oof, _, classes = saved
    return leakage.model_strength(ctx.task.y, oof, classes, ctx.task.problem_type)


def _refit_on_all_rows(
    ctx: RunContext,
    runner: TrialRunner,
    weights: dict[str, float],
    rows: dict[str, TrialRow],
    combo: Combo = None,
    measured_s: float = 0.0,
) -> tuple[PilotModel | None, verifier.Check]:
    """The verified configuration refit on every row the user gave, so the delivered
    model learns from the holdout too. Its holdout predictions are now in-sample: the
    host only checks that the model it loaded makes the predictions the job sent (the
    job's model is the one delivered), never reports them as a score. Returns None
    (and the verified model is delivered) when the refit does not fit the time left or
    its job fails that check. ``measured_s``: how long its refit on the training rows
    took; this one takes at least that in proportion to its rows."""
    task = ctx.task
    n_all = len(task.train) + len(task.holdout.features)
    name = "refit on all rows"
    kept = (
        f"the delivered model is the verified one, trained on the {len(task.train)} training rows"
    )
    cost = all_rows_cost(
        [rows[k].seconds for k in weights],
        runner.folds,
        ctx.hpo_settings.parallel,
        rows_ratio(task),
    )
    cost = max(cost, measured_s * rows_ratio(task))
    left = final_time_left(ctx)
    if cost > left:
        detail = (
            f"not refit on all {n_all} rows (about {cost:.0f} s of fits, {left:.0f} s left): {kept}"
        )
        return None, verifier.Check(name, True, detail, "warning")
    model, _, why, sent = _refit_candidate(ctx, runner, weights, rows, combo, all_rows=True)
    if model is None or sent is None:
        return None, verifier.Check(name, True, f"the refit failed ({why}): {kept}", "warning")
    problem = verifier.same_predictions(task, model, *sent)
    if problem:
        detail = f"its model does not make the predictions its job sent ({problem}): {kept}"
        return None, verifier.Check(name, True, detail, "warning")
    detail = (
        f"the delivered model was refit on all {n_all} rows ({len(task.train)} training rows "
        f"and the {len(task.holdout.features)} holdout rows); the holdout score describes the "
        f"same configuration trained on the training rows only"
    )
    return model, verifier.Check(name, True, detail)


def _refit_candidate(
    ctx: RunContext,
    runner: TrialRunner,
    weights: dict[str, float],
    rows: dict[str, TrialRow],
    combo: Combo = None,
    *,
    all_rows: bool = False,
) -> tuple[PilotModel | None, float | None, str, tuple[np.ndarray, list[Any] | None] | None]:
    """The candidate's members refit in the sandbox (on the training rows, or on all
    rows), assembled on the host. Returns the model, the holdout score the jobs'
    predictions give, why it failed, and those predictions with their class order."""
    from concurrent.futures import ThreadPoolExecutor

    task = ctx.task
    timeout_s = max(30.0, ctx.remaining() + BUDGET_MARGIN_S)

    def one(key: str) -> RefitOutcome:
        row = rows[key]
        return runner.refit(row.family, row.params, timeout_s=timeout_s, all_rows=all_rows)

    # the members' jobs side by side, as the trials ran: most of a small member's job is
    # its start and the model file's import, which the other core can overlap
    parallel = getattr(getattr(ctx, "hpo_settings", None), "parallel", 1)
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        outcomes = list(pool.map(one, weights))
    members, holdouts, classes = [], [], None
    for key, out in zip(weights, outcomes, strict=True):
        if not out.ok:
            return None, None, f"{key}: {out.reason}", None
        members.append(out.model)  # built from a skops file of trusted types only
        holdouts.append(out.holdout_pred)
        classes = out.classes
    w = np.asarray(list(weights.values()), dtype=float)
    if combo is not None:  # stacking or the neural ensembler: members in the combiner's order
        method, params = combo
        estimator: Any = CombinedEnsemble(members, method, params, task.is_classification)
        blended = combiners.apply(method, params, combiners.stack(holdouts), task.is_classification)
    elif len(members) == 1:
        estimator = members[0]
    else:
        estimator = WeightedEnsemble(members, list(w), classification=task.is_classification)
    if combo is None:
        blended = sum(wi * h for wi, h in zip(w / w.sum(), holdouts, strict=True))
    if runner.features:
        builder = FeatureBuilder(runner.features["features"], runner.features.get("drop", []))
        seen = task.all_rows()[list(task.feature_columns)] if all_rows else task.X
        estimator = Pipeline([("features", builder.fit(seen)), ("model", estimator)])
    model = PilotModel.wrap(estimator, task.feature_columns, task.target, task.problem_type)
    claimed = task.score_holdout(predictions_for(task.metric, blended, classes))
    return model, claimed, "", (blended, list(classes) if classes is not None else None)


def _holdout_score(task: Any, model: PilotModel) -> float:
    return task.score_holdout(
        predictions_for(task.metric, _raw_predictions(task, model), _classes(task, model))
    )


def _compare_without_features(
    ctx: RunContext,
    plain: TrialRunner,
    weights: dict[str, float],
    rows: dict[str, TrialRow],
    with_features: float,
    combo: Combo = None,
) -> tuple[verifier.Check, tuple[PilotModel, float] | None]:
    """The final model's configuration refit without the engineered features, both
    scored on the holdout on the host. Returns the check and, when the model with
    features is worse, the model without them with its holdout score."""
    model, claimed, why, _ = _refit_candidate(ctx, plain, weights, rows, combo)
    if model is None:
        return verifier.Check("features vs none", True, f"no comparison: {why}", "warning"), None
    check = verifier.verify_holdout(ctx.task, model, claimed)
    if not check.ok:
        return verifier.Check("features vs none", True, f"no comparison: {check.detail}"), None
    without = _holdout_score(ctx.task, model)
    metric = ctx.task.metric
    name = metric.display
    if metric.better(without, with_features):
        detail = (
            f"the model without engineered features scores better on the holdout "
            f"({name} {without:.4f} against {with_features:.4f} with them): features dropped"
        )
        return verifier.Check("features vs none", True, detail, "warning"), (model, without)
    detail = (
        f"holdout {name} with the engineered features {with_features:.4f}, "
        f"the same configuration without them {without:.4f}"
    )
    return verifier.Check("features vs none", True, detail), None


def _raw_predictions(task: Any, model: PilotModel) -> np.ndarray:
    X = task.holdout.features
    return model.predict_proba(X) if task.is_classification else model.predict(X)


def _classes(task: Any, model: PilotModel) -> list[Any] | None:
    return list(model.classes_) if task.is_classification else None


def _describe(
    label: str, weights: dict[str, float], rows: dict[str, TrialRow], method: str = "greedy"
) -> str:
    if label == "ensemble" and method in ("stacking", "neural"):
        kind = (
            "stacked ensemble (linear meta-model)"
            if method == "stacking"
            else ("neural ensemble (per-row member weights)")
        )
        return f"{kind} of {len(weights)} models: {', '.join(weights)}"
    if label in ("ensemble", "greedy"):
        parts = ", ".join(f"{k} ({w:.2f})" for k, w in weights.items())
        return f"weighted ensemble of {len(weights)} models: {parts}"
    row = rows[label]
    return f"{row.family} (trial {label}) with {json.dumps(row.params)}"
