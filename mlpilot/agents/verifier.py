"""The verifier: recomputes every claimed number on the host (leakage: see
:mod:`mlpilot.agents.leakage`).

A check that fails with severity "error" means the result it guards is not
reported as a success; "warning" checks are reported as doubts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from mlpilot.agents.trials import CLAIM_MISMATCH, FOLD_RERUN_TOLERANCE, FoldRerun
from mlpilot.task import TaskSpec
from mlpilot.tools.metrics import predictions_for

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Check:
    """One verification: what was checked, whether it held, and the evidence."""

    name: str
    ok: bool
    detail: str
    severity: Severity = "error"

    def as_row(self) -> dict[str, Any]:
        return {"check": self.name, "ok": self.ok, "severity": self.severity, "detail": self.detail}


def check_claims(rows: Sequence[Any]) -> Check:
    """Trials whose job reported a score its own predictions do not give: they were
    failed when they finished, so they are in no leaderboard, ensemble or final model;
    this check says which, so the report shows them.

    Args:
        rows: every trial of the run (:class:`~mlpilot.agents.state.TrialRow`).
    """
    liars = [r for r in rows if r.reason.startswith(CLAIM_MISMATCH)]
    finished = sum(1 for r in rows if r.cv_score is not None)
    if not liars:
        return Check(
            "job claims",
            True,
            f"each of {finished} finished trials' own score matched its predictions",
            "warning",
        )
    shown = "; ".join(f"{r.key}: {r.reason[len(CLAIM_MISMATCH) + 2 :]}" for r in liars[:5])
    return Check(
        "job claims",
        False,
        f"{len(liars)} trial(s) claimed a score their predictions do not give and were "
        f"excluded: {shown}",
        "warning",
    )


@dataclass(frozen=True)
class RerunVerdict:
    """Whether a trial's out-of-fold score held when its CV was re-run fold by fold."""

    key: str
    ok: bool
    detail: str
    rerun_score: float | None = None


def judge_rerun(key: str, recorded: float, rerun: FoldRerun) -> RerunVerdict:
    """Compares a trial's recorded CV score with its fold-by-fold re-run.

    An honest job gives the same predictions both ways (same folds, rows, encodings);
    out-of-fold predictions that saw their own labels score better than the re-run.
    """
    if not rerun.ok or rerun.cv_score is None:
        return RerunVerdict(key, False, f"{key}: could not be re-run fold by fold ({rerun.reason})")
    gap = abs(recorded - rerun.cv_score)
    if gap > FOLD_RERUN_TOLERANCE * max(1.0, abs(rerun.cv_score)):
        return RerunVerdict(
            key,
            False,
            f"{key}: its out-of-fold predictions score {recorded:.4f}, the same configuration "
            f"re-run fold by fold {rerun.cv_score:.4f} (its predictions saw their own labels)",
            rerun.cv_score,
        )
    return RerunVerdict(key, True, "", rerun.cv_score)


def check_reruns(verdicts: Sequence[RerunVerdict], skipped: Sequence[str] = ()) -> Check:
    """One check over the final candidates' fold-by-fold re-runs; ``skipped`` says which
    candidates were not re-run for lack of time (and so could not be the final model)."""
    bad = [v for v in verdicts if not v.ok]
    detail = (
        f"{len(verdicts) - len(bad)} of {len(verdicts)} final candidates' CV re-run fold by "
        "fold, each job seeing only its fold's training labels, gave the recorded score"
    )
    if bad:
        detail += "; excluded: " + "; ".join(v.detail for v in bad[:5])
    if skipped:
        detail += "; " + "; ".join(skipped)
    return Check("fold-by-fold CV", not bad, detail, "warning")


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


def same_predictions(
    task: TaskSpec, model: Any, sent: np.ndarray, classes: list[Any] | None
) -> str:
    """Whether ``model``, recomputed on the host, makes the holdout predictions a job
    sent, value by value (not only their score: a job that has seen the holdout's
    labels could send a perfect score's worth of them). Returns the problem, or ""."""
    X = task.holdout.features
    if task.is_classification:
        if classes is None or [str(c) for c in model.classes_] != [str(c) for c in classes]:
            return f"class order {list(model.classes_)} against the job's {classes}"
        mine = model.predict_proba(X)
    else:
        mine = model.predict(X)
    mine, sent = np.asarray(mine, dtype=float), np.asarray(sent, dtype=float)
    if not task.is_classification:
        mine, sent = mine.ravel(), sent.ravel()
    if mine.shape != sent.shape:
        return f"{sent.shape} predictions sent, the model makes {mine.shape}"
    gap = float(np.max(np.abs(mine - sent))) if mine.size else 0.0
    scale = max(1.0, float(np.max(np.abs(mine)))) if mine.size else 1.0
    if gap > 1e-6 * scale:
        return f"they differ by up to {gap:.3g}"
    return ""


def check_feature_leaks(records: Sequence[Any]) -> Check:
    """Engineered features refused as possible leaks (they follow the row order, or
    predict the target almost perfectly alone): a doubt about the data, not about the
    model, which never used them."""
    refused = [r for r in records if r.verdict == "refused"]
    if not refused:
        return Check("engineered-feature leaks", True, "no proposed feature looked like a leak")
    detail = "; ".join(f"{r.formula}: {r.why}" for r in refused[:5])
    return Check(
        "engineered-feature leaks",
        False,
        f"{len(refused)} proposed feature(s) refused, never used: {detail}",
        "warning",
    )


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
