"""The report's plots: every plot drawn from the numbers it is given, as PNG files the
HTML report holds inline, and nothing drawn (with no error) where there is nothing."""

from __future__ import annotations

import numpy as np
import pytest

from mlpilot.agents import plots

PNG = b"\x89PNG\r\n\x1a\n"


def _trials() -> list[tuple[str, float, float]]:
    rng = np.random.default_rng(0)
    return [(f, float(i), float(0.8 + rng.normal(0, 0.02))) for i, f in
            enumerate(["lightgbm", "linear", "lightgbm", "random_forest"] * 5)]  # fmt: skip


def test_every_classification_plot_is_drawn(tmp_path) -> None:
    rng = np.random.default_rng(1)
    y = rng.choice(["no", "yes"], 200)
    p = np.clip((y == "yes") * 0.6 + rng.uniform(0, 0.4, 200), 0, 1)
    data = plots.PlotInputs(
        metric="ROC AUC",
        greater_is_better=True,
        problem="binary",
        trials=_trials(),
        importances={"lightgbm": {"num_leaves": 0.7, "learning_rate": 0.3}},
        y_true=y,
        predicted=np.column_stack([1 - p, p]),
        classes=["no", "yes"],
        feature_drops=[("tenure", 0.08), ("charges", 0.01)],
        ensemble={"lightgbm-3": 0.6, "linear-0": 0.4},
        llm_seconds={"planner": 7.5, "hpo-warmstart": 20.1},
        feature_gains=[("a * b", 0.02, 0.005, "kept"), ("log(a)", -0.001, 0.004, "rejected")],
    )
    drawn, problems = plots.draw_all(tmp_path, data)
    assert problems == []
    assert {d.file for d in drawn} == {
        "plot-history.png", "plot-params.png", "plot-roc.png", "plot-pr.png",
        "plot-confusion.png", "plot-features.png", "plot-ensemble.png", "plot-llm.png",
        "plot-feature-gains.png",
    }  # fmt: skip
    for d in drawn:
        assert (tmp_path / d.file).read_bytes().startswith(PNG)
        assert d.data_uri(tmp_path).startswith("data:image/png;base64,iVBOR")


def test_regression_and_multiclass_plots(tmp_path) -> None:
    rng = np.random.default_rng(2)
    y = rng.normal(size=100)
    reg = plots.PlotInputs("RMSE", False, "regression", trials=_trials(), y_true=y,
                           predicted=y + rng.normal(0, 0.3, 100))  # fmt: skip
    drawn, _ = plots.draw_all(tmp_path, reg)
    assert {"plot-pred-actual.png", "plot-residuals.png", "plot-history.png"} <= {
        d.file for d in drawn
    }
    assert not (tmp_path / "plot-roc.png").exists()
    labels = rng.choice(["a", "b", "c"], 90)
    proba = rng.dirichlet([1, 1, 1], 90)
    multi = plots.PlotInputs("accuracy", True, "multiclass", y_true=labels, predicted=proba,
                             classes=["a", "b", "c"])  # fmt: skip
    (tmp_path / "m").mkdir()
    drawn, _ = plots.draw_all(tmp_path / "m", multi)
    assert {d.file for d in drawn} == {"plot-roc.png", "plot-confusion.png"}


def test_the_confusion_matrix_counts_integer_labels_held_as_objects(tmp_path) -> None:
    # a run's holdout labels come back as an object array; with integer classes
    # scikit-learn's confusion_matrix refused it ("unknown is not supported")
    y = np.array([0, 0, 1, 1, 1], dtype=object)
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.4, 0.6], [0.7, 0.3]])
    np.testing.assert_array_equal(plots.confusion_counts(y, proba, [0, 1]), [[1, 1], [1, 2]])
    data = plots.PlotInputs("ROC AUC", True, "binary", y_true=y, predicted=proba, classes=[0, 1])
    drawn, problems = plots.draw_all(tmp_path, data)
    assert problems == [] and "plot-confusion.png" in {d.file for d in drawn}


def test_nothing_to_draw_draws_nothing_and_a_failing_plot_is_named(tmp_path) -> None:
    empty = plots.PlotInputs("ROC AUC", True, "binary")
    assert plots.draw_all(tmp_path, empty) == ([], [])
    broken = plots.PlotInputs("ROC AUC", True, "binary", ensemble={"a": 1.0, "b": "x"})  # type: ignore[dict-item]
    drawn, problems = plots.draw_all(tmp_path, broken)
    assert drawn == [] and len(problems) == 1 and problems[0].startswith("Ensemble weights:")


def test_permutation_drops_rank_the_column_the_score_depends_on() -> None:
    import pandas as pd

    rng = np.random.default_rng(3)
    X = pd.DataFrame({"signal": rng.normal(size=300), "noise": rng.normal(size=300)})
    y = X.signal.to_numpy()

    def score(frame: pd.DataFrame) -> float:  # R² of "the model" y ≈ signal
        truth = y[frame.index.to_numpy()]
        return 1 - np.mean((truth - frame.signal.to_numpy()) ** 2) / np.var(truth)

    drops = plots.permutation_drops(score, X, greater_is_better=True)
    assert [c for c, _ in drops] == ["signal", "noise"]
    assert drops[0][1] > 1.0 and drops[1][1] == pytest.approx(0.0)
