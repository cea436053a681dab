"""The model a run returns is a scikit-learn estimator: scikit-learn's own machinery
(clone, cross_val_score, CalibratedClassifierCV, Pipeline, the estimator checks)
accepts it, on DataFrame input with categorical columns."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone, is_classifier, is_regressor
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import make_column_transformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from mlpilot.tools import model_io
from mlpilot.tools.model import CombinedEnsemble, PilotModel, WeightedEnsemble


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(0)
    n = 300
    X = pd.DataFrame(
        {
            "x": rng.normal(size=n),
            "z": rng.normal(size=n),
            "city": rng.choice(["oslo", "rome", "lima"], n),
        }
    )
    y = pd.Series(np.where(X.x + (X.city == "rome") + rng.normal(0, 0.5, n) > 0.5, "yes", "no"))
    return X, y


def _pipeline() -> Pipeline:
    encode = make_column_transformer(
        (OneHotEncoder(handle_unknown="ignore"), ["city"]), remainder=StandardScaler()
    )
    return make_pipeline(encode, LogisticRegression())


def _delivered(X: pd.DataFrame, y: pd.Series) -> PilotModel:
    """A model as a run delivers it: a fitted pipeline, wrapped."""
    return PilotModel.wrap(_pipeline().fit(X, y), list(X.columns), "label", "binary")


def test_a_delivered_model_works_with_scikit_learns_machinery(data) -> None:
    X, y = data
    model = _delivered(X, y)
    assert is_classifier(model) and not is_regressor(model)
    assert list(model.feature_names_in_) == ["x", "z", "city"] and model.n_features_in_ == 3
    assert list(model.classes_) == ["no", "yes"]
    fresh = clone(model)  # unfitted, same configuration
    assert fresh.get_params()["feature_columns"] == ["x", "z", "city"]
    with pytest.raises(NotFittedError):
        fresh.predict(X)
    scores = cross_val_score(model, X, y, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.7
    auc = cross_val_score(model, X, y, cv=3, scoring="roc_auc")
    assert auc.min() > 0.75
    calibrated = CalibratedClassifierCV(model, cv=3).fit(X, y)
    proba = calibrated.predict_proba(X)
    assert proba.shape == (300, 2) and np.allclose(proba.sum(axis=1), 1.0)
    # inside a Pipeline, and extra columns (the target among them) ignored
    piped = Pipeline([("same", FunctionTransformer()), ("model", clone(model))]).fit(X, y)
    with_target = X.assign(label=y)
    np.testing.assert_array_equal(piped.predict(X), piped[-1].predict(with_target))
    assert model.score(X, y) == pytest.approx((model.predict(X) == y).mean())


def test_a_regression_model_is_a_regressor_without_probabilities(data) -> None:
    X, _ = data
    y = X.x * 2 + 1
    model = PilotModel.wrap(
        make_pipeline(FunctionTransformer(lambda f: f[["x", "z"]]), Ridge()).fit(X, y),
        list(X.columns),
        "y",
        "regression",
    )
    assert is_regressor(model) and not hasattr(model, "predict_proba")
    assert cross_val_score(model, X, y, cv=3).min() > 0.99  # R², scikit-learn's default
    with pytest.raises(AttributeError):
        model.predict_proba(X)


def test_ensembles_clone_and_refit_without_touching_the_delivered_members(data) -> None:
    X, y = data
    members = [
        _pipeline().fit(X, y),
        make_pipeline(
            make_column_transformer((OneHotEncoder(), ["city"]), remainder="passthrough"),
            HistGradientBoostingClassifier(max_iter=20),
        ).fit(X, y),
    ]
    for inner in (
        WeightedEnsemble(members, [0.7, 0.3], classification=True),
        CombinedEnsemble(
            members,
            "stacking",
            {"coef": np.zeros((1, 4)), "intercept": np.zeros(1)},
            classification=True,
        ),
    ):
        model = PilotModel.wrap(inner, list(X.columns), "label", "binary")
        before = model.predict_proba(X)
        assert is_classifier(inner) and is_classifier(model)
        if isinstance(inner, WeightedEnsemble):
            assert cross_val_score(model, X, y, cv=3).min() > 0.7
        refit = clone(model).fit(X, y)
        assert refit.estimator_.members_[0] is not members[0]
        assert inner.members[0] is members[0]  # the delivered members are not refit
        np.testing.assert_allclose(model.predict_proba(X), before)


def test_model_files_round_trip_and_older_files_still_predict(data, tmp_path) -> None:
    X, y = data
    model = _delivered(X, y)
    model_io.dump(model, tmp_path / "m.skops")
    loaded = model_io.load(tmp_path / "m.skops")
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    # a file written before the fitted attributes existed: its estimator is the fitted one
    old = PilotModel(_pipeline().fit(X, y), ["x", "z", "city"], "label", "binary")
    model_io.dump(old, tmp_path / "old.skops")
    np.testing.assert_array_equal(model_io.load(tmp_path / "old.skops").predict(X), old.predict(X))


def test_arrays_are_read_as_the_columns_in_order_and_bad_input_is_named(data) -> None:
    X, y = data
    model = PilotModel.wrap(
        make_pipeline(StandardScaler(), LogisticRegression()).fit(X[["x", "z"]], y),
        ["x", "z"],
        "label",
        "binary",
    )
    np.testing.assert_array_equal(model.predict(X[["x", "z"]].to_numpy()), model.predict(X))
    with pytest.raises(ValueError, match="X has 3 features, but PilotModel is expecting 2"):
        model.predict(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="Reshape your data"):
        model.predict(np.zeros(2))
    with pytest.raises(Exception, match="lacks 1 training column"):
        model.predict(X[["x"]])


@parametrize_with_checks([PilotModel(LogisticRegression()), PilotModel(Ridge())])
def test_scikit_learns_estimator_checks(estimator, check) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(estimator)
