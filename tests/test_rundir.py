"""The run directory's owner: atomic writes, a valid run.json after any kill, the clock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from mlpilot.agents.rundir import RunDir, RunMeta, write_atomic
from mlpilot.errors import ConfigError


def meta(**changes) -> RunMeta:
    base = {
        "request": "predict y",
        "data": "/data.csv",
        "target": "y",
        "metric": "accuracy",
        "time_budget": 60.0,
        "max_trials": 10,
    }
    return RunMeta(**{**base, **changes})


def test_a_process_killed_while_it_rewrites_run_json_leaves_a_valid_one(tmp_path) -> None:
    # Guard: write_atomic (temp file + rename). A writer in a tight loop spends most of
    # its time writing, so a plain overwrite would be caught half-written within a few
    # kills.
    run = RunDir(tmp_path)
    run.create(meta())
    writer = (
        "import sys\n"
        "from mlpilot.agents.rundir import RunDir\n"
        "run = RunDir(sys.argv[1])\n"
        "print('ready', flush=True)\n"
        "i = 0\n"
        "while True:\n"
        "    i += 1\n"
        "    run.update(spent_s=float(i), request='x' * (i % 5000))\n"
    )
    rng = np.random.default_rng(0)
    for _ in range(20):
        proc = subprocess.Popen(
            [sys.executable, "-c", writer, str(tmp_path)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(float(rng.uniform(0.05, 0.3)))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert run.meta().spent_s > 0  # parses and validates every time


def test_a_failed_write_keeps_the_old_content(tmp_path, monkeypatch) -> None:
    path = tmp_path / "f.json"
    path.write_text("old")

    def broken_fsync(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, b"new and longer")
    assert path.read_text() == "old"
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left


def test_the_clock_keeps_spent_time_while_the_run_works(tmp_path) -> None:
    run = RunDir(tmp_path)
    run.create(meta(spent_s=10.0))
    with run.clock(10.0) as spent:
        time.sleep(2.3)  # a long trial: no progress event comes
        assert run.meta().spent_s >= 11.5  # saved by the clock, not by events
    assert run.meta().spent_s == pytest.approx(spent(), abs=0.05)
    assert run.meta().spent_s >= 12.3


def test_a_directory_without_a_run_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="is not a run directory"):
        RunDir(tmp_path).meta()
    (tmp_path / "run.json").write_text('{"request": 1}')
    with pytest.raises(ConfigError, match="is not a valid run record"):
        RunDir(tmp_path).meta()


def test_file_names_live_in_one_place(tmp_path) -> None:
    run = RunDir(tmp_path)
    assert run.storage_url == f"sqlite:///{tmp_path / 'optuna.db'}"
    assert run.model_path == tmp_path / "model.skops"
    run.save_predictions("knn-3", np.zeros((4, 2)), np.ones((2, 2)), (0, 1))
    oof, holdout, classes = run.load_predictions("knn-3")  # type: ignore[misc]
    assert oof.shape == (4, 2) and holdout.shape == (2, 2) and classes == [0, 1]
    assert run.load_predictions("knn-4") is None
