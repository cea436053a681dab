"""Leakage found where it hides: synthetic proxies of several strengths, clean data
without false alarms, and an LLM that may add suspicion but never remove it."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.model_selection import cross_val_predict

from mlpilot.agents import leakage
from mlpilot.llm import LLM
from mlpilot.task import TaskSpec
from mlpilot.testing import ScriptedLLM


@pytest.fixture(scope="module")
def cancer() -> pd.DataFrame:
    return load_breast_cancer(as_frame=True).frame


def strength_of_a_model(task: TaskSpec) -> float | None:
    """The strength of a gradient-boosting model on the task, out of fold."""
    X = task.X.select_dtypes("number")
    if task.is_classification:
        oof = cross_val_predict(
            HistGradientBoostingClassifier(random_state=0), X, task.y, cv=5, method="predict_proba"
        )
        return leakage.model_strength(task.y, oof, sorted(task.y.unique()), task.problem_type)
    oof = cross_val_predict(HistGradientBoostingRegressor(random_state=0), X, task.y, cv=5)
    return leakage.model_strength(task.y, oof, None, task.problem_type)


def kinds(task: TaskSpec, model: float | None = None) -> dict[str, str]:
    return {f.column: f.kind for f in leakage.find_leaks(task, model=model)}


def test_copies_functions_ids_and_perfect_features_are_flagged(cancer) -> None:
    frame = cancer.sample(300, random_state=0).reset_index(drop=True)
    frame["copy"] = frame["target"]
    frame["diagnosis_code"] = frame["target"].map({0: "M-1", 1: "B-2"})
    noise = np.random.default_rng(0).normal(0, 0.1, len(frame))
    frame["score_from_lab"] = frame["target"] * 10 + noise
    task = TaskSpec.from_data(frame, target="target")
    found = kinds(task)
    assert found["copy"] == "copy"
    assert found["diagnosis_code"] == "function"
    assert found["score_from_lab"] == "perfect"


def _crash_like(n: int, purity: float, seed: int = 0) -> pd.DataFrame:
    """A crash-outcome table: honest features, and a post-outcome column whose level
    'towed' holds the injury class with the given purity."""
    rng = np.random.default_rng(seed)
    speed = rng.normal(60, 15, n)
    belted = rng.random(n) < 0.7
    risk = 0.04 * (speed - 60) - 1.2 * belted - 0.8
    injured = rng.random(n) < 1 / (1 + np.exp(-risk))
    towed = np.where(injured, rng.random(n) < 0.6, False)
    # contaminate the level so that it holds the injured class with `purity`
    healthy = np.flatnonzero(~injured)
    extra = round(float(towed.sum()) * (1 - purity) / purity)
    towed[rng.choice(healthy, size=extra, replace=False)] = True
    outcome_cols = np.where(towed, "towed", rng.choice(["driven away", "parked"], n))
    return pd.DataFrame(
        {
            "speed": speed.round(1),
            "belted": np.where(belted, "yes", "no"),
            "vehicle_status": outcome_cols,
            "injured": injured.astype(int),
        }
    )


@pytest.mark.parametrize(("purity", "flagged"), [(1.0, True), (0.97, True), (0.8, False)])
def test_a_post_outcome_level_is_flagged_by_its_purity(purity, flagged) -> None:
    task = TaskSpec.from_data(_crash_like(3000, purity), target="injured")
    found = leakage.find_leaks(task, model=strength_of_a_model(task))
    columns = {f.column: f for f in found}
    assert ("vehicle_status" in columns) is flagged, found
    if flagged:
        assert columns["vehicle_status"].kind == "pure_level"
        assert "level 'towed' is class 1 in" in columns["vehicle_status"].evidence
    assert "speed" not in columns and "belted" not in columns


@pytest.mark.parametrize(("noise", "kind"), [(0.3, "perfect"), (0.33, "close"), (3.0, None)])
def test_a_numeric_proxy_is_flagged_when_it_carries_the_model(cancer, noise, kind) -> None:
    rng = np.random.default_rng(1)
    frame = cancer[["mean radius", "mean texture", "target"]].copy()
    frame["followup_score"] = frame["target"] + rng.normal(0, noise, len(frame))
    task = TaskSpec.from_data(frame, target="target")
    model = strength_of_a_model(task)
    assert kinds(task, model).get("followup_score") == kind


@pytest.mark.parametrize("loader", [load_breast_cancer, load_diabetes, load_wine])
def test_clean_datasets_raise_no_alarm(loader) -> None:
    task = TaskSpec.from_data(loader(as_frame=True).frame, target="target")
    assert leakage.find_leaks(task, model=strength_of_a_model(task)) == []
    (check,) = leakage.check_leakage(task)
    assert check.ok


def test_the_check_gives_the_evidence_and_the_rerun_without_the_columns() -> None:
    task = TaskSpec.from_data(_crash_like(2000, 0.98), target="injured")
    check = leakage.leakage_check(
        leakage.find_leaks(task), rerun="mlpilot run 'predict injured' --data crash.csv"
    )
    assert not check.ok and check.severity == "warning"
    assert "'vehicle_status': level 'towed'" in check.detail
    assert "never dropped silently" in check.detail
    assert "mlpilot run 'predict injured' --data crash.csv --drop vehicle_status" in check.detail
    assert "vehicle_status" in task.feature_columns  # kept: nothing is dropped silently


def test_the_llm_may_add_suspicion_and_only_about_real_columns() -> None:
    task = TaskSpec.from_data(_crash_like(500, 0.5), target="injured")
    reply = {"columns": [{"column": "vehicle_status", "reason": "known after the crash"}]}
    fake = ScriptedLLM([json.dumps(reply)])
    found = leakage.ask_llm(LLM(fake), task)
    assert [(f.column, f.kind) for f in found] == [("vehicle_status", "llm")]
    assert "known after the crash" in found[0].evidence
    prompt = fake.calls[0].messages[-1]["content"]
    assert "vehicle_status" in prompt and "injured" in prompt
    schema = json.dumps(fake.calls[0].params["response_format"])
    assert "vehicle_status" in schema and "speed" in schema  # only real columns can be named
    invented = {"columns": [{"column": "police_report", "reason": "x"}]}
    retry = ScriptedLLM([json.dumps(invented)] * 3)
    assert leakage.ask_llm(LLM(retry), task) == []  # an invented column adds nothing


def test_the_llm_cannot_remove_a_statistical_finding() -> None:
    task = TaskSpec.from_data(_crash_like(2000, 1.0), target="injured")
    llm_found = leakage.ask_llm(LLM(ScriptedLLM(['{"columns": []}'])), task)
    check = leakage.leakage_check(leakage.find_leaks(task) + llm_found)
    assert not check.ok and "vehicle_status" in check.detail


def test_a_run_reports_the_leak_with_the_rerun_and_drop_removes_it(tmp_path) -> None:
    from mlpilot import Pilot

    data = tmp_path / "crash.csv"
    _crash_like(1500, 0.98).to_csv(data, index=False)
    pilot = Pilot(llm=False, runs_dir=tmp_path / "runs")
    first = pilot.run("predict injured", data, time_budget=15)
    leak = {c["check"]: c for c in first.checks}["leakage"]
    assert not leak["ok"] and "vehicle_status" in leak["detail"]
    rerun = f"--data {data} --time-budget 15 --sandbox local-warm --target injured"
    assert f"{rerun} --drop vehicle_status)" in leak["detail"]
    assert "--drop vehicle_status" in first.report_path.read_text()
    again = pilot.run("predict injured", data, time_budget=15, drop=["vehicle_status"])
    assert {c["check"]: c for c in again.checks}["leakage"]["ok"]
    assert "vehicle_status" not in again.model.feature_columns
    assert again.holdout_score < first.holdout_score  # the leak had inflated it


def test_dropping_an_unknown_column_or_the_target_is_a_clear_error() -> None:
    from mlpilot.errors import DataError

    frame = _crash_like(200, 0.9)
    with pytest.raises(
        DataError,
        match="cannot drop column 'vehicle_stat': no such column; did you mean 'vehicle_status'",
    ):
        TaskSpec.from_data(frame, target="injured", drop=["vehicle_stat"])
    with pytest.raises(DataError, match="cannot drop the target column 'injured'"):
        TaskSpec.from_data(frame, target="injured", drop=["injured"])


def test_a_review_that_gave_no_answer_is_not_reported_as_done() -> None:
    # A review stopped at its time limit used to read as "answered, no leaks": the
    # report then said the LLM had found nothing when it had not looked.
    import threading
    import types

    from mlpilot.agents import finalize
    from mlpilot.llm import LLMTimeout

    task = TaskSpec.from_data(_crash_like(500, 0.5), target="injured")
    assert leakage.ask_llm(LLM(ScriptedLLM([LLMTimeout("stopped at 30 s")])), task) is None
    for reply, expected in ((LLMTimeout("slow"), None), ('{"columns": []}', [])):
        ctx = types.SimpleNamespace(
            llm=LLM(ScriptedLLM([reply])), task=task, remaining=lambda: 10.0
        )
        started = threading.Event()
        wait = finalize.start_leak_review(ctx, after=started)  # type: ignore[arg-type]
        started.set()
        assert wait(1.0) == expected


@pytest.mark.parametrize("problem", ["binary", "multiclass", "regression"])
def test_a_wide_table_shows_the_llm_its_most_associated_columns(problem: str) -> None:
    # 40 noise columns and 4 that go with the target (one numeric, one categorical, at
    # both ends of the table): the review reads 16 columns, those 4 among them, and
    # its prompt is far shorter than one naming all 44.
    rng = np.random.default_rng(0)
    n = 600
    signal = rng.normal(size=n)
    frame = pd.DataFrame({f"noise_{i}": rng.normal(size=n) for i in range(40)})
    frame.insert(0, "paid_amount", signal + rng.normal(scale=0.3, size=n))
    frame.insert(1, "refund_status", np.where(signal + rng.normal(scale=0.5, size=n) > 0, "r", "k"))
    frame["days_to_close"] = -signal + rng.normal(scale=0.5, size=n)
    frame["branch"] = pd.cut(signal, [-np.inf, -1, 0, 1, np.inf], labels=list("abcd")).astype(str)
    if problem == "binary":
        frame["target"] = np.where(signal > 0, "yes", "no")
    elif problem == "multiclass":
        frame["target"] = pd.cut(signal, [-np.inf, -0.5, 0.5, np.inf], labels=["lo", "mid", "hi"])
        frame["target"] = frame["target"].astype(str)
    else:
        frame["target"] = signal * 10 + rng.normal(size=n)
    task = TaskSpec.from_data(frame, target="target")
    assert task.problem_type == problem
    shown = leakage.review_columns(task)
    assert len(shown) == leakage.LLM_COLUMNS == 16
    assert {"paid_amount", "refund_status", "days_to_close", "branch"} <= set(shown)
    assert shown == [c for c in task.feature_columns if c in shown]  # the table's order
    fake = ScriptedLLM(['{"columns": []}'])
    assert leakage.ask_llm(LLM(fake), task) == []
    prompt = fake.calls[0].messages[-1]["content"]
    assert "refund_status" in prompt and "branch" in prompt
    assert sum(f"noise_{i}:" in prompt for i in range(40)) == 12
    small = TaskSpec.from_data(frame[["paid_amount", "noise_0", "target"]], target="target")
    assert leakage.review_columns(small) == ["paid_amount", "noise_0"]  # all, when few
