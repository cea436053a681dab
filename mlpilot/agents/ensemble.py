"""Greedy ensemble selection with replacement (Caruana et al., 2004).

Starting from an empty ensemble, each round adds the model whose inclusion
most improves the ensemble's out-of-fold score (a model may be added again,
which raises its weight). The best ensemble seen along the way is kept, and
only if it beats the best single model out of fold.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mlpilot.tools.metrics import Metric, predictions_for


@dataclass(frozen=True)
class Member:
    """A candidate's predictions: out of fold (training rows) and on the holdout."""

    name: str
    oof: np.ndarray = field(repr=False)
    holdout_pred: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class EnsembleResult:
    """The selected ensemble.

    Attributes:
        weights: member name -> how many times it was picked (its weight is count / total).
        score: the ensemble's out-of-fold score.
        best_single: the best single member's out-of-fold score.
        best_single_name: which member that is.
        kept: True when the ensemble beats the best single member out of fold.
        oof, holdout_pred: the ensemble's weighted-average predictions.
        history: the ensemble's score after each round.
    """

    weights: dict[str, int]
    score: float
    best_single: float
    best_single_name: str
    kept: bool
    oof: np.ndarray = field(repr=False)
    holdout_pred: np.ndarray = field(repr=False)
    history: list[float] = field(default_factory=list)

    def normalized_weights(self) -> dict[str, float]:
        total = sum(self.weights.values())
        return {name: count / total for name, count in self.weights.items()}


def greedy_ensemble(
    members: Sequence[Member],
    y: np.ndarray,
    metric: Metric,
    *,
    classes: Sequence[Any] | None = None,
    rounds: int = 50,
) -> EnsembleResult:
    """Selects an ensemble of ``members`` by Caruana's greedy forward selection.

    Args:
        members: candidates with aligned predictions (same rows, same class order).
        y: the training labels the out-of-fold predictions are scored against.
        metric: the task metric (its direction decides "better").
        classes: the class order of probability columns (classification).
        rounds: how many additions to try.

    Raises:
        ValueError: no members, or members whose predictions do not align.
    """
    if not members:
        raise ValueError("ensemble selection needs at least one member, but got none")
    shapes = {m.oof.shape for m in members}
    if len(shapes) != 1:
        raise ValueError(f"members' out-of-fold predictions differ in shape: {sorted(shapes)}")

    y, classes = _as_codes(y, classes)

    def score(pred: np.ndarray) -> float:
        return metric(y, predictions_for(metric, pred, classes))

    best_i, singles = best_member(members, y, metric, classes=classes)
    total = np.zeros_like(members[0].oof, dtype=float)
    counts: Counter[int] = Counter()
    history: list[float] = []
    best_score, best_counts = metric.worst(), Counter[int]()
    for step in range(1, rounds + 1):
        trial_scores = [score((total + m.oof) / step) for m in members]
        pick = max(range(len(members)), key=lambda i: metric.sign() * trial_scores[i])
        total += members[pick].oof
        counts[pick] += 1
        history.append(trial_scores[pick])
        if metric.better(trial_scores[pick], best_score):
            best_score, best_counts = trial_scores[pick], Counter(counts)
    n = sum(best_counts.values())
    # One distinct member is not an ensemble, and a float-rounding gain is not a gain.
    margin = 1e-9 * max(1.0, abs(singles[best_i]))
    kept = len(best_counts) >= 2 and metric.sign() * (best_score - singles[best_i]) > margin
    oof = sum(members[i].oof * c for i, c in best_counts.items()) / n
    holdout = sum(members[i].holdout_pred * c for i, c in best_counts.items()) / n
    return EnsembleResult(
        weights={members[i].name: c for i, c in sorted(best_counts.items())},
        score=best_score,
        best_single=singles[best_i],
        best_single_name=members[best_i].name,
        kept=kept,
        oof=np.asarray(oof),
        holdout_pred=np.asarray(holdout),
        history=history,
    )


def best_member(
    members: Sequence[Member],
    y: np.ndarray,
    metric: Metric,
    *,
    classes: Sequence[Any] | None = None,
) -> tuple[int, list[float]]:
    """The position of the best member by its out-of-fold score (the first of equals),
    and every member's score."""
    y, classes = _as_codes(y, classes)
    scores = [metric(y, predictions_for(metric, m.oof, classes)) for m in members]
    return max(range(len(members)), key=lambda i: metric.sign() * scores[i]), scores


def _as_codes(y: np.ndarray, classes: Sequence[Any] | None) -> tuple[np.ndarray, Any]:
    """Labels as their positions in ``classes`` (and the classes as those positions),
    so the thousands of metric calls of a selection find the classes of an integer
    array: on string labels, sorting them took most of the time (20 s of a 35 s
    comparison on 4,507 rows). Unchanged when a label is not among ``classes``."""
    if classes is None:
        return y, classes
    codes = pd.Index(list(classes)).get_indexer(np.asarray(y))
    if (codes < 0).any():
        return y, classes
    return codes, np.arange(len(classes))
