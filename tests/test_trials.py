"""Search spaces and sandboxed trials: every family runs, failures are data."""

from __future__ import annotations

import numpy as np
import optuna
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine

from mlpilot.agents.trials import TrialRunner
from mlpilot.sandbox import Limits
from mlpilot.task import TaskSpec
from mlpilot.tools.cv_job import build_estimator, build_pipeline
from mlpilot.tools.data import plain_numbers
from mlpilot.tools.search_spaces import DEFAULTS, SPACES, Param, describe_space, validate_config


@pytest.fixture(scope="module")
def binary_task() -> TaskSpec:
    frame = load_breast_cancer(as_frame=True).frame.sample(200, random_state=0)
    return TaskSpec.from_data(frame, target="target")


@pytest.fixture(scope="module")
def regression_task() -> TaskSpec:
    frame = load_diabetes(as_frame=True).frame.sample(200, random_state=0)
    return TaskSpec.from_data(frame, target="target")


def _low_config(family: str) -> dict:
    """The cheapest corner of each space (small ensembles) that still exercises every parameter."""
    return {
        p.name: (
            p.choices[0]
            if p.kind == "categorical"
            else (p.low if p.kind == "float" else int(p.low))
        )
        for p in SPACES[family]
    }


@pytest.mark.parametrize("family", sorted(SPACES))
def test_every_family_runs_and_is_verified(box, binary_task, regression_task, family) -> None:
    for task in (binary_task, regression_task):
        outcome = TrialRunner(box, task, folds=3).run(
            family, validate_config(family, _low_config(family))
        )
        assert outcome.ok, outcome.reason
        assert outcome.verified
        assert outcome.oof is not None and len(outcome.oof) == len(task.train)
        assert np.isfinite(outcome.cv_score) and np.isfinite(outcome.holdout_score)


def test_a_good_model_scores_well(box, binary_task) -> None:
    outcome = TrialRunner(box, binary_task).run("random_forest", {"n_estimators": 100})
    assert outcome.cv_score > 0.95 and outcome.holdout_score > 0.9
    assert outcome.classes == (0, 1) and outcome.oof.shape == (len(binary_task.train), 2)


def test_a_crashing_trial_is_a_failed_outcome(box, binary_task) -> None:
    outcome = TrialRunner(box, binary_task).run("svm", {"C": -1.0, "gamma": 0.1})
    assert not outcome.ok and not outcome.timed_out
    assert "exited with code 1" in outcome.reason and "C" in outcome.reason


def test_a_timed_out_trial_is_a_failed_outcome(box, binary_task) -> None:
    runner = TrialRunner(box, binary_task, limits=Limits(timeout_s=0.3))
    outcome = runner.run("random_forest", {"n_estimators": 500})
    assert not outcome.ok and outcome.timed_out
    assert "timed out" in outcome.reason


def test_validate_config_checks_ranges_and_drops_unknown_keys() -> None:
    good = validate_config("svm", {"C": 10, "gamma": 0.01, "kernel": "poly"})
    assert good == {"C": 10.0, "gamma": 0.01}
    with pytest.raises(ValueError, match=r"C=5000 is outside \[0.01, 1000"):
        validate_config("svm", {"C": 5000, "gamma": 0.01})
    with pytest.raises(ValueError, match="gamma is missing"):
        validate_config("svm", {"C": 1.0})
    with pytest.raises(ValueError, match="must be an integer"):
        validate_config("knn", {"n_neighbors": 2.5, "weights": "uniform"})
    with pytest.raises(ValueError, match="not one of"):
        validate_config("knn", {"n_neighbors": 3, "weights": "nearest"})
    with pytest.raises(ValueError, match="not a number"):
        validate_config("linear", {"C": "big"})


def test_params_sample_inside_their_space() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        config = {p.name: p.suggest(trial) for p in SPACES["hist_gradient_boosting"]}
        assert validate_config("hist_gradient_boosting", config) == config
        study.tell(trial, 0.0)


