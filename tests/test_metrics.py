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
