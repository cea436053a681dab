"""Which family gets the next trial: every family's first trial first, then by the
estimated cost for improvement, so a clear leader gets most of a short search."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from mlpilot.agents.allocation import (
    FamilyRecord,
    choose_family,
    estimated_costs,
    improvement_rate,
)
from mlpilot.agents.finalize import finish_seconds


def draws(records: dict[str, FamilyRecord], n: int = 2000, seed: int = 0) -> Counter[str]:
    rng = random.Random(seed)
    return Counter(choose_family(records, rng, list(records)) for _ in range(n))


def test_a_family_never_started_goes_first_whatever_the_others_scored() -> None:
    records = {
        "lightgbm": FamilyRecord(seconds=[6.0, 6.0], losses=[10.0, 9.0]),
        "linear": FamilyRecord(seconds=[], losses=[]),
    }
    assert all(
        choose_family(records, random.Random(s), list(records)) == "linear" for s in range(20)
    )


def test_a_family_whose_only_trial_is_running_gets_no_second_one() -> None:
    records = {
        "lightgbm": FamilyRecord(seconds=[], losses=[], in_flight=1),
        "linear": FamilyRecord(seconds=[2.0], losses=[5.0]),
    }
    assert set(draws(records, 200)) == {"linear"}


def test_the_leader_gets_most_trials_and_the_others_keep_a_chance() -> None:
    # ames at 60 s: LightGBM leads and has improved once; the forest is 11% behind,
    # the linear model 25% behind and cheap
    records = {
        "lightgbm": FamilyRecord(seconds=[6.6, 6.6], losses=[27777.0, 26677.0]),
        "random_forest": FamilyRecord(seconds=[7.7], losses=[29701.0]),
        "linear": FamilyRecord(seconds=[1.9], losses=[33374.0]),
    }
    counts = draws(records)
    assert counts["lightgbm"] > 0.55 * 2000
    assert counts["lightgbm"] > counts["random_forest"] > counts["linear"] > 0


def test_a_family_far_behind_gets_less_than_one_close_behind() -> None:
    base = {"leader": FamilyRecord(seconds=[1.0, 1.0], losses=[1.0, 0.5])}
    close = estimated_costs({**base, "other": FamilyRecord(seconds=[1.0], losses=[0.6])})
    far = estimated_costs({**base, "other": FamilyRecord(seconds=[1.0], losses=[5.0])})
    assert far["other"] > close["other"]
    # gap 4.5 at the leader's rate of 0.5 per second: 9 s
    assert far["other"] == pytest.approx(9.0)
    assert close["leader"] == pytest.approx(1.0)


def test_a_leader_that_stopped_improving_costs_more_as_time_passes() -> None:
    fresh = FamilyRecord(seconds=[2.0, 2.0], losses=[3.0, 2.0])
    stale = FamilyRecord(seconds=[2.0, 2.0, 2.0, 2.0, 2.0], losses=[3.0, 2.0, 2.5, 2.6, 2.4])
    assert estimated_costs({"f": stale})["f"] == pytest.approx(6.0)  # 6 s since its best
    assert estimated_costs({"f": fresh})["f"] == pytest.approx(2.0)


def test_improvement_rate_reads_the_last_improvement_and_failures_cost_time() -> None:
    record = FamilyRecord(seconds=[1.0, 3.0, 1.0], losses=[4.0, None, 2.0])
    assert improvement_rate(record) == pytest.approx(2.0 / 4.0)
    assert improvement_rate(FamilyRecord(seconds=[1.0], losses=[1.0])) is None
    failing = estimated_costs(
        {
            "ok": FamilyRecord(seconds=[1.0], losses=[1.0]),
            "failing": FamilyRecord(seconds=[5.0], losses=[None]),
        }
    )
    assert failing["failing"] >= 10.0 > failing["ok"]


def test_the_search_leaves_more_time_after_it_when_trials_are_slow() -> None:
    quick = finish_seconds(1.0, folds=5, workers=1, all_rows_ratio=1.25)
    slow = finish_seconds(18.0, folds=5, workers=1, all_rows_ratio=1.25)
    # a re-run of the best trial alone takes its own time again
    assert slow - quick > 17.0
    # a small data set: about what a 60 s run on titanic spent after its search (14 s)
    assert quick < 18.0


def test_before_any_improvement_a_cheap_family_far_behind_is_not_favoured() -> None:
    # each family's first trial only: linear is cheap but 20% behind
    records = {
        "lightgbm": FamilyRecord(seconds=[4.7], losses=[27777.0]),
        "random_forest": FamilyRecord(seconds=[8.0], losses=[29701.0]),
        "linear": FamilyRecord(seconds=[2.1], losses=[33374.0]),
    }
    counts = draws(records)
    assert counts["lightgbm"] > counts["random_forest"] > counts["linear"] > 0
    assert counts["linear"] < 0.1 * 2000


def test_gains_below_the_noise_do_not_keep_a_family_in_the_lead_cheaply() -> None:
    # wa_churn: a cheap linear model whose trials differ in the fifth digit of the AUC
    # (losses are negated scores), LightGBM 0.004 behind after one trial
    linear = FamilyRecord(seconds=[1.1] * 12, losses=[-0.83990 - 0.000004 * i for i in range(12)])
    records = {"linear": linear, "lightgbm": FamilyRecord(seconds=[5.0], losses=[-0.8361])}
    costs = estimated_costs(records)
    assert improvement_rate(linear) is None
    assert costs["linear"] == pytest.approx(11 * 1.1)  # all the time since its first
    assert costs["lightgbm"] < costs["linear"]


def test_an_ensemble_keeps_to_the_members_whose_re_runs_fit_the_time_left() -> None:
    from mlpilot.agents.finalize import all_rows_cost, verification_cost
    from mlpilot.agents.graph import affordable_members

    seconds = {"lgb-4": 3.0, "lgb-1": 3.0, "rf-2": 6.0, "linear-0": 0.5}
    ranked = ["lgb-4", "rf-2", "lgb-4", "lgb-1", "linear-0"]  # best single, then by weight
    every = verification_cost([*seconds.values()], [*seconds.values()], 5, 2)
    assert affordable_members(ranked, seconds, every, folds=5, workers=2) == [
        "lgb-4",
        "rf-2",
        "lgb-1",
        "linear-0",
    ]
    two = verification_cost([3.0, 6.0], [3.0, 6.0], 5, 2)
    # the next member (lgb-1) would not fit; none after it is taken either
    assert affordable_members(ranked, seconds, two + 0.1, folds=5, workers=2) == ["lgb-4", "rf-2"]
    # with their refit on all rows (a quarter more rows) the two no longer fit
    assert affordable_members(
        ranked, seconds, two + 0.1, folds=5, workers=2, all_rows_ratio=1.25
    ) == ["lgb-4"]
    both = two + all_rows_cost([3.0, 6.0], 5, 2, 1.25)
    assert affordable_members(
        ranked, seconds, both + 0.1, folds=5, workers=2, all_rows_ratio=1.25
    ) == [
        "lgb-4",
        "rf-2",
    ]
    # the best single is always kept, whatever its cost
    assert affordable_members(ranked, seconds, 0.0, folds=5, workers=2) == ["lgb-4"]


def _ensemble_step(monkeypatch, y, oof: dict, seconds: dict, remaining_s: float):
    """The ensemble step's summary for trials with these out-of-fold predictions and
    seconds (best first, in ``oof``'s order), with ``remaining_s`` of the budget left."""
    import pandas as pd

    from mlpilot.agents import graph
    from mlpilot.agents.state import TrialRow
    from mlpilot.tools.metrics import get_metric

    rows = [
        TrialRow(k, k[0], 0, {}, "default", seconds[k], "", "COMPLETE", -1.0, -1.0, 0.0)
        for k in oof
    ]
    monkeypatch.setattr(graph, "trial_rows", lambda *_: rows)

    class Ctx:
        task = type("T", (), {"y": pd.Series(y), "metric": get_metric("rmse")})()
        task.is_classification = False
        task.train = range(len(y))
        task.holdout = type("H", (), {"features": range(len(y) // 4)})()
        run = type("R", (), {"storage_url": "sqlite://"})()
        run.load_predictions = staticmethod(lambda key: (oof[key], oof[key][:10], None))
        hpo_settings = type("S", (), {"parallel": 2, "folds": 5})()

        def remaining(self) -> float:
            return remaining_s

        def emit(self, *a, **k) -> None:
            pass

    runtime = type("RT", (), {"context": Ctx()})()
    return graph.ensemble_node({}, runtime)["ensemble"]  # type: ignore[arg-type,index]


def test_the_ensemble_step_keeps_greedy_to_members_it_can_verify(monkeypatch) -> None:
    import numpy as np

    from mlpilot.agents import stacking

    rng = np.random.default_rng(0)
    y = rng.normal(size=600)
    # three members with independent errors: their average beats each of them
    oof = {k: y + rng.normal(scale=1.0, size=600) for k in ("a-0", "b-0", "c-0")}
    seconds = {"a-0": 1.0, "b-0": 1.0, "c-0": 30.0}  # c's re-run takes far too long
    monkeypatch.setattr(
        stacking,
        "choose",
        lambda *a, **k: stacking.Choice("greedy", {"single": 1.0, "greedy": 0.9}, {}, {}, ""),
    )

    plenty = _ensemble_step(monkeypatch, y, oof, seconds, 600.0)
    assert plenty.kept and set(plenty.weights) == {"a-0", "b-0", "c-0"}
    assert "kept to" not in plenty.note
    short = _ensemble_step(monkeypatch, y, oof, seconds, 10.0)  # a, b re-run in seconds, c in 30
    assert short.kept and set(short.weights) == {"a-0", "b-0"}
    assert "greedy kept to 2 of its 3 members" in short.note and not short.unaffordable
    # time for a's and b's re-runs, not for their refit on all rows as well: no ensemble
    from mlpilot.agents.finalize import BUDGET_MARGIN_S, all_rows_cost, verification_cost
    from mlpilot.agents.graph import ENSEMBLE_SAFETY_S

    verify = verification_cost([1.0, 1.0], [1.0, 1.0], 5, 2)
    refit = all_rows_cost([1.0, 1.0], 5, 2, 1.25)
    between = verify + refit / 2 - BUDGET_MARGIN_S / 2 + ENSEMBLE_SAFETY_S
    tight = _ensemble_step(monkeypatch, y, oof, seconds, between)
    assert not tight.kept and "greedy kept to 1 of its 3" in tight.note
    # over time: only the best single is re-run; no ensemble, and why
    none = _ensemble_step(monkeypatch, y, oof, seconds, -6.0)
    assert not none.kept and none.unaffordable and "greedy kept to 1 of its 3" in none.note


def test_a_combiner_is_chosen_again_over_the_members_it_can_verify(monkeypatch) -> None:
    # Guard: stacking uses every member, so one slow member made the final step deliver a
    # single trial (ames, diamonds at 120 s); it is compared again over those that fit.
    import numpy as np

    rng = np.random.default_rng(0)
    y = rng.normal(size=600)
    # each member sees half the signal: a linear meta-model (weights summing to about 2)
    # beats any average of them by far, so stacking wins whichever members it gets
    oof = {k: 0.5 * y + rng.normal(scale=0.3, size=600) for k in ("a-0", "b-0", "c-0")}
    seconds = {"a-0": 1.0, "b-0": 1.0, "c-0": 30.0}

    plenty = _ensemble_step(monkeypatch, y, oof, seconds, 600.0)
    assert plenty.kept and plenty.method == "stacking"
    assert plenty.members == ["a-0", "b-0", "c-0"]
    short = _ensemble_step(monkeypatch, y, oof, seconds, 10.0)
    assert short.kept and short.method == "stacking"
    assert short.members == ["a-0", "b-0"]
    assert "compared over the 2 best of 3 members" in short.note
    assert short.nested["stacking"] < short.nested["greedy"]


def test_the_refit_on_all_rows_is_timed_by_the_refit_before_it() -> None:
    from mlpilot.agents import finalize
    from mlpilot.agents.state import TrialRow

    class Ctx:
        task = type("T", (), {"train": range(800), "holdout": None})()
        task.holdout = type("H", (), {"features": range(200)})()
        hpo_settings = type("S", (), {"parallel": 2})()

        def remaining(self) -> float:
            return 20.0

    row = TrialRow("rf-0", "rf", 0, {}, "default", 2.0, "", "COMPLETE", 0.9, 0.9, 0.0)
    runner = type("R", (), {"folds": 5})()
    # the estimate from the trial's time (about 4 s) fits the 27.5 s left, but the refit on
    # the training rows took 30 s: its refit on all rows would take 37.5 s
    model, check = finalize._refit_on_all_rows(
        Ctx(),  # type: ignore[arg-type]
        runner,  # type: ignore[arg-type]
        {"rf-0": 1.0},
        {"rf-0": row},
        None,
        30.0,
    )
    assert model is None and "not refit on all 1000 rows (about 38 s of fits" in check.detail
