"""Metrics that know their direction, so comparing two scores never needs the caller
to remember whether higher is better."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from sklearn import metrics as skm

from mlpilot.errors import ConfigError

ProblemType = Literal["binary", "multiclass", "regression"]
PredictionKind = Literal["label", "proba", "value"]


@dataclass(frozen=True)
class Metric:
    """A scoring rule.

    Attributes:
        name: canonical name ("roc_auc", "rmse", ...).
        greater_is_better: the direction.
        needs: what predictions it scores: class labels, class probabilities
            (one column per class, in sorted class order) or numeric values.
        problem_types: where it applies.
    """

    name: str
    greater_is_better: bool
    needs: PredictionKind
    problem_types: frozenset[str]
    fn: Callable[[Any, Any], float]
    display: str

    def __call__(self, y_true: Any, y_pred: Any) -> float:
        return float(self.fn(np.asarray(y_true), np.asarray(y_pred)))

    def better(self, a: float, b: float) -> bool:
        """True when score ``a`` is strictly better than ``b``."""
        return a > b if self.greater_is_better else a < b

    def sign(self) -> float:
        """+1 when higher is better, -1 otherwise: ``sign() * score`` is always maximised."""
        return 1.0 if self.greater_is_better else -1.0

    def worst(self) -> float:
        return -np.inf if self.greater_is_better else np.inf

    def __str__(self) -> str:
        arrow = "higher is better" if self.greater_is_better else "lower is better"
        return f"{self.display} ({arrow})"


# The metrics that ensembling calls thousands of times (greedy selection scores every
# member at every step, nested cross-validation repeats that per fold) are computed
# here with numpy: scikit-learn's input validation costs about 2 ms a call, which made
# comparing the combiners on 20 members take longer than a short run's whole search.
# tests/test_metrics.py pins them to scikit-learn's values.


def _finite(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, dtype=float)
    if not np.all(np.isfinite(p)):
        raise ValueError("Input contains NaN or infinity.")
    return p


def _binary_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic (ties count one half)."""
    from scipy.stats import rankdata

    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            "Only one class present in y_true. ROC AUC score is not defined in that case."
        )
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """Binary ROC AUC, or the macro average of one-vs-rest AUCs (columns in sorted
    class order), as ``sklearn.metrics.roc_auc_score``."""
    p = _finite(p)
    classes = np.unique(y)
    if p.ndim == 2 and p.shape[1] == 2:
        p = p[:, 1]
    if p.ndim == 1:
        if len(classes) > 2:
            raise ValueError("multiclass ROC AUC needs one probability column per class")
        return _binary_auc(y == classes[-1], p)
    if p.shape[1] != len(classes):
        raise ValueError(
            "Number of classes in y_true not equal to the number of columns in 'y_score'"
        )
    if not np.allclose(p.sum(axis=1), 1.0):
        raise ValueError(
            "Target scores need to be probabilities for multiclass roc_auc, i.e. they "
            "should sum up to 1.0 over classes"
        )
    return float(np.mean([_binary_auc(y == c, p[:, k]) for k, c in enumerate(classes)]))


