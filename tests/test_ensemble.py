"""Caruana greedy ensemble selection."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlpilot.agents.ensemble import Member, greedy_ensemble
from mlpilot.tools.metrics import get_metric


def _members(y: np.ndarray, noises: list[float], seed: int = 0) -> list[Member]:
    rng = np.random.default_rng(seed)
    return [
        Member(f"m{i}", y + rng.normal(0, s, len(y)), np.zeros(5)) for i, s in enumerate(noises)
    ]


def test_independent_errors_average_out_and_the_ensemble_is_kept() -> None:
    y = np.linspace(0, 10, 400)
    members = _members(y, [1.0, 1.0, 1.0])
    result = greedy_ensemble(members, y, get_metric("rmse"))
    assert result.kept
    assert result.score < result.best_single * 0.8  # ~1/sqrt(3) of a single model's error
    assert len(result.weights) == 3
    assert sum(result.normalized_weights().values()) == pytest.approx(1.0)


def test_a_useless_member_gets_no_weight_and_a_lone_best_is_not_called_an_ensemble() -> None:
    y = np.linspace(0, 10, 400)
    members = _members(y, [0.1, 50.0])
    result = greedy_ensemble(members, y, get_metric("rmse"), rounds=10)
    assert set(result.weights) == {"m0"}
    assert not result.kept  # equal to the best single model, not better
    assert result.best_single_name == "m0"


def test_direction_follows_the_metric_for_probabilities() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 600)
    signal = y + rng.normal(0, 0.8, (3, 600))
    members = [
        Member(f"p{i}", np.column_stack([1 - p, p]), np.zeros((4, 2)))
        for i, p in enumerate(1 / (1 + np.exp(-(signal - 0.5) * 3)))
    ]
    result = greedy_ensemble(members, y, get_metric("roc_auc"), classes=[0, 1])
    assert result.kept and result.score > result.best_single
    accuracy = greedy_ensemble(members, y, get_metric("accuracy"), classes=[0, 1])
    assert accuracy.score >= accuracy.best_single
    assert accuracy.holdout_pred.shape == (4, 2)


def test_weights_are_pick_counts_and_predictions_their_weighted_average() -> None:
    y = np.linspace(0, 10, 200)
    members = _members(y, [0.5, 1.0], seed=3)
    result = greedy_ensemble(members, y, get_metric("rmse"), rounds=20)
    n = sum(result.weights.values())
    expected = sum(m.oof * result.weights.get(m.name, 0) for m in members) / n
    np.testing.assert_allclose(result.oof, expected)
    assert result.weights["m0"] >= result.weights.get("m1", 0)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="at least one member"):
        greedy_ensemble([], np.zeros(3), get_metric("rmse"))
    with pytest.raises(ValueError, match="differ in shape"):
        greedy_ensemble(
            [Member("a", np.zeros(3), np.zeros(1)), Member("b", np.zeros(4), np.zeros(1))],
            np.zeros(3),
            get_metric("rmse"),
        )


def test_an_ensemble_after_the_feature_step_in_a_pipeline_predicts() -> None:
    """The final model with engineered features is Pipeline(features, ensemble); scikit-learn
    asks the last step whether it is fitted, so the ensemble must say so from its members."""
    from sklearn.exceptions import NotFittedError
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from mlpilot.tools.model import WeightedEnsemble

    rng = np.random.default_rng(0)
    X = rng.random((60, 3))
    y = (X[:, 0] > 0.5).astype(int)
    fitted = LogisticRegression().fit(X, y)
    ensemble = WeightedEnsemble([fitted, LogisticRegression(C=0.1).fit(X, y)], [2, 1], True)
    pipe = Pipeline([("features", StandardScaler().fit(X)), ("model", ensemble)])
    assert pipe.predict_proba(X).shape == (60, 2)
    assert (pipe.predict(X) == y).mean() > 0.8
    unfitted = WeightedEnsemble([fitted, LogisticRegression()], [1, 1], True)
    with pytest.raises(NotFittedError):
        Pipeline([("features", StandardScaler().fit(X)), ("model", unfitted)]).predict(X)


@pytest.mark.parametrize("metric", ["roc_auc", "log_loss", "accuracy"])
def test_string_labels_select_the_same_ensemble_as_their_codes(metric: str) -> None:
    # the selection scores labels as their positions in the class order: the same
    # weights and scores as on the labels themselves, classes given in any order
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 3, 300)
    labels = np.array(["good", "bad", "unknown"], dtype=object)[codes]
    classes = ["bad", "good", "unknown"]  # the probability columns' order
    truth = np.eye(3)[pd.Index(classes).get_indexer(labels)]
    members = [
        Member(f"m{i}", np.clip(truth + rng.normal(0, s, truth.shape), 0.01, None), np.zeros(5))
        for i, s in enumerate([0.6, 0.7, 0.8])
    ]
    for m in members:
        m.oof[:] = m.oof / m.oof.sum(axis=1, keepdims=True)
    by_label = greedy_ensemble(members, labels, get_metric(metric), classes=classes)
    by_code = greedy_ensemble(
        members, pd.Index(classes).get_indexer(labels), get_metric(metric), classes=[0, 1, 2]
    )
    assert by_label.weights == by_code.weights
    assert by_label.score == pytest.approx(by_code.score)
    assert by_label.score == pytest.approx(
        get_metric(metric)(
            labels,
            by_label.oof
            if metric != "accuracy"
            else np.asarray(classes, dtype=object)[by_label.oof.argmax(axis=1)],
        )
    )
