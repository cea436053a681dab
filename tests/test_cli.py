"""The command line, run as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

# What a command run by these tests sees of the host: nothing that could hold a key,
# and the network guard on (a provider call that would leave the machine fails).
PASSED_ENV = ("PATH", "HOME", "LANG", "TMPDIR", "MLPILOT_EMBEDDED_MODEL", "CI")


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: int = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mlpilot", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=command_env(env),
    )


def command_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    base = {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
    return {**base, "COLUMNS": "200", "MLPILOT_NO_NETWORK_LLM": "1", **(extra or {})}


def test_help_lists_the_commands() -> None:
    done = cli("--help")
    assert done.returncode == 0
    for command in ("quickstart", "llm", "models", "inspect"):
        assert command in done.stdout


def test_version() -> None:
    from mlpilot import __version__

    assert cli("--version").stdout.strip() == f"mlpilot {__version__}"


def test_bad_input_is_one_clear_line_not_a_traceback(tmp_path: Path) -> None:
    done = cli("inspect", str(tmp_path / "missing.csv"), "--target", "y")
    assert done.returncode == 2
    assert "error: data file not found" in done.stderr
    assert "Traceback" not in done.stderr


def test_inspect_reports_inference(tmp_path: Path) -> None:
    from sklearn.datasets import load_diabetes

    path = tmp_path / "diabetes.csv"
    load_diabetes(as_frame=True).frame.to_csv(path, index=False)
    done = cli("inspect", str(path), "--request", "predict target, minimise MAE")
    assert done.returncode == 0, done.stderr
    assert "regression" in done.stdout and "MAE" in done.stdout


def test_models_lists_both_embedded_models() -> None:
    done = cli("models")
    assert done.returncode == 0
    assert "qwen2.5-coder-1.5b" in done.stdout and "qwen2.5-coder-0.5b" in done.stdout
    assert "mlpilot[embedded]" in done.stdout


def test_quickstart_without_llm_is_a_full_verified_run(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    done = cli(
        "quickstart",
        "--no-llm",
        "--dataset",
        "wine",
        "--time-budget",
        "15",
        "--runs-dir",
        str(runs),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (runs / "data" / "wine.csv").exists()  # the exact `mlpilot run` it performs
    assert "Verified trials" in done.stdout and "CV accuracy" in done.stdout
    (run_dir,) = [p for p in runs.iterdir() if p.name != "data"]
    assert "Status: finished" in (run_dir / "report.md").read_text()
    # predictions to submit: class probabilities named by class, the id carried through
    new = pd.read_csv(runs / "data" / "wine.csv").drop(columns=["target"]).head(5)
    new.insert(0, "row_id", [f"r{i}" for i in range(5)])
    new.to_csv(tmp_path / "new.csv", index=False)
    out = tmp_path / "preds.csv"
    args = ("predict", str(run_dir), "--data", str(tmp_path / "new.csv"))
    done = cli(*args, "--proba", "--id", "row_id", "--out", str(out))
    assert done.returncode == 0, done.stderr
    preds = pd.read_csv(out)
    assert list(preds.columns) == ["row_id", "0", "1", "2"]
    assert preds.row_id.tolist() == ["r0", "r1", "r2", "r3", "r4"]
    assert np.allclose(preds[["0", "1", "2"]].sum(axis=1), 1.0)
    labels = cli(*args)  # labels, on stdout
    assert labels.returncode == 0 and labels.stdout.splitlines()[0] == "target_predicted"
    bad = cli(*args, "--id", "rowid")
    assert bad.returncode == 2 and "no id column 'rowid' (close matches: row_id)" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_quickstart_with_unreachable_provider_continues_without_llm(tmp_path: Path) -> None:
    done = cli(
        "quickstart",
        "--dataset",
        "diabetes",
        "--time-budget",
        "15",
        "--runs-dir",
        str(tmp_path),
        "--llm",
        "openai/gpt-4o-mini",
        "--api-base",
        f"http://127.0.0.1:{_closed_port()}/v1",  # nothing listens there: refused at once
    )
    # The provider cannot be reached; the run still completes, without the LLM.
    assert done.returncode == 0, done.stdout + done.stderr
    assert "planned: default (LLM unavailable" in done.stdout


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # free now, and nothing will listen on it


def test_the_commands_these_tests_run_get_no_host_secrets(monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-should-not-pass")
    monkeypatch.setenv("MLPILOT_NO_NETWORK_LLM", "")
    env = command_env()
    assert "OPENAI_API_KEY" not in env and env["MLPILOT_NO_NETWORK_LLM"] == "1"


def test_eval_runs_a_suite_with_baselines_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "ev"
    args = ("eval", "--suite", "penguins,air_passengers", "--runner", "default-gbm")
    done = cli(*args, "--seeds", "2", "--out", str(out))
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted((r["task"], r["seed"]) for r in rows) == [
        ("air_passengers", 0),
        ("air_passengers", 1),
        ("penguins", 0),
        ("penguins", 1),
    ]
    from mlpilot.evals.grader import medal
    from mlpilot.evals.reference import load_reference
    from mlpilot.evals.tasks import TASKS

    reference = load_reference()
    for r in rows:  # each medal is the one the shipped reference pool gives that score
        assert r["valid"], r
        assert r["medal"] == medal(TASKS[r["task"]], r["score"], reference[r["task"]]), r
    assert "any medal" in (out / "summary.md").read_text()
    assert (out / "summary.html").exists()
    again = cli(*args, "--seeds", "2", "--out", str(out))
    assert "resuming: 4 of 4 cells already done" in again.stdout
    assert len((out / "results.jsonl").read_text().splitlines()) == 4


def test_eval_unknown_suite_is_a_clear_error(tmp_path: Path) -> None:
    done = cli("eval", "--suite", "kaggle", "--out", str(tmp_path))
    assert done.returncode == 2 and "unknown suite or task 'kaggle'" in done.stderr


def test_every_command_has_a_help_page() -> None:
    from typing import Any

    import typer
    from typer.testing import CliRunner

    from mlpilot.cli import app

    def paths(command: Any, prefix: tuple[str, ...]) -> list[tuple[str, ...]]:
        found = [prefix]
        for name, sub in getattr(command, "commands", {}).items():  # a group's commands
            found += paths(sub, (*prefix, name))
        return found

    every = paths(typer.main.get_command(app), ())
    assert ("run",) in every and ("eval", "hpo") in every
    runner = CliRunner()
    for path in every:
        done = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "120"})
        assert done.exit_code == 0, (path, done.output, done.exception)
        assert "Usage" in done.output


def test_a_missing_description_file_is_named_before_anything_runs(tmp_path: Path) -> None:
    data = tmp_path / "d.csv"
    data.write_text("a,b,y\n1,2,0\n2,3,1\n3,4,0\n4,5,1\n")
    done = cli("run", "tune", "--data", str(data), "--description", str(tmp_path / "nope.md"))
    assert done.returncode == 2
    assert "no description file at" in done.stdout + done.stderr


def test_the_rerun_command_carries_the_description_and_the_feature_choice() -> None:
    from mlpilot.agents.graph import command_line

    line = command_line(
        "find features", "d.csv", "y", 60, None, "local", description="/x/d.md", features=False
    )
    assert "--description /x/d.md" in line and line.endswith("--no-features")


def test_audit_bad_input_is_a_clear_error_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "audit"
    for args, message in (
        (("--datasets", "999"), "takes 1 to"),
        (("--datasets", "MASS/nothing"), "no audit dataset 'MASS/nothing'"),
        (("--conditions", "typed,guess"), "unknown conditions ['guess']"),
        (("--replay", str(tmp_path / "none")), "holds no audit"),
    ):
        done = cli("audit", *args, "--out", str(out))
        assert done.returncode == 2, done.stderr
        assert message in done.stderr and "Traceback" not in done.stderr
    assert not out.exists()


def test_audit_replays_a_recorded_audit_from_the_command_line(tmp_path: Path) -> None:
    from mlpilot.evals import audit
    from mlpilot.llm import LLM
    from mlpilot.testing import ScriptedLLM
    from mlpilot.testing.auditing import biased_reply

    folder = tmp_path / "audit"
    settings = audit.AuditSettings(
        llms=["embedded"],
        datasets=["MASS/crabs"],
        seeds=1,
        conditions=("typed", "code"),
        reference=False,
        accuracy=False,
    )
    fake = ScriptedLLM([biased_reply("multiply")] * 2, model="embedded/qwen")
    audit.run_audit(settings, folder, make=lambda _: LLM(fake))
    done = cli("audit", "--replay", str(folder), "--out", str(tmp_path / "again"))
    assert done.returncode == 0, done.stderr
    assert "| embedded | typed |" in done.stdout and "multiply" in done.stdout
    assert (tmp_path / "again" / "summary.md").read_text() == (folder / "summary.md").read_text()
