"""Metrics know their direction and their names."""

from __future__ import annotations

import numpy as np
import pytest

from mlpilot.errors import ConfigError
from mlpilot.tools.metrics import get_metric, metric_from_request, predictions_for


def test_direction_is_known_by_the_metric() -> None:
    auc, rmse = get_metric("auc"), get_metric("rmse")
    assert auc.better(0.9, 0.8) and not auc.better(0.8, 0.9)
    assert rmse.better(1.0, 2.0) and not rmse.better(2.0, 1.0)
    assert rmse.sign() * 1.0 > rmse.sign() * 2.0


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("optimise AUC", "roc_auc"),
        ("minimise RMSE please", "rmse"),
        ("maximize balanced accuracy", "balanced_accuracy"),
        ("use log-loss", "log_loss"),
        ("best macro F1", "f1_macro"),
        ("tune a model for this dataset", None),
    ],
)
def test_metric_named_in_a_request(text: str, name: str | None) -> None:
    found = metric_from_request(text)
    assert (found.name if found else None) == name


def test_scores_match_hand_computation() -> None:
    y = np.array([0, 1, 1, 0])
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    labels = predictions_for(get_metric("accuracy"), proba, classes=[0, 1])
    assert labels.tolist() == [0, 1, 0, 1]
    assert get_metric("accuracy")(y, labels) == 0.5
    assert get_metric("roc_auc")(y, predictions_for(get_metric("roc_auc"), proba)) == 0.75
    assert get_metric("rmse")([1.0, 2.0], [1.0, 4.0]) == pytest.approx(np.sqrt(2.0))


def test_label_metric_needs_the_class_order() -> None:
    with pytest.raises(ConfigError, match="class order"):
        predictions_for(get_metric("accuracy"), np.eye(2))


def test_the_fast_metrics_agree_with_scikit_learn() -> None:
    """roc_auc, log_loss, accuracy and rmse are computed with numpy (ensembling calls
    them thousands of times); they must give scikit-learn's values, ties included."""
    from sklearn import metrics as skm

    from mlpilot.tools.metrics import METRICS

    rng = np.random.default_rng(0)
    for trial in range(20):
        n = int(rng.integers(20, 300))
        k = 2 if trial % 2 else int(rng.integers(3, 6))
        y = rng.integers(0, k, n)
        y[:k] = np.arange(k)  # every class present
        labels = np.array([f"c{v}" for v in y]) if trial % 3 == 0 else y
        P = rng.dirichlet(np.ones(k), n)
        if trial % 4 == 0:
            P = np.round(P, 1)  # ties
            P = P / P.sum(axis=1, keepdims=True)
        auc = METRICS["roc_auc"](labels, P)
        ovr = {"multi_class": "ovr"} if k > 2 else {}
        want = skm.roc_auc_score(labels, P if k > 2 else P[:, 1], **ovr)
        assert auc == pytest.approx(want, abs=1e-12)
        assert METRICS["log_loss"](labels, P) == pytest.approx(
            skm.log_loss(labels, np.clip(P, 1e-15, 1 - 1e-15)), abs=1e-9
        )
        classes = np.unique(labels)
        predicted = classes[P.argmax(axis=1)]
        assert METRICS["accuracy"](labels, predicted) == skm.accuracy_score(labels, predicted)
        values = rng.normal(size=n)
        guess = values + rng.normal(size=n)
        want_rmse = np.sqrt(skm.mean_squared_error(values, guess))
        assert METRICS["rmse"](values, guess) == pytest.approx(want_rmse, rel=1e-12)
    # a binary problem given one column (the greater class's probability)
    yb = np.array([0, 1, 1, 0, 1])
    pb = np.array([0.2, 0.7, 0.4, 0.4, 0.9])
    assert METRICS["roc_auc"](yb, pb) == skm.roc_auc_score(yb, pb)
    assert METRICS["log_loss"](yb, pb) == pytest.approx(skm.log_loss(yb, pb))
    with pytest.raises(ValueError, match="Only one class"):
        METRICS["roc_auc"](np.zeros(5), pb)
    with pytest.raises(ValueError, match="NaN"):
        METRICS["roc_auc"](yb, np.array([0.2, np.nan, 0.4, 0.4, 0.9]))
