"""Running one configuration as a sandboxed cross-validation job, scored on the host.

A trial returns predictions (out-of-fold for the training rows, and for the
holdout rows from a model refit on all of them), never just a number: the host
recomputes the cross-validated score from the predictions and compares it with
the number the job reported, and scores the holdout with labels the job never saw.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlpilot.sandbox import ExecResult, Job, Limits, Sandbox
from mlpilot.task import TaskSpec
from mlpilot.tools import cv_job
from mlpilot.tools.metrics import predictions_for


@dataclass(frozen=True)
class TrialOutcome:
    """What one trial produced, with every score recomputed on the host.

    Attributes:
        ok: the job ran and its predictions passed the checks.
        reason: why not, when ``ok`` is False (timeout, crash, bad predictions...).
        oof: out-of-fold predictions for ``task.train`` (probabilities or values).
        holdout_pred: predictions for the holdout rows.
        classes: the class order of probability columns (classification).
        cv_score: the task metric on ``oof``, computed on the host.
        holdout_score: the task metric on the holdout, computed on the host.
        verified: the job's own reported number matches the host's recomputation.
    """

    family: str
    params: dict[str, Any]
    ok: bool
    reason: str = ""
    oof: np.ndarray | None = field(default=None, repr=False)
    holdout_pred: np.ndarray | None = field(default=None, repr=False)
    classes: tuple[Any, ...] | None = None
    cv_score: float | None = None
    holdout_score: float | None = None
    verified: bool = False
    seconds: float = 0.0
    timed_out: bool = False


def _parquet(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


class TrialRunner:
    """Runs configurations of a task in a sandbox. Thread-safe if the sandbox is.

    Args:
        sandbox: where jobs run.
        task: the task; only features and training labels enter the sandbox.
        folds: cross-validation folds.
        limits: per-trial limits (timeout, memory).
        data_dir: where the job's data files are written once and handed to every
            trial as host paths (the Docker sandbox mounts them read-only); without
            it they travel as bytes, written into each job's directory.
    """

    def __init__(
        self,
        sandbox: Sandbox,
        task: TaskSpec,
        *,
        folds: int = 5,
        limits: Limits | None = None,
        data_dir: Path | None = None,
    ) -> None:
        self.sandbox = sandbox
        self.task = task
        self.folds = folds
        self.limits = limits or Limits(timeout_s=300)
        frames = {"train.parquet": task.train, "holdout.parquet": task.holdout.features}
        self._files: dict[str, bytes | Path] = {}
        for name, frame in frames.items():
            data = _parquet(frame)
            if data_dir is None:
                self._files[name] = data
                continue
            data_dir.mkdir(parents=True, exist_ok=True)
            path = data_dir / name
            if not path.exists() or path.read_bytes() != data:
                tmp = path.with_suffix(".tmp")
                tmp.write_bytes(data)
                tmp.chmod(0o644)  # readable by the sandbox's non-root user
                tmp.replace(path)
            self._files[name] = path
        self._code = Path(cv_job.__file__).read_text()
        self.last_network_isolated = False
        self.last_sandbox: dict[str, Any] = {}  # where the last job ran, for the report

    def submit(
        self,
        family: str,
        params: dict[str, Any],
        *,
        timeout_s: float | None = None,
        **options: Any,
    ) -> ExecResult:
        """Runs the CV job for one configuration; ``options`` go into its config
        (``cv=False`` skips cross-validation, ``save_model=True`` keeps the fitted pipeline)."""
        task = self.task
        config = {
            "family": family,
            "params": params,
            "problem_type": task.problem_type,
            "target": task.target,
            "text_columns": list(task.text_columns),
            "folds": self.folds,
            "seed": task.seed,
            **options,
        }
        limits = self.limits
        if timeout_s is not None:
            limits = Limits(**{**limits.__dict__, "timeout_s": max(1.0, timeout_s)})
        job = Job(code=self._code, files={**self._files, "config.json": json.dumps(config)})
        run = self.sandbox.run(job, limits=limits)
        self.last_network_isolated = run.network_isolated
        self.last_sandbox = {
            "backend": run.backend,
            "network_isolated": run.network_isolated,
            "gpus": run.gpus,
        }
        return run

    def run(
        self, family: str, params: dict[str, Any], *, timeout_s: float | None = None
    ) -> TrialOutcome:
        task = self.task
        run = self.submit(family, params, timeout_s=timeout_s)
        base = {"family": family, "params": dict(params), "seconds": run.duration_s}
        if not run.ok:
            return TrialOutcome(ok=False, reason=run.summary(), timed_out=run.timed_out, **base)
        try:
            art = run.artifacts
            oof = np.load(art["oof.npy"], allow_pickle=False)
            hold = np.load(art["holdout_pred.npy"], allow_pickle=False)
            claimed = json.loads(art["result.json"].read_text())
            classes = (
                tuple(json.loads(art["classes.json"].read_text()))
                if "classes.json" in art
                else None
            )
        except (KeyError, OSError, ValueError) as e:
            return TrialOutcome(ok=False, reason=f"the job's outputs are unreadable: {e}", **base)
        problem = _check_predictions(oof, hold, len(task.train), len(task.holdout.features))
        if problem:
            return TrialOutcome(ok=False, reason=problem, **base)
        metric = task.metric
        y = task.y.to_numpy()
        cv = metric(y, predictions_for(metric, oof, classes))
        holdout = task.score_holdout(predictions_for(metric, hold, classes))
        mine, theirs = _self_check(oof, y, classes, claimed)
        verified = theirs is not None and abs(mine - theirs) <= 1e-9
        return TrialOutcome(
            ok=True,
            reason="" if verified else f"the job claimed {theirs}, the host recomputed {mine}",
            oof=oof,
            holdout_pred=hold,
            classes=classes,
            cv_score=cv,
            holdout_score=holdout,
            verified=verified,
            **base,
        )


def _check_predictions(oof: np.ndarray, hold: np.ndarray, n_train: int, n_hold: int) -> str:
    if len(oof) != n_train:
        return f"expected {n_train} out-of-fold predictions, got {len(oof)}"
    if len(hold) != n_hold:
        return f"expected {n_hold} holdout predictions, got {len(hold)}"
    for name, arr in (("out-of-fold", oof), ("holdout", hold)):
        if arr.dtype.kind not in "fiu" or not np.all(np.isfinite(arr)):
            return f"{name} predictions are not finite numbers"
    return ""


def _self_check(
    oof: np.ndarray, y: np.ndarray, classes: tuple[Any, ...] | None, claimed: dict[str, Any]
) -> tuple[float, float | None]:
    """The job's own score next to the host's recomputation of the same quantity."""
    if classes is not None:
        labels = np.asarray(classes)[oof.argmax(axis=1)]
        theirs = claimed.get("cv_accuracy")
        return float(np.mean(labels == y)), None if theirs is None else float(theirs)
    theirs = claimed.get("cv_rmse")
    return float(np.sqrt(np.mean((oof - y) ** 2))), None if theirs is None else float(theirs)


@dataclass(frozen=True)
class RefitOutcome:
    """A configuration refit on all training rows in the sandbox."""

    family: str
    params: dict[str, Any]
    ok: bool
    reason: str = ""
    model_path: Path | None = None
    holdout_pred: np.ndarray | None = field(default=None, repr=False)
    classes: tuple[Any, ...] | None = None
    seconds: float = 0.0


def refit(
    runner: TrialRunner,
    family: str,
    params: dict[str, Any],
    destination: Path,
    *,
    timeout_s: float | None = None,
) -> RefitOutcome:
    """Fits ``family`` with ``params`` on all training rows in the sandbox (no CV) and
    copies the fitted pipeline to ``destination``."""
    run = runner.submit(family, params, timeout_s=timeout_s, cv=False, save_model=True)
    base = {"family": family, "params": dict(params), "seconds": run.duration_s}
    if not run.ok or "model.joblib" not in run.artifacts:
        return RefitOutcome(ok=False, reason=run.summary(), **base)
    art = run.artifacts
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.write_bytes(art["model.joblib"].read_bytes())
    classes = tuple(json.loads(art["classes.json"].read_text())) if "classes.json" in art else None
    hold = np.load(art["holdout_pred.npy"], allow_pickle=False)
    return RefitOutcome(ok=True, model_path=destination, holdout_pred=hold, classes=classes, **base)
