"""Grading: a submission is validated, scored on the hidden answers, and given a medal
from the task's reference leaderboard.

Medals (how, exactly): each task's reference pool is the test scores of a fixed set
of baseline runs (see :mod:`mlpilot.evals.reference`). Ordering scores so that
better is larger, a submission earns

* gold when it is at least as good as the best run in the pool,
* silver when it is at least as good as the pool's 75th percentile,
* bronze when it is at least as good as the pool's median,

(percentiles with linear interpolation), and nothing otherwise. Its normalised
score is (score - dummy) / (best - dummy): 0 is the constant predictor of the
training labels (majority class, class prior or mean), 1 the pool's best run.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlpilot.evals.tasks import ID, EvalTask

MEDALS = ("gold", "silver", "bronze")
PERCENTILES = {"gold": 100.0, "silver": 75.0, "bronze": 50.0}


class InvalidSubmission(ValueError):
    """A submission that cannot be scored; the message says what is wrong."""


@dataclass(frozen=True)
class Grade:
    valid: bool
    score: float | None = None
    medal: str | None = None
    normalised: float | None = None
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_submission(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise InvalidSubmission(f"no submission file at {path}")
    try:
        return pd.read_csv(path)
    except Exception as e:  # empty file, binary junk, bad quoting
        raise InvalidSubmission(f"the submission is not a readable CSV: {e}") from e


def validate(task: EvalTask, submission: pd.DataFrame, answers: pd.DataFrame) -> np.ndarray:
    """The submission's predictions in the answers' row order, or InvalidSubmission."""
    expected = task.submission_columns()
    if list(submission.columns) != expected:
        missing = [c for c in expected if c not in submission.columns]
        extra = [c for c in submission.columns if c not in expected]
        raise InvalidSubmission(
            f"the columns must be exactly {expected}; missing: {missing or 'none'}, "
            f"unexpected: {extra or 'none'}"
        )
    if len(submission) != len(answers):
        raise InvalidSubmission(
            f"the submission has {len(submission)} rows; the test set has {len(answers)}"
        )
    ids = submission[ID]
    if ids.isna().any():
        raise InvalidSubmission(f"{int(ids.isna().sum())} rows have no {ID}")
    if ids.duplicated().any():
        raise InvalidSubmission(f"{int(ids.duplicated().sum())} {ID}s appear more than once")
    try:
        ids = ids.astype(answers[ID].dtype)
    except (TypeError, ValueError) as e:
        raise InvalidSubmission(f"the {ID}s are not of the test set's type: {e}") from e
    unknown = set(ids) - set(answers[ID])
    if unknown:
        shown = sorted(unknown, key=str)[:5]
        raise InvalidSubmission(f"{len(unknown)} {ID}s are not in the test set, e.g. {shown}")
    values = submission.set_index(ids)[task.target].reindex(answers[ID])
    if values.isna().any():
        raise InvalidSubmission(f"{int(values.isna().sum())} predictions are missing (NaN)")
    needs = task.scorer.needs
    if needs in ("proba", "value"):
        numeric = pd.to_numeric(values, errors="coerce")
        if numeric.isna().any():
            bad = values[numeric.isna()].iloc[0]
            raise InvalidSubmission(f"predictions must be numbers; got {bad!r}")
        out = numeric.to_numpy(dtype=float)
        if not np.isfinite(out).all():
            raise InvalidSubmission("predictions must be finite numbers (no inf)")
        if needs == "proba" and ((out < 0) | (out > 1)).any():
            raise InvalidSubmission("probabilities must lie between 0 and 1")
        return out
    classes = set(answers[task.target].astype(str))
    labels = values.astype(str)
    unknown_labels = set(labels) - classes
    if unknown_labels:
        raise InvalidSubmission(
            f"unknown classes {sorted(unknown_labels)[:5]}; the classes are {sorted(classes)}"
        )
    return labels.to_numpy()


def score(task: EvalTask, predictions: np.ndarray, answers: pd.DataFrame) -> float:
    truth = answers[task.target]
    if task.scorer.needs == "proba":
        y = (truth.astype(str) == str(task.positive)).astype(int).to_numpy()
        return task.scorer(y, predictions)
    if task.scorer.needs == "label":
        return task.scorer(truth.astype(str).to_numpy(), predictions)
    return task.scorer(truth.to_numpy(dtype=float), predictions)


def grade(
    task: EvalTask, submission: Path, answers: pd.DataFrame, reference: dict[str, Any] | None
) -> Grade:
    """Validates and scores ``submission``; an invalid one is a Grade with valid=False."""
    try:
        predictions = validate(task, read_submission(submission), answers)
    except InvalidSubmission as e:
        return Grade(valid=False, error=str(e))
    value = score(task, predictions, answers)
    if reference is None:
        return Grade(valid=True, score=value)
    return Grade(
        valid=True,
        score=value,
        medal=medal(task, value, reference),
        normalised=normalised(task, value, reference),
    )


def thresholds(task: EvalTask, reference: dict[str, Any]) -> dict[str, float]:
    """Each medal's threshold, in the metric's own units."""
    sign = task.scorer.sign()
    pool = sign * np.asarray(list(reference["pool"].values()), dtype=float)
    return {m: float(sign * np.percentile(pool, PERCENTILES[m])) for m in MEDALS}


def medal(task: EvalTask, value: float, reference: dict[str, Any]) -> str | None:
    sign = task.scorer.sign()
    for name, limit in thresholds(task, reference).items():
        if sign * value >= sign * limit - 1e-12:
            return name
    return None


def normalised(task: EvalTask, value: float, reference: dict[str, Any]) -> float | None:
    sign = task.scorer.sign()
    best = max(sign * float(v) for v in reference["pool"].values())
    dummy = sign * float(reference["dummy"])
    if not math.isfinite(dummy) or best == dummy:
        return None
    return (sign * value - dummy) / (best - dummy)
