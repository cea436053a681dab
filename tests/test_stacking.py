"""Stacking, the regularized neural ensembler and the nested choice among the methods,
on synthetic out-of-fold predictions whose right answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from mlpilot.agents import stacking
from mlpilot.agents.ensemble import Member
from mlpilot.agents.state import EnsembleSummary, FinalModel
from mlpilot.tools import combiners
from mlpilot.tools.metrics import get_metric

needs_torch = pytest.mark.skipif(not stacking.torch_available(), reason="needs torch")


def binary(p_true: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Probabilities (n, 2) that give the true class ``p_true``."""
    p1 = np.where(y == 1, p_true, 1 - p_true)
    return np.column_stack([1 - p1, p1])


def subgroup_members(n: int = 800, seed: int = 0) -> tuple[list[Member], np.ndarray, np.ndarray]:
    """Member a is sure and right on the first half of the rows and says nothing on
    the second; member b the other way round."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    first = np.arange(n) < n // 2
    a = np.where(first, 0.95, rng.uniform(0.4, 0.6, n))
    b = np.where(first, rng.uniform(0.4, 0.6, n), 0.9)
    members = [
        Member("a", binary(a, y), np.zeros((3, 2))),
        Member("b", binary(b, y), np.zeros((3, 2))),
    ]
    return members, y, first


def useless_members(n: int = 800, seed: int = 1) -> tuple[list[Member], np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    good = np.clip(0.75 + rng.normal(0, 0.1, n), 0.05, 0.95)
    noise = rng.uniform(0.05, 0.95, n)
    return [
        Member("good", binary(good, y), np.zeros((3, 2))),
        Member("useless", np.column_stack([1 - noise, noise]), np.zeros((3, 2))),
    ], y


@needs_torch
def test_the_neural_ensembler_weights_each_member_where_it_is_right() -> None:
    members, y, first = subgroup_members()
    P = combiners.stack([m.oof for m in members])
    nw = stacking.fit_neural(P, y, True, classes=[0, 1])
    w = combiners.neural_weights(nw, P)
    assert w[first, 0].mean() > 0.8 and w[~first, 1].mean() > 0.8  # a on the first half, b after
    logloss = get_metric("log_loss")
    blended = combiners.apply_neural(nw, P, True)
    assert logloss(y, blended) < 0.6 * logloss(y, P.mean(axis=1))
    # the parameters survive the run's state (plain lists) and predict the same
    again = combiners.as_arrays(combiners.as_lists(nw))
    np.testing.assert_allclose(combiners.apply_neural(again, P, True), blended)


@needs_torch
def test_a_useless_member_gets_no_weight_from_stacking_or_the_neural_ensembler() -> None:
    members, y = useless_members()
    P = combiners.stack([m.oof for m in members])
    meta = stacking.fit_stacking(P, y, True, classes=[0, 1])
    coef = np.abs(meta["coef"][0])  # columns: log p(good) per class, then log p(useless)
    assert coef[2:].max() < 0.1 * coef[:2].max()
    nw = stacking.fit_neural(P, y, True, classes=[0, 1])
    assert combiners.neural_weights(nw, P)[:, 1].mean() < 0.15


def test_stacking_learns_the_right_mix_of_values_for_regression() -> None:
    rng = np.random.default_rng(2)
    y = rng.normal(0, 1, 600)
    low, high = y * 0.5 + rng.normal(0, 0.05, 600), y + rng.normal(0, 0.5, 600)
    P = combiners.stack([low, high])
    meta = stacking.fit_stacking(P, y, False)
    rmse = get_metric("rmse")
    assert rmse(y, combiners.apply_stacking(meta, P, False)) < 0.2  # rescales the sure one
    assert rmse(y, P.mean(axis=1)[:, 0]) > 0.3


def test_stacking_keeps_the_class_order_of_the_probability_columns() -> None:
    # classes sorted as strings: "10" before "2"; the meta-model must follow that order
    rng = np.random.default_rng(4)
    classes = ["10", "2", "3"]
    y = rng.choice(classes, 600)
    onehot = np.array([[float(v == c) for c in classes] for v in y])
    sure = 0.8 * onehot + 0.2 / 3
    P = combiners.stack([sure, np.full_like(sure, 1 / 3)])
    meta = stacking.fit_stacking(P, y, True, classes=classes)
    proba = combiners.apply_stacking(meta, P, True)
    assert (proba.argmax(axis=1) == onehot.argmax(axis=1)).mean() == 1.0


@pytest.mark.parametrize("case", ["subgroup", "useless", "equal"])
def test_the_nested_choice_never_picks_a_method_worse_out_of_fold(case) -> None:
    metric = get_metric("log_loss")
    if case == "subgroup":
        members, y, _ = subgroup_members()
    elif case == "useless":
        members, y = useless_members()
    else:  # two copies of one calibrated member: nothing beats it, greedy stays
        rng = np.random.default_rng(3)
        p = rng.uniform(0.05, 0.95, 800)
        y = (rng.random(800) < p).astype(int)
        one = np.column_stack([1 - p, p])
        members = [Member("one", one, np.zeros((3, 2))), Member("copy", one, np.zeros((3, 2)))]
    choice = stacking.choose(members, y, metric, classes=[0, 1], classification=True)
    scored = {m: s for m, s in choice.nested.items() if s is not None}
    assert {"single", "greedy", "stacking"} <= set(scored)
    best = min(scored.values())  # log loss: lower is better
    assert scored[choice.method] <= best + 1e-9 * max(1.0, abs(best))  # a best one, or tied
    if case == "subgroup" and stacking.torch_available():
        assert choice.method in ("stacking", "neural")
        assert scored[choice.method] < 0.8 * scored["greedy"]
    if case == "equal":
        assert choice.method == "greedy"


def test_a_combiner_that_would_pass_the_deadline_is_left_out_with_a_note() -> None:
    import time

    members, y = useless_members()
    choice = stacking.choose(
        members,
        y,
        get_metric("log_loss"),
        classes=[0, 1],
        classification=True,
        deadline=time.monotonic(),  # no time at all: single and greedy still run
    )
    assert choice.nested["stacking"] is None and choice.nested["neural"] is None
    assert choice.nested["greedy"] is not None and choice.method in ("single", "greedy")
    assert "no time for stacking" in choice.note


def test_a_stacked_model_is_assembled_verified_and_saved_like_any_other(tmp_path) -> None:
    """The finalize path with a combiner: the members refit in the sandbox, the host's
    model (CombinedEnsemble) makes the predictions the combiner gave from the jobs'
    holdout predictions, and it survives the trusted model file."""
    from types import SimpleNamespace

    from sklearn.datasets import load_breast_cancer

    from mlpilot.agents import finalize, verifier
    from mlpilot.agents.state import TrialRow
    from mlpilot.agents.trials import TrialRunner
    from mlpilot.sandbox import LocalSandbox
    from mlpilot.task import TaskSpec
    from mlpilot.tools import model_io
    from mlpilot.tools.model import CombinedEnsemble

    frame = load_breast_cancer(as_frame=True).frame.sample(240, random_state=1)
    task = TaskSpec.from_data(frame, target="target", request="minimise log loss")
    configs = {"linear-0": ("linear", {"C": 1.0}), "knn-0": ("knn", {"n_neighbors": 9})}
    with LocalSandbox(warm=True) as box:
        runner = TrialRunner(box, task, folds=3)
        outcomes = {k: runner.run(f, p) for k, (f, p) in configs.items()}
        members = [Member(k, o.oof, o.holdout_pred) for k, o in outcomes.items()]
        classes = list(task.classes or ())
        P = combiners.stack([m.oof for m in members])
        meta = stacking.fit_stacking(P, task.y.to_numpy(), True, classes=classes)
        rows = {
            k: TrialRow(k, f, 0, p, "tpe", 1.0, "", "COMPLETE", 0.9, None, 0.0)
            for k, (f, p) in configs.items()
        }
        ctx = SimpleNamespace(task=task, remaining=lambda: 60.0)
        weights = {k: 0.5 for k in configs}
        model, claimed, why, _ = finalize._refit_candidate(
            ctx, runner, weights, rows, ("stacking", meta)
        )
    assert model is not None, why
    assert isinstance(model.estimator, CombinedEnsemble)
    assert verifier.verify_holdout(task, model, claimed).ok
    path = tmp_path / "model.skops"
    model_io.dump(model, path)
    again = model_io.load(path)  # trusted types only
    X = task.holdout.features
    np.testing.assert_allclose(again.predict_proba(X), model.predict_proba(X))
    # behind engineered features it is a Pipeline's last step, which must pass as fitted
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    piped = Pipeline([("same", FunctionTransformer()), ("model", model.estimator)])
    np.testing.assert_allclose(piped.predict_proba(X), model.estimator.predict_proba(X))


def test_stacking_survives_rows_that_lack_a_class() -> None:
    # three classes, the third absent from the rows the meta-model learns on
    rng = np.random.default_rng(5)
    y = rng.choice([0, 1], 300)
    onehot = np.array([[float(v == c) for c in (0, 1, 2)] for v in y])
    P = combiners.stack([0.7 * onehot + 0.1, np.full_like(onehot, 1 / 3)])
    meta = stacking.fit_stacking(P, y, True, classes=[0, 1, 2])
    proba = combiners.apply_stacking(meta, P, True)
    assert proba.shape == (300, 3) and proba[:, 2].max() < 1e-6
    assert (proba.argmax(axis=1) == y).mean() == 1.0


def _ensemble_section(ensemble: EnsembleSummary, final: FinalModel) -> str:
    from mlpilot.agents.reporter import _env

    return (
        _env()
        .get_template("ensemble.md.j2")
        .render(ensemble=ensemble, final=final, task={"metric": "accuracy"})
    )


def test_the_report_says_when_the_delivered_model_is_not_the_kept_ensemble() -> None:
    nested = {"single": 0.80, "greedy": 0.82, "stacking": None, "neural": None}
    kept = EnsembleSummary(
        kept=True,
        score=0.83,
        best_single=0.80,
        best_single_name="lightgbm-1",
        weights={"lightgbm-1": 0.6, "linear-0": 0.4},
        nested=nested,
    )
    single = FinalModel(ok=True, label="lightgbm-1", weights={"lightgbm-1": 1.0})
    text = _ensemble_section(kept, single)
    assert "Greedy selection kept an ensemble" in text
    assert "The delivered model is not this ensemble but a single trial (lightgbm-1)" in text
    delivered = FinalModel(ok=True, label="ensemble", weights=kept.weights)
    assert "is not this ensemble" not in _ensemble_section(kept, delivered)
    # not kept: the nested scores decide, and the report never says an ensemble that
    # scored higher in sample did not beat the single model
    dropped = kept.model_copy(
        update={"kept": False, "method": "single", "nested": {**nested, "greedy": 0.79}}
    )
    text = _ensemble_section(dropped, single)
    assert "No combination beat the best single model in the nested comparison" in text
    assert "0.8300 on the rows its weights were chosen on" in text
    assert "No ensemble beat the best single model out of fold (0.8300 vs 0.8000)" not in text
    assert "is not this ensemble" not in text
    # greedy won, but its members' re-runs would not fit: said so, not "none beat it"
    text = _ensemble_section(dropped.model_copy(update={"unaffordable": True}), single)
    assert "would not fit the time left, so none is used" in text
    assert "No combination beat" not in text
