"""The whole run: graph with the scripted LLM, verifier, model, predict, resume after kill -9."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes

from mlpilot import Pilot
from mlpilot.agents.hpo import HpoSettings
from mlpilot.agents.llambo import Model
from mlpilot.errors import ConfigError, DataError
from mlpilot.llm import LLM, Budget
from mlpilot.testing import ScriptedLLM, configs_reply

NO_SAMPLING = HpoSettings(warmstart=2, sample_every=10**6)
NO_LEAKS = '{"columns": []}'  # the LLM's leakage review finds nothing


@pytest.fixture(scope="module")
def cancer() -> pd.DataFrame:
    return load_breast_cancer(as_frame=True).frame.sample(300, random_state=0)


def plan_reply(*families: str) -> str:
    return json.dumps({"families": list(families), "rationale": "test"})


def warm_reply(family: str) -> str:
    if family == "lightgbm":
        return configs_reply(Model.family(family).params)  # valid in the family's space
    configs = {
        "linear": [{"C": 0.5}, {"C": 5.0}],
        "knn": [
            {"n_neighbors": 7, "weights": "distance"},
            {"n_neighbors": 15, "weights": "uniform"},
        ],
    }[family]
    return json.dumps({"configs": configs})


def test_a_local_llm_warm_starts_alone_and_reviews_beside_the_trials(cancer, tmp_path) -> None:
    """A model on this machine: one warm-start request for every family while nothing
    else runs (every core to it), then the leakage review while the search's trials
    run, so the final step does not wait for it."""
    from mlpilot.llm import embedded
    from mlpilot.sandbox.base import running_jobs

    seen: dict[str, tuple[int, int]] = {}

    def warm(messages, params) -> str:
        seen["warm"] = (embedded._alone, running_jobs())
        families = ("linear", "knn", "lightgbm")
        assert all(f"Model: {f}" in messages[-1]["content"] for f in families)
        return json.dumps({f: json.loads(warm_reply(f))["configs"][:2] for f in families})

    def review(messages, params) -> str:
        seen["review"] = (embedded._alone, running_jobs())
        assert "leaks the answer" in messages[-1]["content"]
        return NO_LEAKS

    fake = ScriptedLLM([plan_reply("linear", "knn"), warm, review], runs_locally=True)
    result = Pilot(llm=LLM(fake), runs_dir=tmp_path).run(
        "tune a model for this dataset, predict target", cancer, time_budget=30
    )
    assert result.status == "finished" and len(fake.calls) == 3
    assert seen["warm"] == (1, 0)  # every core, no job
    assert seen["review"][0] == 0 and seen["review"][1] >= 1  # one core, the search running
    text = result.report_path.read_text()
    assert "llm-warmstart" in text and "leakage review did not answer" not in text


def test_run_with_the_scripted_llm_end_to_end(cancer, tmp_path) -> None:
    from mlpilot.llm import embedded

    alone: list[int] = []

    def planned(messages, params) -> str:
        alone.append(embedded._alone)  # a local model would plan with every core
        return plan_reply("linear", "knn")

    # The LLM plans two families; the plan is topped up to three from the matching recipe.
    fake = ScriptedLLM(
        [
            planned,
            warm_reply("linear"),
            warm_reply("knn"),
            warm_reply("lightgbm"),
            NO_LEAKS,  # the LLM's leakage review, at the end
        ],
        latency_per_call=0.5,  # reported seconds per call: the report's LLM plot shows them
    )
    pilot = Pilot(llm=LLM(fake), runs_dir=tmp_path)
    result = pilot.run(
        "tune a model for this dataset, predict target", cancer, time_budget=30, hpo=NO_SAMPLING
    )
    assert result.status == "finished"
    assert alone == [1]
    assert fake.remaining == 0
    plan_prompt = fake.calls[0].messages[-1]["content"]
    assert "recipe" in plan_prompt  # retrieval grounded the plan
    board = result.leaderboard
    assert set(board["family"]) == {"linear", "knn", "lightgbm"}
    assert {"llm-warmstart", "tpe"} <= set(board["source"])
    assert result.holdout_score > 0.9
    checks = {c["check"]: c for c in result.checks}
    assert checks["job claims"]["ok"] and checks["final holdout score"]["ok"]
    assert checks["fold-by-fold CV"]["ok"], checks["fold-by-fold CV"]
    report = result.report_path.read_text()
    assert "Plan (llm (scripted))" in report and "| planner | 1 |" in report
    assert "trained in the `local-warm` sandbox (network isolated:" in report
    drawn = {p.name for p in result.run_dir.glob("plot-*.png")}
    assert {
        "plot-history.png",
        "plot-params.png",
        "plot-roc.png",
        "plot-pr.png",
        "plot-confusion.png",
        "plot-features.png",
        "plot-llm.png",
    } <= drawn, drawn
    from mlpilot.agents.graph import saved_state

    members = saved_state(result.run_dir)["final"].weights
    assert ("plot-ensemble.png" in drawn) == (len(members) > 1)
    html = (result.run_dir / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') == len(drawn)  # opens offline
    # `mlpilot report RUN` renders the same report again from the directory alone
    from mlpilot.agents.reporter import rerender

    md = result.report_path.read_text()
    for p in [result.report_path, result.run_dir / "report.html", *result.run_dir.glob("plot-*")]:
        p.unlink()
    rerender(result.run_dir)
    assert {p.name for p in result.run_dir.glob("plot-*.png")} == drawn

    def body(text: str) -> list[str]:  # the time stated comes from run.json's clock
        return [line for line in text.splitlines() if not line.startswith("Status:")]

    assert body(result.report_path.read_text()) == body(md)
    X = cancer.drop(columns=["target"])
    np.testing.assert_array_equal(result.model.predict(X), Pilot.load(result.run_dir).predict(X))


def test_invalid_plans_are_reasked_then_the_default_plan_is_used(cancer, tmp_path) -> None:
    fake = ScriptedLLM(['{"families": ["xgboost"]}', "no idea", '{"families": []}', NO_LEAKS])
    result = Pilot(llm=LLM(fake), runs_dir=tmp_path).run(
        "predict target", cancer, time_budget=20, hpo=HpoSettings(warmstart=0, sample_every=10**6)
    )
    assert len(fake.calls) == 4
    assert result.status == "finished"
    assert "default (LLM unavailable: StructuredOutputError" in result.report_path.read_text()


def _timed_review_run(fake: ScriptedLLM, data, runs_dir, budget: float):
    """A run whose LLM plans a linear model and then reviews leakage as ``fake``
    scripts it; returns the result and its wall time."""
    start = time.monotonic()
    result = Pilot(llm=LLM(fake), runs_dir=runs_dir).run(
        "predict target",
        data,
        time_budget=budget,
        hpo=HpoSettings(warmstart=0, sample_every=10**6),
    )
    return result, time.monotonic() - start


def test_a_leakage_review_that_never_answers_does_not_hold_the_run_past_its_budget(
    cancer, tmp_path
) -> None:
    from mlpilot.agents.finalize import LATE_REVIEW, REVIEW_GRACE_S

    release = threading.Event()

    def hang(messages, params) -> str:  # the review's call: answers only when released
        release.wait(120)
        return NO_LEAKS

    fake = ScriptedLLM([plan_reply("linear"), hang])
    budget = 20
    try:
        result, wall = _timed_review_run(fake, cancer, tmp_path, budget)
    finally:
        release.set()
    assert result.status == "finished" and len(fake.calls) == 2
    # the run waits for the answer until its budget is spent, and a little more; never
    # for the whole margin the refit and the report may use
    assert wall < budget + REVIEW_GRACE_S + 6, wall
    checks = {c["check"]: c for c in result.checks}
    assert LATE_REVIEW in checks["leakage"]["detail"] and LATE_REVIEW in result.events
    assert LATE_REVIEW in result.report_path.read_text()


def test_a_local_review_still_reading_at_the_budget_is_cancelled(cancer, tmp_path) -> None:
    # The embedded model reviews beside the trials; when the final step finds it still
    # busy at the budget's end it cancels it (the engine stops within a step of its
    # prompt), where waiting the whole margin made 60 s runs take 75-78 s.
    from mlpilot.agents.finalize import LATE_REVIEW, REVIEW_GRACE_S
    from mlpilot.llm import LLMTimeout

    cancelled = threading.Event()

    class Cancellable(ScriptedLLM):
        def cancel(self) -> None:
            cancelled.set()

    def hang(messages, params) -> str:  # the review: stops only when cancelled
        if cancelled.wait(120):
            raise LLMTimeout("embedded model: generation cancelled")
        return NO_LEAKS

    fake = Cancellable([plan_reply("linear"), hang], runs_locally=True)
    budget = 20
    try:
        result, wall = _timed_review_run(fake, cancer, tmp_path, budget)
        was_cancelled = cancelled.is_set()
    finally:
        cancelled.set()
    assert was_cancelled
    assert result.status == "finished" and len(fake.calls) == 2
    assert wall < budget + REVIEW_GRACE_S + 6, wall
    assert LATE_REVIEW in result.events


def test_llm_over_budget_runs_without_it_and_says_so(cancer, tmp_path) -> None:
    fake = ScriptedLLM([])
    pilot = Pilot(llm=LLM(fake, budget=Budget(max_tokens=0)), runs_dir=tmp_path)
    result = pilot.run("predict target", cancer, time_budget=20)
    assert fake.calls == []
    report = result.report_path.read_text()
    assert "default (LLM unavailable: BudgetExceeded" in report
    assert result.status == "finished"


def test_regression_run_without_llm_and_predict_checks_columns(tmp_path) -> None:
    frame = load_diabetes(as_frame=True).frame
    result = Pilot(llm=False, runs_dir=tmp_path).run(
        "predict target, minimise MAE", frame, time_budget=20
    )
    assert result.status == "finished"
    assert "MAE" in result.report_path.read_text()
    drawn = {p.name for p in result.run_dir.glob("plot-*.png")}
    assert {"plot-pred-actual.png", "plot-residuals.png", "plot-features.png"} <= drawn
    assert not {"plot-roc.png", "plot-llm.png"} & drawn
    loaded = Pilot.load(result.run_dir)
    with pytest.raises(DataError, match=r"lacks 1 training column\(s\): 'bmi'"):
        loaded.predict(frame.drop(columns=["bmi", "target"]))
    with pytest.raises(DataError, match="repeats"):
        loaded.predict(pd.concat([frame, frame[["age"]]], axis=1))
    assert loaded.predict(frame[list(reversed(frame.columns))]).shape == (len(frame),)
    # a regression model has no probabilities to submit; its values carry the id column
    with pytest.raises(ConfigError, match="regression model has no class probabilities"):
        loaded.prediction_table(frame, proba=True)
    table = loaded.prediction_table(frame.assign(row=range(len(frame))), id_column="row")
    assert list(table.columns) == ["row", "target_predicted"] and table.row.tolist()[:2] == [0, 1]
    # scikit-learn's tooling takes the delivered model as the regressor it is
    from sklearn.base import clone, is_regressor
    from sklearn.model_selection import cross_val_score

    model = result.model
    assert is_regressor(model) and not hasattr(model, "predict_proba")
    X, y = frame.drop(columns=["target"]), frame["target"]
    assert cross_val_score(clone(model), X, y, cv=3).mean() > 0.2  # R² of a refit per fold


def _finished_trials(db: Path) -> list[tuple[int, float]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT t.trial_id, v.value FROM trials t JOIN trial_values v ON t.trial_id = v.trial_id "
            "WHERE t.state = 'COMPLETE' ORDER BY t.trial_id"
        ).fetchall()
    return rows


def test_kill_9_then_resume_loses_no_finished_trial(tmp_path) -> None:
    data = tmp_path / "cancer.csv"
    load_breast_cancer(as_frame=True).frame.to_csv(data, index=False)
    runs = tmp_path / "runs"
    cmd = [
        sys.executable,
        "-m",
        "mlpilot",
        "run",
        "predict target",
        "--data",
        str(data),
        "--time-budget",
        "60",
        "--no-llm",
        "--runs-dir",
        str(runs),
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 90
    before: list[tuple[int, float]] = []
    while time.monotonic() < deadline:
        dbs = list(runs.glob("*/optuna.db"))
        if dbs:
            try:
                before = _finished_trials(dbs[0])
            except sqlite3.Error:
                before = []
            if len(before) >= 4:
                break
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(before) >= 4, "the run finished no trials before the kill"
    (run_dir,) = runs.iterdir()
    done = subprocess.run(
        [sys.executable, "-m", "mlpilot", "run", "--resume", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    after = dict(_finished_trials(run_dir / "optuna.db"))
    for trial_id, value in before:
        assert after[trial_id] == value  # still there, not re-run
    assert len(after) > len(before)
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["status"] == "finished"
    assert "Status: finished" in (run_dir / "report.md").read_text()


@pytest.mark.embedded
def test_the_readme_main_command_runs_with_the_embedded_model_in_budget(
    embedded_model, tmp_path
) -> None:
    # `mlpilot quickstart` is `mlpilot run` on a bundled dataset: planner, LLM warm
    # start, trials, ensemble, verifier and report, with the embedded model (named: at
    # 40 s a run leaves the embedded model out unless it is named).
    t0 = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlpilot",
            "quickstart",
            "--llm",
            "embedded",
            "--time-budget",
            "40",
            "--runs-dir",
            str(tmp_path / "runs"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    wall = time.monotonic() - t0
    assert done.returncode == 0, done.stdout + done.stderr
    assert wall < 40 + 20  # budget + margin (+ interpreter start)
    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if p.name != "data"]
    report = (run_dir / "report.md").read_text()
    assert "Status: finished" in report
    assert f"embedded/{embedded_model}" in report  # the LLM took part (plan or HPO usage)


def test_a_short_run_leaves_the_embedded_model_out_unless_it_is_named(
    embedded_model, tmp_path, monkeypatch
) -> None:
    from mlpilot.agents.rundir import RunDir
    from mlpilot.api import LOCAL_LLM_MIN_BUDGET_S

    monkeypatch.delenv("MLPILOT_LLM", raising=False)
    pilot = Pilot(runs_dir=tmp_path)  # the default LLM: the embedded model here
    assert pilot._make_llm(LOCAL_LLM_MIN_BUDGET_S - 1) is None
    assert "below 120 s the embedded model" in pilot.llm_note
    kept = pilot._make_llm(LOCAL_LLM_MIN_BUDGET_S)
    assert kept is not None and kept.runs_locally and pilot.llm_note == ""
    named = Pilot(llm="embedded", runs_dir=tmp_path)._make_llm(LOCAL_LLM_MIN_BUDGET_S - 1)
    assert named is not None and named.runs_locally
    monkeypatch.setenv("MLPILOT_LLM", "embedded")  # named in the environment
    from_env = Pilot(runs_dir=tmp_path)._make_llm(LOCAL_LLM_MIN_BUDGET_S - 1)
    assert from_env is not None and from_env.runs_locally
    monkeypatch.delenv("MLPILOT_LLM")
    data = load_breast_cancer(as_frame=True).frame.sample(200, random_state=0)
    result = pilot.run("predict target", data, time_budget=15)
    assert result.status == "finished"
    assert RunDir(result.run_dir).meta().llm_note == pilot.llm_note
    report = result.report_path.read_text()
    assert "Plan (default (no LLM))" in report
    assert "below 120 s the embedded model costs more time than it gives back" in report


@pytest.mark.slow
@pytest.mark.ci_only
def test_killed_at_random_instants_every_resume_succeeds_and_loses_nothing(tmp_path) -> None:
    """kill -9 at 20 random instants (planning, trials, writes of run.json, predictions,
    checkpoints), resuming each time; then one resume runs to the end."""
    from mlpilot.agents.rundir import RunDir

    data = tmp_path / "cancer.csv"
    load_breast_cancer(as_frame=True).frame.sample(300, random_state=0).to_csv(data, index=False)
    runs = tmp_path / "runs"
    start = [sys.executable, "-m", "mlpilot", "run", "predict target", "--data", str(data)]
    start += ["--time-budget", "400", "--max-trials", "60", "--no-llm", "--runs-dir", str(runs)]
    rng = np.random.default_rng(0)
    proc = subprocess.Popen(
        start, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 60
    while not list(runs.glob("*/run.json")) and time.monotonic() < deadline:
        time.sleep(0.05)
    (run_dir,) = [p.parent for p in runs.glob("*/run.json")]
    run = RunDir(run_dir)
    first = run.meta()
    # the first run goes on until a trial has finished, so that every kill after it has
    # finished trials to lose (a resume's own first trial may take longer than the
    # random intervals below on a loaded machine)
    db = run_dir / "optuna.db"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with contextlib.suppress(sqlite3.Error):  # the run may be creating its tables
            if db.exists() and _finished_trials(db):
                break
        time.sleep(0.2)
    kept: dict[int, float] = {}
    spent = 0.0
    for _ in range(20):
        time.sleep(float(rng.uniform(0.5, 7.0)))  # a resume needs ~5 s to its first trial
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        meta = run.meta()  # readable and valid after every kill
        assert meta.hpo == first.hpo and meta.drop == first.drop and meta.no_llm
        assert meta.spent_s >= spent  # the clock never goes back
        spent = meta.spent_s
        now = dict(_finished_trials(db)) if db.exists() else {}
        for trial_id, value in kept.items():
            assert now[trial_id] == value  # no finished trial lost or re-run
        kept = now
        assert meta.status == "running", "the run ended before the 20th kill"
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlpilot", "run", "--resume", str(run_dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert kept, "no trial finished between the kills"
    done = subprocess.run(
        [sys.executable, "-m", "mlpilot", "run", "--resume", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    after = dict(_finished_trials(run_dir / "optuna.db"))
    for trial_id, value in kept.items():
        assert after[trial_id] == value
    assert run.meta().status == "finished"
    assert run.meta().spent_s >= spent
    for path in (run_dir / "predictions").iterdir():
        assert np.load(path)["oof"].shape[0] == 240  # every saved prediction file is whole


def test_the_delivered_model_learns_from_every_row_the_holdout_scores_the_other(
    tmp_path,
) -> None:
    # Regression, so the holdout split does not depend on y: the holdout's rows are
    # known in advance and get a target the training rows never show (10 instead of
    # about 0). Only a model that learnt from those rows can predict them near 10.
    from sklearn.model_selection import train_test_split

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(200, 3)), columns=["a", "b", "c"])
    _, hold = train_test_split(np.arange(200), test_size=40, random_state=0)
    frame["y"] = rng.normal(0, 0.1, 200)
    frame.loc[hold, "y"] += 10.0
    X = frame[["a", "b", "c"]]
    # few trials in a roomy budget: on a loaded 2-core machine a short run can reach its
    # refit with no time left, and then (rightly) delivers the verified model instead
    result = Pilot(llm=False, runs_dir=tmp_path).run(
        "predict y", frame, time_budget=60, max_trials=4
    )
    assert result.status == "finished"
    checks = {c["check"]: c for c in result.checks}
    detail = checks["refit on all rows"]["detail"]
    assert detail.startswith("the delivered model was refit on all 200 rows"), checks
    scored = Pilot.load(result.run_dir)  # the delivered model
    from mlpilot.tools import model_io

    trained = model_io.load(result.run_dir / "model-train.skops")
    assert np.mean(trained.predict(X.loc[hold])) < 1.5  # never saw a 10
    assert np.mean(scored.predict(X.loc[hold])) > 2 * np.mean(trained.predict(X.loc[hold])) + 1
    # the holdout score is the scored model's, recomputed on the host
    rmse = np.sqrt(np.mean((trained.predict(X.loc[hold]) - frame.loc[hold, "y"]) ** 2))
    assert result.holdout_score == pytest.approx(rmse, rel=1e-6)
    report = result.report_path.read_text()
    assert "learned from all 200 rows" in report and "trained on the 160 training rows" in report
    assert checks["refit on all rows"]["ok"]
    # refit="train": the delivered model is the one the holdout scored
    again = Pilot(llm=False, runs_dir=tmp_path).run(
        "predict y", frame, time_budget=20, refit="train"
    )
    assert np.mean(Pilot.load(again.run_dir).predict(X.loc[hold])) < 1.5
    assert not (again.run_dir / "model-train.skops").exists()
    assert "--refit train" in again.report_path.read_text()
    with pytest.raises(ConfigError, match="refit must be one of"):
        Pilot(llm=False, runs_dir=tmp_path).run("predict y", frame, refit="everything")