def test_space_descriptions_for_prompts() -> None:
    text = describe_space("svm")
    assert "C: float in [0.01, 1000], log scale" in text


def test_bad_param_declarations_are_refused() -> None:
    from mlpilot.errors import ConfigError

    with pytest.raises(ConfigError, match="`low <= high` must hold"):
        Param("x", "int", 5, 1)
    with pytest.raises(ConfigError, match="needs low > 0"):
        Param("x", "float", 0, 1, log=True)


def test_gradient_boosting_copes_with_many_categories(box) -> None:
    """Boosting gets category codes (native splits up to 16 categories); the other
    families one-hot encode, sparse."""
    rng = np.random.default_rng(0)
    n = 300
    frame = pd.DataFrame(
        {
            "state": rng.choice([f"S{i}" for i in range(45)], n),
            "grade": rng.choice([f"G{i}" for i in range(30)], n),
            "amount": rng.normal(size=n),
        }
    )
    frame["y"] = (frame["amount"] + (frame["state"] < "S2") > 0.3).astype(int)
    task = TaskSpec.from_data(frame, target="y")
    for family in ("hist_gradient_boosting", "linear"):
        outcome = TrialRunner(box, task, folds=3).run(family, {})
        assert outcome.ok, outcome.reason
        assert outcome.cv_score > 0.85, (family, outcome.cv_score)  # the signal is learnt
    X = task.X
    boosting = build_pipeline(X, [], build_estimator("hist_gradient_boosting", {}, True, 0))
    linear = build_pipeline(X, [], build_estimator("linear", {}, True, 0))
    assert [name for name, _, _ in boosting.named_steps["pre"].transformers] == ["num", "codes"]
    assert [name for name, _, _ in linear.named_steps["pre"].transformers] == ["num", "cat"]
    import scipy.sparse

    assert scipy.sparse.issparse(linear.named_steps["pre"].fit_transform(X))


def test_boosting_splits_natively_on_few_categories_and_keeps_missing_values() -> None:
    rng = np.random.default_rng(0)
    n = 400
    frame = pd.DataFrame(
        {
            "colour": rng.choice(["red", "green", "blue", None], n),
            "state": [f"S{v:02d}" for v in rng.integers(0, 40, n)],
            "count": pd.array(np.where(rng.random(n) < 0.2, None, rng.integers(0, 9, n)), "Int64"),
            "flag": rng.random(n) < 0.5,
        }
    )
    y = (frame["colour"] == "green").to_numpy() ^ (rng.random(n) < 0.05)
    frame = plain_numbers(frame)  # as the host hands data to jobs: NaN, not pandas.NA
    assert frame["count"].dtype == "float64"
    pipeline = build_pipeline(frame, [], build_estimator("hist_gradient_boosting", {}, True, 0))
    pipeline.fit(frame, y)
    # columns: count, flag, colour (3 categories, split on natively), state (40: a numeric code)
    assert pipeline.named_steps["model"].categorical_features == [2]
    encoded = pipeline.named_steps["pre"].transform(frame)
    assert np.isnan(encoded[:, 0]).sum() == frame["count"].isna().sum()  # missing stays missing
    unseen = frame.head(3).assign(colour=["purple", "green", None], state=["S99", "S01", "S02"])
    assert pipeline.predict_proba(unseen).shape == (3, 2)
    assert pipeline.score(frame, y) > 0.9


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("binary", "random_forest"),
        ("regression", "linear"),
        ("multiclass", "hist_gradient_boosting"),
    ],
)
def test_a_trial_run_first_fold_first_equals_one_job(
    box, binary_task, regression_task, name, family
) -> None:
    """A trial whose first fold ran as a job of its own (to be pruned or not) ends with
    the out-of-fold predictions, scores and verification of the same trial in one job."""
    if name == "multiclass":
        frame = load_wine(as_frame=True).frame
        task = TaskSpec.from_data(frame, target="target")
    else:
        task = binary_task if name == "binary" else regression_task
    runner = TrialRunner(box, task, folds=4)
    params = DEFAULTS[family]
    one = runner.run(family, params)
    first = runner.first_fold(family, params)
    assert first.ok and first.fold == 0, first.reason
    assert first.score == pytest.approx(runner.fold_score(one.oof, one.classes, 0))
    two = runner.run(family, params, first=first)
    assert two.ok and two.verified, two.reason
    assert two.classes == one.classes
    np.testing.assert_allclose(two.oof, one.oof, atol=1e-9)
    assert two.cv_score == pytest.approx(one.cv_score)
    assert two.holdout_score == pytest.approx(one.holdout_score)
    assert two.seconds > first.seconds  # both jobs' time