def _log_loss(y: np.ndarray, p: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes (columns in sorted class order;
    a single column is the greater class's probability), as ``sklearn.metrics.log_loss``
    with probabilities clipped to [1e-15, 1 - 1e-15]."""
    p = _finite(p)
    classes = np.unique(y)
    if p.ndim == 1 or (p.ndim == 2 and p.shape[1] == 1):
        p = p.reshape(-1)
        p = np.column_stack([1 - p, p])
    if len(classes) < 2 and p.shape[1] == 2:
        raise ValueError(
            "y_true contains only one label; log loss needs the labels of every column"
        )
    if p.shape[1] != len(classes):
        raise ValueError(f"y_true has {len(classes)} classes but y_pred has {p.shape[1]} columns")
    p = np.clip(p, 1e-15, 1 - 1e-15)
    p = p / p.sum(axis=1, keepdims=True)
    index = np.searchsorted(classes, y)
    return float(-np.mean(np.log(p[np.arange(len(y)), index])))


def _accuracy(y: np.ndarray, p: np.ndarray) -> float:
    y, p = np.asarray(y).reshape(-1), np.asarray(p).reshape(-1)
    if y.shape != p.shape:
        raise ValueError(f"{len(y)} labels but {len(p)} predictions")
    return float(np.mean(y == p))


def _values(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y, p = np.asarray(y, dtype=float).reshape(-1), _finite(p).reshape(-1)
    if y.shape != p.shape:
        raise ValueError(f"{len(y)} targets but {len(p)} predictions")
    return y, p


def _rmse(y: np.ndarray, p: np.ndarray) -> float:
    y, p = _values(y, p)
    return float(np.sqrt(np.mean((y - p) ** 2)))


_CLS = frozenset({"binary", "multiclass"})
_BIN = frozenset({"binary"})
_REG = frozenset({"regression"})

METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("accuracy", True, "label", _CLS, _accuracy, "accuracy"),
        Metric(
            "balanced_accuracy",
            True,
            "label",
            _CLS,
            skm.balanced_accuracy_score,
            "balanced accuracy",
        ),
        Metric("f1", True, "label", _BIN, lambda y, p: skm.f1_score(y, p, pos_label=_pos(y)), "F1"),
        Metric(
            "recall",
            True,
            "label",
            _BIN,
            lambda y, p: skm.recall_score(y, p, pos_label=_pos(y), zero_division=0.0),
            "recall",
        ),
        Metric(
            "precision",
            True,
            "label",
            _BIN,
            lambda y, p: skm.precision_score(y, p, pos_label=_pos(y), zero_division=0.0),
            "precision",
        ),
        Metric(
            "f1_macro",
            True,
            "label",
            _CLS,
            lambda y, p: skm.f1_score(y, p, average="macro"),
            "macro F1",
        ),
        Metric("roc_auc", True, "proba", _CLS, _roc_auc, "ROC AUC"),
        Metric("log_loss", False, "proba", _CLS, _log_loss, "log-loss"),
        Metric("rmse", False, "value", _REG, _rmse, "RMSE"),
        Metric("mae", False, "value", _REG, skm.mean_absolute_error, "MAE"),
        Metric("r2", True, "value", _REG, skm.r2_score, "R²"),
        Metric("mape", False, "value", _REG, skm.mean_absolute_percentage_error, "MAPE"),
    )
}


def _pos(y: np.ndarray) -> Any:
    return np.unique(y)[-1]


# Phrases a request may use, longest first so "balanced accuracy" beats "accuracy".
_ALIASES: list[tuple[str, str]] = sorted(
    [
        ("balanced accuracy", "balanced_accuracy"),
        ("balanced_accuracy", "balanced_accuracy"),
        ("accuracy", "accuracy"),
        ("acc", "accuracy"),
        ("macro f1", "f1_macro"),
        ("f1 macro", "f1_macro"),
        ("f1_macro", "f1_macro"),
        ("f1", "f1"),
        ("recall", "recall"),
        ("sensitivity", "recall"),
        ("true positive rate", "recall"),
        ("precision", "precision"),
        ("roc auc", "roc_auc"),
        ("roc_auc", "roc_auc"),
        ("auroc", "roc_auc"),
        ("auc", "roc_auc"),
        ("log loss", "log_loss"),
        ("log-loss", "log_loss"),
        ("logloss", "log_loss"),
        ("log_loss", "log_loss"),
        ("cross-entropy", "log_loss"),
        ("cross entropy", "log_loss"),
        ("rmse", "rmse"),
        ("root mean squared error", "rmse"),
        ("mae", "mae"),
        ("mean absolute error", "mae"),
        ("r2", "r2"),
        ("r²", "r2"),
        ("r-squared", "r2"),
        ("mape", "mape"),
        ("mean absolute percentage error", "mape"),
    ],
    key=lambda item: -len(item[0]),
)

DEFAULT_METRIC: dict[str, str] = {
    "binary": "roc_auc",
    "multiclass": "accuracy",
    "regression": "rmse",
}


def get_metric(name: str, problem_type: str | None = None) -> Metric:
    """Looks a metric up by name or alias, and checks it fits the problem type.

    Raises:
        ConfigError: unknown name, or a metric that does not apply to ``problem_type``.
    """
    key = name.strip().lower()
    canonical = next((c for alias, c in _ALIASES if alias == key), key)
    metric = METRICS.get(canonical)
    if metric is None:
        raise ConfigError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
    if problem_type is not None and problem_type not in metric.problem_types:
        fits = [m for m, v in METRICS.items() if problem_type in v.problem_types]
        raise ConfigError(
            f"metric {metric.name!r} does not apply to a {problem_type} task; "
            f"use one of: {', '.join(fits)}"
        )
    return metric


def metric_from_request(request: str) -> Metric | None:
    """The metric a request names ("optimise AUC", "minimise RMSE"), if any."""
    text = request.lower()
    for alias, canonical in _ALIASES:
        if re.search(rf"(?<![\w-]){re.escape(alias)}(?![\w-])", text):
            return METRICS[canonical]
    return None


def default_metric(problem_type: str) -> Metric:
    return METRICS[DEFAULT_METRIC[problem_type]]


def predictions_for(metric: Metric, raw: Any, classes: Any = None) -> np.ndarray:
    """Turns a model's raw output into what ``metric`` scores.

    ``raw`` is class probabilities (n, k) with columns in ``classes`` order, or
    labels, or values. Labels for a label metric are the most probable class.
    """
    out = np.asarray(raw)
    if metric.needs == "value" or out.ndim == 1:
        if metric.needs == "proba" and out.ndim == 1 and out.dtype.kind not in "fc":
            raise ConfigError(f"metric {metric.name!r} needs class probabilities, not labels")
        return out
    if metric.needs == "label":
        if classes is None:
            raise ConfigError("turning probabilities into labels needs the class order")
        return np.asarray(classes)[out.argmax(axis=1)]
    return out
