"""`mlpilot runs`: the runs of a runs directory listed, filtered and compared."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlpilot.agents.rundir import RunDir, RunMeta
from mlpilot.cli import app
from mlpilot.errors import ConfigError
from mlpilot.runs import compare, find_run, list_runs


def _run(root: Path, name: str, **fields) -> Path:
    path = root / name
    path.mkdir(parents=True)
    base = dict(
        request="predict churn",
        data="/data/churn.csv",
        target="churn",
        metric="roc_auc",
        time_budget=120.0,
        max_trials=200,
        created=name[:15],
    )
    RunDir(path).write_meta(RunMeta(**{**base, **fields}))
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    _run(
        tmp_path,
        "20261201-100000-churn",
        status="finished",
        best_family="lightgbm",
        best_score=0.8512,
        holdout_score=0.8431,
    )
    _run(
        tmp_path,
        "20261201-110000-churn",
        status="finished",
        drop=["tenure"],
        time_budget=300.0,
        best_family="linear",
        best_score=0.8302,
        holdout_score=0.8299,
        no_llm=True,
    )
    _run(
        tmp_path,
        "20261201-120000-wine",
        status="running",
        data="/data/wine.csv",
        target="quality",
        request="predict quality",
        metric="accuracy",
    )
    (tmp_path / "data").mkdir()  # not a run: skipped
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "run.json").write_text("{not json")  # unreadable: skipped
    return tmp_path


def test_runs_are_listed_oldest_first_and_filtered(root: Path) -> None:
    assert [r.name for r in list_runs(root)] == [
        "20261201-100000-churn",
        "20261201-110000-churn",
        "20261201-120000-wine",
    ]
    assert [r.name for r in list_runs(root, status="running")] == ["20261201-120000-wine"]
    assert len(list_runs(root, contains="CHURN")) == 2
    assert list_runs(root, contains="quality")[0].meta.target == "quality"
    with pytest.raises(ConfigError, match="no runs directory"):
        list_runs(root / "nowhere")


def test_two_runs_compared_side_by_side_with_what_changed(root: Path) -> None:
    a = find_run(root, "20261201-10")  # a unique prefix
    b = find_run(root, str(root / "20261201-110000-churn"))  # or a path
    rows = {label: (left, right, differs) for label, left, right, differs in compare(a, b)}
    assert rows["dropped columns"] == ("–", "tenure", True)
    assert rows["time budget s"] == ("120", "300", True)
    assert rows["LLM"] == ("embedded", "none", True)
    assert rows["holdout score"] == ("0.8431", "0.8299", True)
    assert rows["target"] == ("churn", "churn", False)
    with pytest.raises(ConfigError, match="names 3 runs"):
        find_run(root, "2026")
    with pytest.raises(ConfigError, match="no run 'x'"):
        find_run(root, "x")


def test_the_runs_command(root: Path) -> None:
    cli = CliRunner()
    listed = cli.invoke(app, ["runs", "--runs-dir", str(root)], env={"COLUMNS": "200"})
    assert listed.exit_code == 0, listed.output
    assert "20261201-110000-churn" in listed.output and "0.8431" in listed.output
    assert f"optuna-dashboard sqlite:///{root / '20261201-120000-wine' / 'optuna.db'}" in (
        listed.output.replace("\n", "")
    )
    only = cli.invoke(app, ["runs", "--runs-dir", str(root), "--status", "running"])
    assert "wine" in only.output and "100000-churn" not in only.output
    both = ["--compare", "20261201-100000", "--compare", "20261201-110000"]
    compared = cli.invoke(app, ["runs", "--runs-dir", str(root), *both], env={"COLUMNS": "200"})
    assert compared.exit_code == 0 and "tenure" in compared.output, compared.output
    one = cli.invoke(app, ["runs", "--runs-dir", str(root), "--compare", "x"])
    assert one.exit_code != 0 and "--compare twice" in one.output