def test_a_first_fold_that_fails_says_why(box, binary_task) -> None:
    first = TrialRunner(box, binary_task).first_fold("svm", {"C": -1.0, "gamma": 0.1})
    assert not first.ok and first.score is None
    assert first.reason.startswith("fold 0:") and "exited with code 1" in first.reason


def test_cv_job_skips_the_folds_it_is_told_to_skip(binary_task) -> None:
    from sklearn.model_selection import PredefinedSplit, cross_val_predict

    from mlpilot.tools.cv_job import cross_predict

    X = binary_task.X.to_numpy()
    y = binary_task.y
    folds = binary_task.folds(4)
    model = build_estimator("linear", {"C": 1.0}, True, 0)
    full = cross_val_predict(model, X, y, cv=PredefinedSplit(folds), method="predict_proba")
    part = cross_predict(model, X, y, folds, "predict_proba", skip={0})
    assert np.isnan(part[folds == 0]).all()  # not fitted, not predicted
    np.testing.assert_allclose(part[folds != 0], full[folds != 0])


@pytest.mark.filterwarnings("ignore:The least populated class")
def test_a_fold_score_the_metric_cannot_give_is_nan(box) -> None:
    """A rare class absent from fold 0's rows leaves log-loss undefined there: the fold
    has no score (the search then runs the trial whole) rather than an error."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=120), "y": ["a", "b"] * 59 + ["c", "c"]})
    task = TaskSpec.from_data(frame, target="y", metric="log_loss")
    runner = TrialRunner(box, task, folds=5)
    classes = tuple(task.classes)
    pred = np.full((len(task.train), len(classes)), 1 / len(classes))
    missing = [k for k in range(5) if "c" not in set(task.y[runner.fold_of_row == k])]
    present = [k for k in range(5) if k not in missing]
    assert missing and present
    assert np.isnan(runner.fold_score(pred, classes, missing[0]))
    assert np.isfinite(runner.fold_score(pred, classes, present[0]))


def test_each_folds_job_files_are_encoded_once(box, binary_task, monkeypatch) -> None:
    """The verifier's fold-by-fold re-runs send the same files for every member: each
    fold's rows are written to parquet once per runner, and every job gets them."""
    from mlpilot.agents import trials

    encoded: list[int] = []
    real = trials.parquet_bytes

    def counting(frame: pd.DataFrame) -> bytes:
        encoded.append(len(frame))
        return real(frame)

    monkeypatch.setattr(trials, "parquet_bytes", counting)
    runner = TrialRunner(box, binary_task, folds=3)
    encoded.clear()  # the runner's own training and holdout files
    first = runner.refold("linear", DEFAULTS["linear"])
    again = runner.refold("random_forest", DEFAULTS["random_forest"])
    assert first.ok and again.ok, (first.reason, again.reason)
    assert len(encoded) == 2 * 3  # a training file and a holdout file per fold, once
    rows = len(binary_task.train)
    assert sorted(encoded) == sorted(
        n
        for k in range(3)
        for n in (rows - (runner.fold_of_row == k).sum(), (runner.fold_of_row == k).sum())
    )
    assert runner._fold_files(1) == runner._fold_files(1)
