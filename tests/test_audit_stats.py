"""The audit's statistics on suggestion counts whose answers are known."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from mlpilot.evals import audit_stats as st

OPS = ["add", "multiply", "group_mean", "log"]


def test_a_share_is_the_mean_over_datasets_not_the_pooled_count() -> None:
    # one dataset with ten adds must not outweigh two datasets of one multiply each
    counts = {"a": Counter(add=10), "b": Counter(multiply=1), "c": Counter(multiply=1)}
    got = {s.op: s for s in st.shares(counts, OPS)}
    assert got["add"].share == pytest.approx(1 / 3)
    assert got["multiply"].share == pytest.approx(2 / 3)
    assert got["group_mean"].share == 0 and got["group_mean"].high == 0
    assert got["add"].low <= 1 / 3 <= got["add"].high


def test_the_bootstrap_interval_covers_the_true_share() -> None:
    rng = np.random.default_rng(1)
    covered = 0
    for trial in range(40):  # 40 audits of 30 datasets, each 5 suggestions, p(add) = 0.3
        counts = {
            f"d{i}": Counter(rng.choice(["add", "log"], size=5, p=[0.3, 0.7]).tolist())
            for i in range(30)
        }
        add = next(s for s in st.shares(counts, OPS, seed=trial, n=500) if s.op == "add")
        covered += add.low <= 0.3 <= add.high
    assert covered >= 34  # about 95% of 40


def test_the_g_test_finds_a_biased_llm_and_not_an_unbiased_one() -> None:
    reference = Counter(add=25, multiply=25, group_mean=25, log=25)
    biased = Counter(add=70, multiply=20, group_mean=2, log=8)
    same = Counter(add=24, multiply=26, group_mean=25, log=25)
    assert st.g_test(biased, reference, OPS).p < 1e-6
    assert st.g_test(same, reference, OPS).p > 0.5
    test = st.g_test(biased, reference, [*OPS, "divide"])  # unused by both: left out
    assert test.dof == 3 and test.n_llm == 100 and test.n_reference == 100
    # the statistic is the log-likelihood ratio 2·Σ O·ln(O/E)
    table = np.array([[biased[o] for o in OPS], [reference[o] for o in OPS]], float)
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    assert test.g == pytest.approx(2 * (table * np.log(table / expected)).sum())


def test_the_anomaly_score_is_signed_and_large_only_where_the_shares_differ() -> None:
    rng = np.random.default_rng(0)
    llm, ref = {}, {}
    for i in range(25):
        llm[f"d{i}"] = Counter(rng.choice(OPS, size=6, p=[0.6, 0.2, 0.0, 0.2]).tolist())
        ref[f"d{i}"] = Counter(rng.choice(OPS, size=6, p=[0.2, 0.2, 0.4, 0.2]).tolist())
    z = {a.op: a.z for a in st.anomalies(llm, ref, OPS, n=500)}
    assert z["add"] > 4 and z["group_mean"] < -4
    assert abs(z["multiply"]) < 3 and abs(z["log"]) < 3


def test_simple_and_complex_operators_follow_the_papers_split() -> None:
    assert st.complexity("add") == "simple" and st.complexity("log") == "simple"
    assert st.complexity("group_rank") == "complex" and st.complexity("combine") == "complex"
    assert st.complexity("divide") == "other" and st.complexity("other") == "other"
    counts = {"a": Counter(add=1, log=1), "b": Counter(group_mean=1, divide=1)}
    got = st.complexity_shares(counts)
    assert got["simple"].share == pytest.approx(0.5)
    assert got["complex"].share == pytest.approx(0.25)
    assert got["other"].share == pytest.approx(0.25)


def test_entropy_of_an_operator_mix() -> None:
    assert st.entropy(Counter(add=5)) == 0
    assert st.entropy(Counter(add=1, log=1, multiply=1, divide=1)) == pytest.approx(2.0)


def test_the_menu_order_effect_is_found_for_a_lister_and_not_for_a_chooser() -> None:
    from mlpilot.evals.audit_report import menu_effect

    menu = [f"op{i}" for i in range(20)]
    assert st.menu_positions(["op0", "op19", "nope"], menu) == [0.0, 1.0]
    assert st.copies_menu(["op0", "op1", "op2"], menu)
    assert not st.copies_menu(["op0", "op1"], menu)  # too short to tell
    assert not st.copies_menu(["op1", "op0", "op2"], menu)
    rng = np.random.default_rng(0)
    prefers = ["op3", "op7", "op11", "op12", "op15"]  # what the chooser likes, by content
    lister, chooser = [], []
    for d in range(25):
        for seed in range(3):
            shown = [menu[i] for i in rng.permutation(20)]  # shuffled per seed
            unit = {"dataset": f"d{d}", "seed": seed, "menu_ops": shown}
            lister.append({**unit, "features": [{"op": o} for o in shown[:5]]})
            chooser.append({**unit, "features": [{"op": o} for o in prefers]})
    listed, chosen = menu_effect(lister, {}), menu_effect(chooser, {})
    assert listed["position"]["high"] < 0.15 and listed["copies"] == listed["answers"] == 75
    assert listed["first_five"]["share"] == 1.0 and listed["first_five_expected"] == 0.25
    low, high = chosen["position"]["low"], chosen["position"]["high"]
    assert low < 0.5 < high and chosen["copies"] == 0
    assert abs(chosen["first_five"]["share"] - 0.25) < 0.1
    # a blind answer's menu order is its seed's typed menu (the same draw)
    typed = {"dataset": "d0", "seed": 0, "condition": "typed", "menu": menu}
    blind = {"dataset": "d0", "seed": 0, "features": [{"op": "op0"}, {"op": "op1"}, {"op": "op2"}]}
    from mlpilot.evals.audit_report import menu_orders

    assert menu_effect([blind], menu_orders([typed]))["copies"] == 1
