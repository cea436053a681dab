"""The lightgbm family: early stopping on its own rows, a refit on all of them, native
categorical splits, a portfolio tried before the search, and a saved model that loads
on the host."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer

from mlpilot.agents.hpo import SOURCE_ATTR, HpoAgent
from mlpilot.agents.trials import TrialRunner
from mlpilot.task import TaskSpec
from mlpilot.tools import cv_job
from mlpilot.tools.cv_job import BoostedTrees, _validation_rows, build_estimator, build_pipeline
from mlpilot.tools.data import plain_numbers
from mlpilot.tools.search_spaces import DEFAULTS, PORTFOLIOS, first_configs, validate_config


def test_validation_rows_are_seeded_stratified_and_spare_single_row_classes() -> None:
    y = np.array(["a"] * 80 + ["b"] * 19 + ["c"])
    mask = _validation_rows(y, True, 0.15, seed=3)
    assert mask.sum() == 12 + 3  # 15% of each class with two or more rows
    assert (y[mask] == "a").sum() == 12 and (y[mask] == "b").sum() == 3
    assert not mask[y == "c"].any()  # a class of one row stays in the fit
    assert (mask == _validation_rows(y, True, 0.15, seed=3)).all()
    assert (mask != _validation_rows(y, True, 0.15, seed=4)).any()
    assert _validation_rows(np.arange(40.0), False, 0.15, seed=0).sum() == 6


def test_early_stopping_stops_early_on_noise_and_refits_on_all_rows() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 5))
    noise = rng.integers(0, 2, 600)  # labels with nothing to learn
    signal = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int)
    slow = {"learning_rate": 0.01, "num_leaves": 4}
    on_noise = BoostedTrees(True, dict(slow), seed=0, max_rounds=2000).fit(X, noise)
    on_signal = BoostedTrees(True, dict(slow), seed=0, max_rounds=2000).fit(X, signal)
    assert on_noise.rounds_ < 120 < on_signal.rounds_  # stopped once validation loss rose
    # the delivered model is the refit: its tree count is the (scaled) best round count
    assert on_signal.model_.booster_.num_trees() == on_signal.rounds_
    assert on_signal.model_.n_estimators == on_signal.rounds_
    # refit on every row: a label seen only in the validation split is still learnt
    assert list(on_signal.classes_) == [0, 1]


def test_categorical_columns_are_split_on_natively() -> None:
    rng = np.random.default_rng(0)
    n = 800
    frame = pd.DataFrame(
        {
            "colour": rng.choice([f"c{i}" for i in range(10)], n),
            "x": rng.normal(size=n),
        }
    )
    y = frame["colour"].isin(["c1", "c4", "c7"]).to_numpy().astype(int)  # not monotone in codes
    frame = plain_numbers(frame)
    pipeline = build_pipeline(frame, [], build_estimator("lightgbm", {}, True, 0)).fit(frame, y)
    model = pipeline.named_steps["model"]
    assert model.categorical_features == [1]  # numeric columns first, then the category codes
    first = model.model_.booster_.dump_model()["tree_info"][0]["tree_structure"]
    assert first["decision_type"] == "=="  # a set split on categories, not a threshold
    unseen = frame.head(2).assign(colour=["purple", None])
    assert pipeline.predict_proba(unseen).shape == (2, 2)
    assert pipeline.score(frame, y) == 1.0


def test_lightgbm_splits_natively_on_many_categories_a_few_at_a_time() -> None:
    # 30 neighbourhoods, each with its own price level, in no order of their names:
    # as numeric codes the column says little, split on natively it says everything
    rng = np.random.default_rng(0)
    n = 1500
    names = [f"n{i:02d}" for i in range(30)]
    level = dict(zip(names, rng.permutation(30) * 10.0, strict=True))
    frame = pd.DataFrame({"hood": rng.choice(names, n), "x": rng.normal(size=n)})
    y = frame["hood"].map(level).to_numpy() + rng.normal(size=n)
    frame = plain_numbers(frame)
    pipeline = build_pipeline(frame, [], build_estimator("lightgbm", {}, False, 0)).fit(frame, y)
    model = pipeline.named_steps["model"]
    assert model.categorical_features == [1]  # 30 categories: still split on natively
    params = model.model_.get_params()
    assert params["max_cat_threshold"] == cv_job.LIGHTGBM_MAX_CAT_THRESHOLD
    trees = model.model_.booster_.dump_model()["tree_info"]
    assert trees[0]["tree_structure"]["decision_type"] == "=="
    rmse = float(np.sqrt(np.mean((pipeline.predict(frame) - y) ** 2)))
    assert rmse < 2.0  # the levels span 290: a threshold on codes could not get close
    # scikit-learn's boosting keeps such a column as codes (it overfits many categories)
    hgb = build_pipeline(frame, [], build_estimator("hist_gradient_boosting", {}, False, 0))
    assert hgb.fit(frame, y).named_steps["model"].categorical_features == "from_dtype"  # none here


def test_the_portfolio_comes_from_the_space_and_starts_every_study(box, tmp_path) -> None:
    for config in first_configs("lightgbm"):
        assert validate_config("lightgbm", config) == config
    assert first_configs("lightgbm")[0] == DEFAULTS["lightgbm"]
    assert len(PORTFOLIOS["lightgbm"]) == 2
    assert first_configs("linear") == [DEFAULTS["linear"]]  # families without one
    frame = load_breast_cancer(as_frame=True).frame.sample(150, random_state=0)
    task = TaskSpec.from_data(frame, target="target")
    agent = HpoAgent(TrialRunner(box, task, folds=3), None, storage=f"sqlite:///{tmp_path}/o.db")
    study = agent.optimize("lightgbm", n_trials=4)
    trials = sorted(study.trials, key=lambda t: t.number)
    assert [t.user_attrs[SOURCE_ATTR] for t in trials[:3]] == ["default", "portfolio", "portfolio"]
    assert [t.params for t in trials[:3]] == first_configs("lightgbm")
    assert trials[3].user_attrs[SOURCE_ATTR] == "tpe"


@pytest.mark.parametrize("problem", ["binary", "labels", "regression"])
def test_a_refit_lightgbm_model_loads_on_the_host_and_predicts_alike(box, problem) -> None:
    # "labels": classes named by strings ("good"/"bad"), which LightGBM 4.7's early
    # stopping set does not encode itself
    rng = np.random.default_rng(1)
    n = 240
    frame = pd.DataFrame(
        {
            "a": rng.normal(size=n),
            "b": np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n)),
            "kind": rng.choice(["x", "y", "z"], n),
        }
    )
    signal = frame["a"] + (frame["kind"] == "y") + rng.normal(scale=0.3, size=n)
    frame["target"] = {
        "binary": (signal > 0.5).astype(int),
        "labels": np.where(signal > 0.5, "good", "bad"),
        "regression": signal,
    }[problem]
    task = TaskSpec.from_data(frame, target="target")
    refit = TrialRunner(box, task, folds=3).refit("lightgbm", DEFAULTS["lightgbm"])
    assert refit.ok, refit.reason
    model = refit.model
    steps = [type(step).__name__ for step in model.named_steps.values()]
    assert steps[-1] in ("LGBMClassifier", "LGBMRegressor")  # no class of the job's script
    X = plain_numbers(task.X)
    proba = problem != "regression"
    batch = model.predict_proba(X) if proba else model.predict(X)
    one = model.predict_proba(X.iloc[[7]]) if proba else model.predict(X.iloc[[7]])
    assert np.allclose(batch[7], one[0])
    if problem == "labels":
        assert list(model.classes_) == ["bad", "good"]
        assert set(model.predict(X)) == {"bad", "good"}


def test_the_saved_pipeline_holds_library_types_only() -> None:
    X = pd.DataFrame({"a": np.arange(60.0), "b": np.arange(60.0) % 7})
    y = (X["a"] > 30).astype(int)
    pipeline = build_pipeline(X, [], build_estimator("lightgbm", {}, True, 0)).fit(X, y)
    import skops.io

    untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(cv_job.portable(pipeline)))
    assert not any("cv_job" in name or "BoostedTrees" in name for name in untrusted)
    from mlpilot.tools.model_io import TRUSTED_TYPES

    assert set(untrusted) <= set(TRUSTED_TYPES)
