"""The verifier: recomputes every claimed number on the host and looks for leakage.

A check that fails with severity "error" means the result it guards is not
reported as a success; "warning" checks are reported as doubts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from mlpilot.task import TaskSpec
from mlpilot.tools.metrics import predictions_for

Severity = Literal["error", "warning"]
NEAR_PERFECT = 0.995  # a single raw feature scoring this well smells of leakage


@dataclass(frozen=True)
class Check:
    """One verification: what was checked, whether it held, and the evidence."""

    name: str
    ok: bool
    detail: str
    severity: Severity = "error"

    def as_row(self) -> dict[str, Any]:
        return {"check": self.name, "ok": self.ok, "severity": self.severity, "detail": self.detail}


def verify_trial_scores(
    task: TaskSpec, claimed: dict[str, float], artifacts: Path, tol: float = 1e-9
) -> tuple[list[Check], set[str]]:
    """Recomputes each trial's CV score from its saved predictions.

    Args:
        claimed: trial key ("family-number") -> the score recorded in the study.
        artifacts: the directory of ``<key>.npz`` prediction files.

    Returns:
        one summary check, and the keys whose scores were confirmed.
    """
    y = task.y.to_numpy()
    confirmed: set[str] = set()
    problems: list[str] = []
    for key, score in claimed.items():
        path = artifacts / f"{key}.npz"
        try:
            with np.load(path, allow_pickle=False) as saved:
                oof = saved["oof"]
                classes = list(saved["classes"]) or None
        except (OSError, KeyError, ValueError):
            problems.append(f"{key}: predictions missing")
            continue
        mine = task.metric(y, predictions_for(task.metric, oof, classes))
        if abs(mine - score) <= tol * max(1.0, abs(score)):
            confirmed.add(key)
        else:
            problems.append(f"{key}: recorded {score:.6f}, recomputed {mine:.6f}")
    detail = f"{len(confirmed)} of {len(claimed)} trial scores recomputed from predictions"
    if problems:
        detail += "; " + "; ".join(problems[:5])
    return [Check("trial scores", not problems, detail)], confirmed


def verify_holdout(task: TaskSpec, model: Any, claimed: float | None) -> Check:
    """Scores the final model on the holdout, on the host, and compares with the claim."""
    X = task.holdout.features
    raw = (
        model.predict_proba(X)
        if task.metric.needs == "proba" or (task.is_classification and task.metric.needs == "label")
        else model.predict(X)
    )
    classes = list(model.classes_) if task.is_classification else None
    score = task.score_holdout(predictions_for(task.metric, raw, classes))
    if claimed is None:
        return Check("final holdout score", True, f"holdout {task.metric.display} = {score:.4f}")
    ok = abs(score - claimed) <= 1e-6 * max(1.0, abs(claimed))
    return Check(
        "final holdout score",
        ok,
        f"holdout {task.metric.display}: recomputed {score:.6f}, the refit job gave {claimed:.6f}",
    )


def check_leakage(task: TaskSpec, max_features: int = 200) -> list[Check]:
    """Flags features that give the target away.

    * a feature identical to the target;
    * the target a deterministic function of a feature (every value of the
      feature maps to one target value, with far fewer values than rows);
    * a single raw feature that alone scores near-perfectly (rank AUC for
      classification, |Spearman| for regression);
    * ID-like columns left in the features (unique per row).
    """
    X, y = task.X, task.y
    findings: list[str] = []
    n = len(X)
    for col in list(X.columns)[:max_features]:
        s = X[col]
        if s.isna().any():
            s_valid, y_valid = s[s.notna()], y[s.notna()]
        else:
            s_valid, y_valid = s, y
        if len(s_valid) < 10:
            continue
        if s_valid.astype(str).equals(y_valid.astype(str)):
            findings.append(f"{col!r} is identical to the target")
            continue
        n_values = s_valid.nunique()
        if 1 < n_values <= 0.5 * len(s_valid):
            per_value = y_valid.groupby(s_valid.to_numpy()).nunique()
            if (per_value <= 1).all() and y_valid.nunique() > 1:
                findings.append(f"the target is a deterministic function of {col!r}")
                continue
        id_dtype = pd.api.types.is_integer_dtype(s) or pd.api.types.is_object_dtype(s)
        if n_values == n and id_dtype and col not in task.text_columns:
            findings.append(f"{col!r} is ID-like (a unique value per row)")
            continue
        score = _single_feature_score(s_valid, y_valid, task.problem_type)
        if score is not None and score >= NEAR_PERFECT:
            findings.append(f"{col!r} alone scores {score:.3f}")
    if not findings:
        return [Check("leakage", True, "no feature gives the target away", "warning")]
    return [Check("leakage", False, "; ".join(findings[:8]), "warning")]


def _single_feature_score(s: pd.Series, y: pd.Series, problem_type: str) -> float | None:
    if not pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
        return None
    values = s.to_numpy(dtype=float)
    if problem_type == "regression":
        rho = pd.Series(values).rank().corr(pd.Series(y.to_numpy(dtype=float)).rank())
        return None if np.isnan(rho) else abs(float(rho))
    if problem_type == "binary":
        from sklearn.metrics import roc_auc_score

        positive = y.to_numpy() == sorted(y.unique().tolist(), key=str)[-1]
        auc = roc_auc_score(positive, values)
        return max(auc, 1 - auc)
    return None


def check_budget(elapsed_s: float, budget_s: float, margin_s: float) -> Check:
    ok = elapsed_s <= budget_s + margin_s
    return Check(
        "time budget",
        ok,
        f"ran {elapsed_s:.1f} s of a {budget_s:.0f} s budget (+{margin_s:.0f} s margin)",
        "warning",
    )


def all_ok(checks: Sequence[Check]) -> bool:
    """True when no check of severity "error" failed."""
    return all(c.ok for c in checks if c.severity == "error")
