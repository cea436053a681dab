"""The evaluation harness: tasks, grading, medals, resuming, and that the agent never
sees the test labels."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from mlpilot.evals import grader
from mlpilot.evals.harness import read_results, run_eval, write_summary
from mlpilot.evals.reference import load_reference
from mlpilot.evals.runners import DefaultRunner, MlpilotRunner, Outcome, PublicTask
from mlpilot.evals.tasks import ID, SUITES, TASKS, EvalTask, prepare
from mlpilot.sandbox import LocalSandbox


def _binary_frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    return pd.DataFrame(
        {
            "x": x,
            "z": rng.normal(size=200),
            "y": np.where(x + rng.normal(size=200) > 0, "pos", "neg"),
        }
    )


BINARY = EvalTask(
    "toy_binary",
    "Toy",
    "binary",
    _binary_frame,
    "y",
    "roc_auc",
    "Predict y.",
    "tests",
    positive="pos",
)
LABELS = EvalTask(
    "toy_labels",
    "Toy",
    "binary",
    _binary_frame,
    "y",
    "accuracy",
    "Predict y.",
    "tests",
    positive="pos",
)


@pytest.fixture
def prepared(tmp_path: Path):
    return prepare(BINARY, tmp_path / "tasks")


def _submission(prepared, tmp_path: Path, frame: pd.DataFrame) -> Path:
    path = tmp_path / "sub.csv"
    frame.to_csv(path, index=False)
    return path


def _good(prepared) -> pd.DataFrame:
    answers = prepared.answers()
    rng = np.random.default_rng(1)
    return pd.DataFrame({ID: answers[ID][::-1].to_numpy(), "y": rng.random(len(answers))})


def test_every_task_splits_with_hidden_labels_and_describes_itself(tmp_path: Path) -> None:
    assert len(TASKS) >= 10
    kinds = {t.kind for t in TASKS.values()}
    assert kinds == {"binary", "multiclass", "regression", "text", "forecast"}
    for name in SUITES["smoke"]:
        p = prepare(TASKS[name], tmp_path)
        test = pd.read_csv(p.test_csv)
        train = pd.read_csv(p.train_csv)
        assert TASKS[name].target not in test.columns  # labels stay with the grader
        assert set(train[ID]).isdisjoint(test[ID])
        assert list(p.answers()[ID]) == list(test[ID])
        text = (p.public / "description.md").read_text()
        assert TASKS[name].target in text and "## Submission" in text
        sample = pd.read_csv(p.public / "sample_submission.csv")
        assert grader.grade(
            TASKS[name], p.public / "sample_submission.csv", p.answers(), None
        ).valid
        assert len(sample) == len(test)
    # The split is part of the task: the same every time.
    a, _ = TASKS["titanic"].split()
    b, _ = TASKS["titanic"].split()
    pd.testing.assert_frame_equal(a, b)


def test_forecast_task_holds_out_the_last_months() -> None:
    train, test = TASKS["air_passengers"].split()
    assert len(test) == 24
    assert train["months_since_start"].max() < test["months_since_start"].min()


def test_a_valid_submission_is_scored_on_the_hidden_labels(prepared, tmp_path: Path) -> None:
    sub = _good(prepared)
    result = grader.grade(BINARY, _submission(prepared, tmp_path, sub), prepared.answers(), None)
    answers = prepared.answers()
    expected = roc_auc_score(
        (answers["y"] == "pos").astype(int), sub.set_index(ID).loc[answers[ID], "y"]
    )
    assert result.valid and result.score == pytest.approx(expected)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.drop(columns=["y"]), "columns must be exactly"),
        (lambda s: s.assign(extra=1), "unexpected: ['extra']"),
        (lambda s: s.rename(columns={ID: "Id"}), "missing: ['id']"),
        (lambda s: s.iloc[:-1], "rows; the test set has"),
        (lambda s: pd.concat([s.iloc[:-1], s.iloc[:1]]), "appear more than once"),
        (lambda s: s.assign(id=s[ID].where(s.index != 0)), "rows have no id"),
        (lambda s: s.assign(id=s[ID].replace(s[ID].iloc[0], 10**9)), "not in the test set"),
        (lambda s: s.assign(y=s["y"].where(s.index != 3)), "predictions are missing"),
        (lambda s: s.assign(y=["high", *list(s["y"].iloc[1:])]), "must be numbers"),
        (lambda s: s.assign(y=np.r_[np.inf, s["y"].iloc[1:]]), "finite"),
        (lambda s: s.assign(y=s["y"] + 1.5), "between 0 and 1"),
    ],
)
def test_bad_submissions_are_invalid_with_the_reason(
    prepared, tmp_path: Path, change, message
) -> None:
    path = _submission(prepared, tmp_path, change(_good(prepared)))
    result = grader.grade(BINARY, path, prepared.answers(), {"pool": {"a": 0.5}, "dummy": 0.5})
    assert not result.valid and result.score is None and result.medal is None
    assert message in result.error


def test_unreadable_or_missing_files_and_unknown_classes_are_invalid(tmp_path: Path) -> None:
    p = prepare(LABELS, tmp_path / "tasks")
    answers = p.answers()
    missing = grader.grade(LABELS, tmp_path / "nope.csv", answers, None)
    assert not missing.valid and "no submission file" in missing.error
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert "not a readable CSV" in grader.grade(LABELS, empty, answers, None).error
    labels = pd.DataFrame({ID: answers[ID], "y": ["pos"] * (len(answers) - 1) + ["maybe"]})
    labels.to_csv(tmp_path / "labels.csv", index=False)
    result = grader.grade(LABELS, tmp_path / "labels.csv", answers, None)
    assert not result.valid and "unknown classes ['maybe']" in result.error


def test_medals_follow_the_reference_percentiles_in_either_direction() -> None:
    pool = {f"r{i}": v for i, v in enumerate([0.70, 0.72, 0.74, 0.76, 0.80])}
    ref = {"pool": pool, "dummy": 0.5}
    acc = TASKS["titanic"]  # accuracy, higher is better
    assert grader.thresholds(acc, ref) == pytest.approx(
        {"gold": 0.80, "silver": 0.76, "bronze": 0.74}
    )
    assert [grader.medal(acc, v, ref) for v in (0.81, 0.80, 0.77, 0.74, 0.73)] == [
        "gold",
        "gold",
        "silver",
        "bronze",
        None,
    ]
    assert grader.normalised(acc, 0.5, ref) == pytest.approx(0.0)
    assert grader.normalised(acc, 0.8, ref) == pytest.approx(1.0)
    rmse = TASKS["concrete"]  # lower is better
    ref = {"pool": {"a": 4.0, "b": 5.0, "c": 6.0}, "dummy": 16.0}
    assert grader.thresholds(rmse, ref) == pytest.approx(
        {"gold": 4.0, "silver": 4.5, "bronze": 5.0}
    )
    assert [grader.medal(rmse, v, ref) for v in (3.9, 4.4, 5.0, 5.1)] == [
        "gold",
        "silver",
        "bronze",
        None,
    ]
    assert grader.normalised(rmse, 10.0, ref) == pytest.approx(0.5)


def test_the_shipped_reference_covers_every_task() -> None:
    reference = load_reference()
    for name, task in TASKS.items():
        entry = reference[name]
        assert entry["metric"] == task.metric
        assert len(entry["pool"]) == 6
        # the pool's best beats the constant predictor
        best = max(task.scorer.sign() * v for v in entry["pool"].values())
        assert best > task.scorer.sign() * entry["dummy"]


class _Fake:
    """A runner that copies the sample submission, and can be told to fail or to stop."""

    def __init__(self, name: str, stop_at: int | None = None, fail: bool = False) -> None:
        self.name = name
        self.calls: list[tuple[str, int]] = []
        self.stop_at = stop_at
        self.fail = fail

    def __call__(self, task: PublicTask, work: Path, seed: int, budget: float) -> Outcome:
        self.calls.append((task.task.name, seed))
        if self.stop_at is not None and len(self.calls) == self.stop_at:
            raise KeyboardInterrupt
        if self.fail:
            raise RuntimeError("boom")
        out = work / "submission.csv"
        out.write_text((task.folder / "sample_submission.csv").read_text())
        return Outcome(out, tokens=7)


def test_an_interrupted_eval_resumes_where_it_stopped(tmp_path: Path) -> None:
    tasks = [BINARY, LABELS]
    first = _Fake("fake", stop_at=3)
    with pytest.raises(KeyboardInterrupt):
        run_eval(tasks, [first], seeds=range(2), budget=10, out=tmp_path, reference={})
    assert len(read_results(tmp_path)) == 2
    with (tmp_path / "results.jsonl").open("a") as f:
        f.write('{"task": "toy_bin')  # a line torn by a kill
    second = _Fake("fake")
    rows = run_eval(tasks, [second], seeds=range(2), budget=10, out=tmp_path, reference={})
    assert second.calls == [("toy_labels", 0), ("toy_labels", 1)]  # only what was missing
    assert sorted((r["task"], r["seed"]) for r in rows) == [
        ("toy_binary", 0),
        ("toy_binary", 1),
        ("toy_labels", 0),
        ("toy_labels", 1),
    ]
    assert all(r["valid"] and r["tokens"] == 7 for r in rows)
    # another budget is another set of cells
    third = _Fake("fake")
    run_eval(tasks, [third], seeds=range(1), budget=20, out=tmp_path, reference={})
    assert len(third.calls) == 2


def test_a_failing_runner_is_an_invalid_submission_with_the_reason(tmp_path: Path) -> None:
    rows = run_eval(
        [BINARY], [_Fake("broken", fail=True)], seeds=[0], budget=10, out=tmp_path, reference={}
    )
    assert rows[0]["valid"] is False and "runner failed: RuntimeError: boom" in rows[0]["error"]
    text = write_summary(tmp_path, rows, [BINARY], "t")
    assert "(1 invalid)" in text and (tmp_path / "summary.html").exists()


def test_baseline_runs_get_medals_and_a_summary(tmp_path: Path) -> None:
    task = TASKS["penguins"]
    reference = load_reference()
    rows = run_eval(
        [task], [DefaultRunner()], seeds=range(2), budget=10, out=tmp_path, reference=reference
    )
    assert len(rows) == 2
    for row in rows:
        assert row["valid"], row["error"]
        assert row["medal"] == grader.medal(task, row["score"], reference["penguins"])
        assert row["score"] == pytest.approx(reference["penguins"]["pool"]["default-gbm"])
    text = write_summary(tmp_path, rows, [task], "penguins")
    assert "| default-gbm |" in text and "penguins (accuracy, ↑)" in text
    assert "<table>" in (tmp_path / "summary.html").read_text()
    runner_line = next(line for line in text.splitlines() if line.startswith("| default-gbm"))
    assert " ± " in runner_line  # two seeds: a standard error
    # one seed has no standard error: the summary says nothing rather than "± 0"
    one = write_summary(tmp_path, rows[:1], [task], "penguins")
    assert all(" ± " not in line for line in one.splitlines() if line.startswith("| "))


class _SpySandbox(LocalSandbox):
    """Records everything handed to jobs: code, files and environment."""

    def __init__(self) -> None:
        super().__init__(warm=True)
        self.seen: list[tuple[str, dict[str, Any], dict[str, str]]] = []

    def run(self, job, files=None, limits=None):  # type: ignore[no-untyped-def]
        from mlpilot.sandbox import Job

        j = job if isinstance(job, Job) else Job(code=job)
        self.seen.append((j.code, {**j.files, **(files or {})}, dict(j.env)))
        return super().run(job, files, limits)


def _numbers(source: Any) -> set[float]:
    """Every number in a file handed to a job (tables read as tables)."""
    if isinstance(source, Path):
        if source.suffix == ".parquet":
            frame = pd.read_parquet(source)
            return {float(v) for c in frame.select_dtypes("number") for v in frame[c]}
        source = source.read_bytes()
    text = source.decode(errors="ignore") if isinstance(source, bytes) else str(source)
    return {float(m) for m in re.findall(r"-?\d+\.\d+", text)}


def test_an_agent_run_never_sees_the_test_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)

    def load() -> pd.DataFrame:
        x = rng.normal(size=(160, 3))
        # every target value is unique: a test label found anywhere is a leak
        y = x @ [1.5, -2.0, 0.5] + rng.normal(scale=0.1, size=160) + rng.random(160) * 1e-6
        return pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "target": y})

    task = EvalTask(
        "leak", "Leak", "regression", load, "target", "rmse", "Predict target.", "tests"
    )
    prepared = prepare(task, tmp_path / "tasks")
    hidden = set(prepared.answers()["target"].round(12))
    spy = _SpySandbox()
    try:
        rows = run_eval(
            [task],
            [MlpilotRunner(llm=False, sandbox=spy)],
            seeds=[0],
            budget=15,
            out=tmp_path,
            reference={},
        )
    finally:
        spy.close()
    assert rows[0]["valid"], rows[0]["error"]
    assert spy.seen, "the run used the sandbox"
    private = str(prepared.private)
    for code, files, env in spy.seen:
        assert private not in code and not any(private in v for v in env.values())
        for source in files.values():
            assert private not in str(source)
            assert not {round(v, 12) for v in _numbers(source)} & hidden
    # and the run folder holds no copy of the answers either
    for path in (tmp_path / "work").rglob("*"):
        if path.is_file() and path.suffix in (".csv", ".json", ".parquet"):
            assert (
                not {round(v, 12) for v in _numbers(path)} & hidden or path.name == "submission.csv"
            )


def test_search_baselines_tune_within_their_budget(tmp_path: Path) -> None:
    from mlpilot.evals.runners import make_runner
    from mlpilot.tools import cv_job

    task = TASKS["penguins"]
    prepared = prepare(task, tmp_path / "tasks")
    spy = _SpySandbox()
    try:
        for name in ("random-gbm", "tpe-gbm"):
            # llm is mlpilot's alone; the sandbox is where the baselines' trials run too
            runner = make_runner(name, llm=False, sandbox=spy)
            assert getattr(runner, "sandbox", None) is spy
            work = tmp_path / name
            work.mkdir()
            before = len(spy.seen)
            outcome = runner(PublicTask(task, prepared.public), work, 0, 4.0)
            assert "best {" in outcome.detail
            assert grader.grade(task, outcome.submission, prepared.answers(), None).valid
            # the search is the HPO agent's: its trial job, in the sandbox, on host folds
            jobs = spy.seen[before:]
            assert jobs and all(code == Path(cv_job.__file__).read_text() for code, _, _ in jobs)
            assert all("folds.npy" in files for _, files, _ in jobs)
    finally:
        spy.close()


def test_the_reference_search_is_determined_by_its_seed(tmp_path: Path) -> None:
    from mlpilot.evals.runners import search

    task = TASKS["penguins"]
    train = pd.read_csv(prepare(task, tmp_path / "tasks").train_csv)
    first = search(task, train, "random", seed=0, max_trials=3, sandbox="local")
    again = search(task, train, "random", seed=0, max_trials=3, sandbox="local")
    other = search(task, train, "random", seed=1, max_trials=3, sandbox="local")
    assert first and first == again  # no budget, one trial at a time: reproducible
    assert other != first
