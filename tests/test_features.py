"""The feature-engineering agent: typed features (fit on training rows, applied row by
row), every bad proposal refused with a reason, the noise gate, the agent's rounds with
the scripted LLM, and a whole run whose model computes the features on raw rows."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest

from mlpilot.agents.feature_eval import (
    Evaluator,
    check_spec,
    check_values,
    column_kinds,
    paired_gain,
)
from mlpilot.agents.features import (
    FeatureAgent,
    answer_model,
    applicable_families,
    mirror,
    pair_model,
    prefer_operator,
    same_as,
    untried_pairs,
)
from mlpilot.agents.planner import feature_step, interpretable
from mlpilot.agents.state import FeatureRecord, FeatureSummary
from mlpilot.llm import LLM, LLMTimeout
from mlpilot.sandbox import make_sandbox
from mlpilot.task import TaskSpec
from mlpilot.testing import ScriptedLLM
from mlpilot.testing.datasets import balance_scale
from mlpilot.tools.featurize import OPS, FeatureBuilder, formula
from mlpilot.tools.metrics import get_metric


def mixed_frame(n: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2020-01-01")
    return pd.DataFrame(
        {
            "income": rng.lognormal(10, 1, n).round(2),
            "debt": np.where(rng.random(n) < 0.1, 0.0, rng.lognormal(9, 1, n).round(2)),
            "age": rng.integers(18, 90, n),
            "city": rng.choice(["Oslo", "Lima", "Pune", "Kobe"], n),
            "plan": rng.choice(["basic", "plus", None], n),
            "signup": [
                (start + pd.Timedelta(days=int(d))).strftime("%Y-%m-%d")
                for d in rng.integers(0, 900, n)
            ],
            "note": rng.choice(
                [
                    "late payment twice this year",
                    "always on time",
                    "asked for a larger credit line please",
                ],
                n,
            ),
            "target": rng.integers(0, 2, n),
        }
    )


def every_op(frame: pd.DataFrame) -> list[dict]:
    columns = {
        "number": ("income", "debt"),
        "any": ("city", "plan"),
        "date": ("signup",),
        "text": ("note",),
    }
    specs = []
    for name, op in OPS.items():
        a = columns[op.kinds[0]][0]
        spec = {"op": name, "a": a}
        if op.binary:
            second = columns[op.kinds[1]]
            spec["b"] = second[1] if len(second) > 1 and second[0] == a else second[0]
            if spec["b"] == a:
                spec["b"] = columns[op.kinds[1]][-1]
        specs.append(spec)
    return specs


# -- typed features -------------------------------------------------------------------


def test_every_operator_gives_a_row_the_same_value_alone_or_in_any_batch() -> None:
    frame = mixed_frame()
    train, new = frame.iloc[:200], frame.iloc[200:].drop(columns=["target"])
    specs = every_op(frame)
    builder = FeatureBuilder(specs).fit(train.drop(columns=["target"]))
    batch = builder.transform(new)
    shuffled = builder.transform(new.sample(frac=1.0, random_state=1)).loc[new.index]
    names = [formula(s) for s in specs]
    assert len(names) == len(OPS)
    for i in range(0, len(new), 7):
        alone = builder.transform(new.iloc[[i]])
        for name in names:
            a, b = alone[name].iloc[0], batch[name].iloc[i]
            assert (pd.isna(a) and pd.isna(b)) or a == b, (name, a, b)
    pd.testing.assert_frame_equal(shuffled[names], batch[names])


def test_a_feature_may_build_on_an_earlier_one_row_by_row() -> None:
    frame = mixed_frame()
    train, new = (
        frame.iloc[:200].drop(columns=["target"]),
        frame.iloc[200:].drop(columns=["target"]),
    )
    ratio = {"op": "divide", "a": "debt", "b": "income"}
    specs = [
        ratio,
        {"op": "log", "a": "debt / income"},
        {"op": "group_mean", "a": "debt / income", "b": "city"},
        {"op": "subtract", "a": "debt / income", "b": "mean(debt / income by city)"},
    ]
    builder = FeatureBuilder(specs).fit(train)
    out = builder.transform(new)
    assert formula(specs[3]) == "(debt / income) - mean(debt / income by city)"
    r = new.debt / new.income.where(new.income != 0)
    by_city = (train.debt / train.income).groupby(train.city).mean()
    assert np.allclose(out["log(debt / income)"], np.sign(r) * np.log1p(r.abs()), equal_nan=True)
    assert np.allclose(out[formula(specs[3])], r - new.city.map(by_city), equal_nan=True)
    for i in (0, 5, 50):  # alone or in the batch
        alone = builder.transform(new.iloc[[i]])
        assert np.allclose(
            alone.iloc[0][[formula(f) for f in specs]].astype(float),
            out.iloc[i][[formula(f) for f in specs]].astype(float),
            equal_nan=True,
        )


def test_fitted_state_comes_from_the_training_rows_only() -> None:
    train = pd.DataFrame({"city": ["a", "a", "b", "b", "b"], "x": [1.0, 3.0, 10.0, 20.0, 30.0]})
    builder = FeatureBuilder(
        [
            {"op": "group_mean", "a": "x", "b": "city"},
            {"op": "frequency", "a": "city"},
            {"op": "group_count", "a": "city"},
            {"op": "bin", "a": "x"},
        ]
    ).fit(train)
    new = pd.DataFrame({"city": ["a", "zz"], "x": [1000.0, 2.0]})
    out = builder.transform(new)
    assert out["mean(x by city)"].tolist() == [2.0, 64.0 / 5]  # unseen city: the overall mean
    assert out["freq(city)"].tolist() == [0.4, 0.0]
    assert out["count(by city)"].tolist() == [2.0, 0.0]
    assert out["bin10(x)"].iloc[0] == out["bin10(x)"].max()  # beyond every training edge


def test_the_same_numbers_whatever_the_columns_dtype() -> None:
    # the job sees floats (plain_numbers), a user's CSV may give ints or nullable ints
    ints = pd.DataFrame({"g": [1, 2, 2, 3], "x": [1, 2, 3, 4]})
    floats = ints.astype(float)
    nullable = ints.astype("Int64")
    specs = [{"op": "group_mean", "a": "x", "b": "g"}, {"op": "combine", "a": "g", "b": "x"}]
    outs = [FeatureBuilder(specs).fit(f).transform(f) for f in (ints, floats, nullable)]
    for out in outs[1:]:
        for name in ("mean(x by g)", "g & x"):
            assert out[name].tolist() == outs[0][name].tolist()


# -- bad proposals ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def credit() -> TaskSpec:
    frame = mixed_frame(400)
    frame["zeros"] = 0.0
    frame.loc[0, "zeros"] = 1.0  # not constant, so the column is kept
    frame["huge"] = 1e200 * (1 + np.arange(len(frame)) % 3)
    return TaskSpec.from_data(frame, target="target")


def _why(task: TaskSpec, spec: dict) -> str | None:
    kinds = column_kinds(task)
    why = check_spec(spec, kinds)
    if why:
        return why
    name = formula(spec)
    values = FeatureBuilder([spec]).fit(task.X).transform(task.X)[name].to_numpy()
    if values.dtype != object:
        values = values.astype(float)
    return check_values(name, values, spec, task, task.X)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"op": "divide", "a": "income", "b": "salary"}, "unknown column 'salary'"),
        ({"op": "cube", "a": "income"}, "unknown operator 'cube'"),
        ({"op": "log", "a": "city"}, "log needs a number column, but 'city' holds categories"),
        ({"op": "year", "a": "income"}, "year needs a date column"),
        ({"op": "text_length", "a": "city"}, "needs a text column"),
        ({"op": "multiply", "a": "income", "b": "income"}, "with itself"),
        ({"op": "divide", "a": "income", "b": "zeros"}, "divides by zero"),
        ({"op": "square", "a": "huge"}, "infinite"),
        ({"op": "abs", "a": "income"}, "the same values as the column 'income'"),
        ({"op": "min", "a": "income", "b": "huge"}, "the same values as the column 'income'"),
        ({"op": "weekday", "a": "note"}, "needs a date column"),
    ],
)
def test_a_bad_proposal_is_refused_with_its_reason(credit, spec, expected) -> None:
    why = _why(credit, spec)
    assert why is not None and expected in why, why


def test_a_constant_feature_and_a_row_order_feature_are_refused(credit) -> None:
    X = credit.X
    n = len(X)
    spec = {"op": "add", "a": "income", "b": "debt"}
    assert "constant" in check_values("c", np.full(n, 3.0), spec, credit, X)
    assert "row order" in check_values("r", np.arange(n, dtype=float), spec, credit, X)
    assert "missing on every" in check_values("m", np.full(n, np.nan), spec, credit, X)


def test_a_feature_that_is_the_answer_is_refused() -> None:
    frame = balance_scale()
    binary = frame[frame.balance != "B"]
    task = TaskSpec.from_data(binary, target="balance")
    X = task.X
    honest = {"op": "multiply", "a": "left_weight", "b": "left_distance"}
    assert _why(task, honest) is None  # the left torque alone: informative, not the answer
    gap = X.left_weight * X.left_distance - X.right_weight * X.right_distance
    why = check_values("gap", gap.to_numpy(float), honest, task, X)
    assert why is not None and "almost perfectly" in why  # its sign is the label


def test_the_data_picks_the_arithmetic_operator_for_the_pair_the_model_named() -> None:
    task = TaskSpec.from_data(balance_scale(), target="balance", metric="accuracy")
    X = task.X

    def prefer(op: str, a: str, b: str, seen: set[str] | frozenset = frozenset()) -> str | None:
        better = prefer_operator({"op": op, "a": a, "b": b}, task, X, set(seen))
        return None if better is None else formula(better)

    # a weight divided by its distance: the pair is right, the operator is not
    assert prefer("divide", "left_weight", "left_distance") == "left_weight * left_distance"
    assert prefer("multiply", "left_weight", "right_weight") == "left_weight - right_weight"
    assert prefer("subtract", "left_weight", "right_weight") is None  # already the best
    assert prefer("add", "left_weight", "left_distance") is None  # within the margin
    assert prefer("combine", "left_weight", "left_distance") is None  # not arithmetic
    # a sibling tried before (in either order) is not proposed again: the next one is
    tried = {same_as({"op": "multiply", "a": "left_distance", "b": "left_weight"})}
    assert prefer("divide", "left_weight", "left_distance", tried) == "left_weight + left_distance"
    # the agent measures the data's choice and records the model's
    agent = FeatureAgent(LLM(ScriptedLLM([])), None, task)  # type: ignore[arg-type]
    idea = {"op": "divide", "a": "right_weight", "b": "right_distance", "reason": "lever"}
    valid, records = agent._check([idea], FeatureSummary(), 1)
    assert [formula(f) for f in valid] == [
        "right_weight * right_distance",
        "left_weight * left_distance",  # its mirror, added (see the test below)
    ]
    assert records[0].formula == "right_weight * right_distance"
    assert records[0].proposed == "right_weight / right_distance"
    assert records[0].reason == "lever"
    # the same feature with its columns swapped is already tried (for a * b, not a - b)
    summary = FeatureSummary(records=records, kept=valid)
    again = [
        {"op": "multiply", "a": "right_distance", "b": "right_weight", "reason": "the same"},
        {"op": "subtract", "a": "right_distance", "b": "right_weight", "reason": "not the same"},
    ]
    _, records = agent._check(again, summary, 2)
    assert (records[0].verdict, records[0].why) == ("invalid", "already tried")
    assert records[1].verdict == ""


def test_a_feature_on_one_side_of_a_symmetric_thing_brings_its_mirror() -> None:
    cols = ["left_weight", "left_distance", "right_weight", "right_distance"]

    def twin(op: str, a: str, b: str | None, columns: list[str] = cols) -> tuple | None:
        found = mirror({"op": op, "a": a, "b": b}, columns)
        return None if found is None else (formula(found[0]), found[1])

    assert twin("multiply", "left_weight", "left_distance") == (
        "right_weight * right_distance",
        "left → right",
    )
    assert twin("subtract", "left_weight", "right_weight") == (
        "left_distance - right_distance",
        "weight → distance",
    )
    assert twin("multiply", "left_weight", "right_distance") is None  # no one-word swap
    assert twin("log", "left_weight", None) is None
    assert twin("divide", "HomeGoals", "HomeShots", ["HomeGoals", "HomeShots", "AwayGoals"]) is None
    teams = ["HomeGoals", "HomeShots", "AwayGoals", "AwayShots"]
    assert twin("divide", "HomeGoals", "HomeShots", teams) == (
        "AwayGoals / AwayShots",
        "Home → Away",
    )
    assert twin("add", "x1", "x11", ["x1", "x11", "x2", "x21"]) is None  # 11 is not 1
    # in a round: the twin is measured in the same block, and recorded as mlpilot's
    task = TaskSpec.from_data(balance_scale(), target="balance", metric="accuracy")
    agent = FeatureAgent(LLM(ScriptedLLM([])), None, task)  # type: ignore[arg-type]
    idea = {"op": "multiply", "a": "left_weight", "b": "left_distance", "reason": "torque"}
    valid, records = agent._check([idea], FeatureSummary(), 1)
    assert [formula(f) for f in valid] == [
        "left_weight * left_distance",
        "right_weight * right_distance",
    ]
    assert "mirror of left_weight * left_distance" in records[1].reason
    assert records[1].verdict == "" and records[1].family == "arithmetic"
    # not when the model named both, nor when the twin was tried before
    both = [idea, {**idea, "a": "right_distance", "b": "right_weight"}]
    assert len(agent._check(both, FeatureSummary(), 1)[0]) == 2
    summary = FeatureSummary(records=records[1:])
    valid, _ = agent._check([idea], summary, 2)
    assert [formula(f) for f in valid] == ["left_weight * left_distance"]


def test_the_column_pairs_not_combined_yet_put_pairs_sharing_a_word_first() -> None:
    task = TaskSpec.from_data(balance_scale(), target="balance")
    kinds = column_kinds(task)
    columns = list(task.feature_columns)
    assert untried_pairs(columns, kinds, [], 3) == [
        ("left_weight", "left_distance"),
        ("left_weight", "right_weight"),
        ("left_distance", "right_distance"),
    ]
    spec = {"op": "multiply", "a": "right_distance", "b": "left_distance"}  # either order
    done = FeatureRecord(round=1, formula=formula(spec), spec=spec, family="x", verdict="kept")
    assert ("left_distance", "right_distance") not in untried_pairs(columns, kinds, [done], 9)
    assert len(untried_pairs(columns, kinds, [done], 9)) == 5
    unary = {"op": "log", "a": "left_weight"}
    log = FeatureRecord(round=1, formula="log", spec=unary, family="unary", verdict="kept")
    assert len(untried_pairs(columns, kinds, [log], 9)) == 6


def test_the_answer_schema_only_admits_the_datas_columns_and_operators() -> None:
    model = answer_model(["a", "b"], 3)
    ok = model.model_validate(
        {"features": [{"op": "add", "a": "a", "b": "b", "reason": "the sum of both"}]}
    )
    assert ok.features[0].op == "add"  # type: ignore[attr-defined]
    for bad in (
        {"features": [{"op": "add", "a": "a", "b": "nope"}]},
        {"features": [{"op": "cube", "a": "a"}]},
        {"features": [{"op": "log", "a": "a"}] * 4},
        {"features": []},
    ):
        with pytest.raises(ValueError):
            model.model_validate(bad)
    schema = json.dumps(model.model_json_schema())
    assert '"enum"' in schema  # constrained decoding sees the choices


# -- measuring --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sandbox():
    box = make_sandbox("local-warm")
    yield box
    box.close()


def test_a_pure_noise_feature_is_rejected_across_seeds(sandbox) -> None:
    rng = np.random.default_rng(0)
    n = 500
    x = rng.normal(size=(n, 3))
    frame = pd.DataFrame(
        {
            "signal": x[:, 0],
            "noise_a": rng.normal(size=n),
            "noise_b": rng.normal(size=n),
            "target": (x[:, 0] + 0.8 * rng.normal(size=n) > 0).astype(int),
        }
    )
    noise = [{"op": "multiply", "a": "noise_a", "b": "noise_b"}, {"op": "log", "a": "noise_b"}]
    gains = []
    for seed in range(5):
        task = TaskSpec.from_data(frame, target="target", metric="roc_auc", seed=seed)
        scores = Evaluator(sandbox, task, "hist_gradient_boosting").run(
            [{"features": [], "drop": []}, {"features": noise, "drop": []}]
        )
        assert not isinstance(scores, str), scores
        gain = paired_gain(task.metric, scores[0], scores[1])
        gains.append(gain)
        assert not gain.passes, (seed, gain)
    # the gate is not trivially closed: its error is a real, positive number
    assert all(g.se > 0 for g in gains)


def test_the_torque_products_pass_the_gate_on_balance_scale(sandbox) -> None:
    task = TaskSpec.from_data(balance_scale(), target="balance", metric="accuracy")
    torque = [
        {"op": "multiply", "a": "left_weight", "b": "left_distance"},
        {"op": "multiply", "a": "right_weight", "b": "right_distance"},
    ]
    scores = Evaluator(sandbox, task, "hist_gradient_boosting").run(
        [{"features": [], "drop": []}, {"features": torque, "drop": []}]
    )
    assert not isinstance(scores, str), scores
    gain = paired_gain(task.metric, scores[0], scores[1])
    assert gain.passes and gain.mean > 0.02, gain


def test_the_gain_is_signed_by_the_metrics_direction() -> None:
    base = np.array([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    lower = base - np.array([[0.1, 0.12, 0.09], [0.11, 0.1, 0.1]])
    assert paired_gain(get_metric("rmse"), base, lower).passes  # lower RMSE is a gain
    assert not paired_gain(get_metric("accuracy"), base, lower).passes


# -- the agent --------------------------------------------------------------------------


def _reply(*features: tuple) -> str:
    out = []
    for f in features:
        op, a = f[0], f[1]
        out.append({"op": op, "a": a, "b": f[2] if len(f) > 2 else None, "reason": f"because {op}"})
    return json.dumps({"features": out})


def test_a_good_feature_in_a_failed_block_is_kept_alone_only_beyond_two_standard_errors(
    sandbox,
) -> None:
    rng = np.random.default_rng(3)
    n = 500
    frame = pd.DataFrame({c: rng.uniform(1, 5, n).round(2) for c in ("x1", "x2", "n1", "n2")})
    frame["n3"] = rng.uniform(1, 5, n).round(2)
    frame["y"] = (frame.x1 > frame.x2).astype(int)  # a diagonal: trees need x1 - x2
    task = TaskSpec.from_data(frame, target="y", metric="accuracy")
    agent = FeatureAgent(
        LLM(ScriptedLLM([])), Evaluator(sandbox, task, "hist_gradient_boosting"), task
    )
    summary = FeatureSummary()
    base = agent._measure([[]], time.monotonic() + 300)[0]  # type: ignore[index]
    good = {"op": "subtract", "a": "x1", "b": "x2"}
    noise = [{"op": "add", "a": "n1", "b": "n2"}, {"op": "subtract", "a": "n3", "b": "n1"}]

    def records(specs: list[dict]) -> list[FeatureRecord]:
        return [
            FeatureRecord(
                round=1,
                formula=formula(f),
                spec=f,
                family="arithmetic",
                verdict="rejected",
                why="block gain",
            )
            for f in specs
        ]

    mixed = records([noise[0], good, noise[1]])
    kept = agent._singles([noise[0], good, noise[1]], mixed, summary, base, time.monotonic() + 300)
    assert kept is not None and kept[0] == good
    assert [r.verdict for r in mixed] == ["rejected", "kept", "rejected"]
    assert "; alone " in mixed[0].why and "kept alone" in mixed[1].why
    assert mixed[1].gain > 2 * mixed[1].se
    only_noise = records(noise)
    assert agent._singles(noise, only_noise, summary, base, time.monotonic() + 300) is None
    assert [r.verdict for r in only_noise] == ["rejected", "rejected"]


def test_the_agent_offers_kept_features_as_columns_for_later_proposals(sandbox) -> None:
    task = TaskSpec.from_data(balance_scale(), target="balance", metric="accuracy")
    torque = "(left_weight * left_distance) - (right_weight * right_distance)"
    fake = ScriptedLLM(
        [
            _reply(
                ("multiply", "left_weight", "left_distance"),
                ("multiply", "right_weight", "right_distance"),
            ),
            _reply(
                ("subtract", "left_weight * left_distance", "right_weight * right_distance"),
                ("add", "left_weight * left_distance", "left_weight * left_distance"),
            ),
        ]
    )
    # diversity off: round 2 would be a pairing round, whose answer names a pair
    agent = FeatureAgent(
        LLM(fake),
        Evaluator(sandbox, task, "hist_gradient_boosting"),
        task,
        rounds=2,
        diversity=False,
    )
    summary = agent.run(time.monotonic() + 300)
    second = fake.calls[1].messages[-1]["content"]
    assert "- left_weight * left_distance: kept feature" in second
    schema = json.dumps(fake.calls[1].params["response_format"])
    assert "right_weight * right_distance" in schema  # a column the answer may name
    verdicts = {r.formula: r.verdict for r in summary.records}
    assert verdicts[torque] == "refused"  # the sign of the torque gap is the label itself
    same = "(left_weight * left_distance) + (left_weight * left_distance)"
    assert verdicts[same] == "invalid"
    # off (the default for a model on this machine): only the data's own columns
    plain = FeatureAgent(LLM(ScriptedLLM([])), agent.evaluator, task, build_on_kept=False)
    X, kinds = plain._augmented(summary.kept)
    assert list(X.columns) == list(task.X.columns) and set(kinds) == set(task.feature_columns)


def test_the_agent_keeps_what_helps_and_feeds_back_what_failed(sandbox, tmp_path) -> None:
    from mlpilot.agents.rundir import RunDir

    task = TaskSpec.from_data(balance_scale(), target="balance", metric="accuracy")
    fake = ScriptedLLM(
        [
            _reply(
                ("multiply", "left_weight", "left_distance"),
                ("multiply", "right_weight", "right_distance"),
            ),
            "this is not json",  # invalid, re-asked once ...
            "still not json",  # ... and the round is over
            _reply(("log", "left_weight"), ("divide", "left_weight", "left_weight")),
            LLMTimeout("too slow"),
        ]
    )
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    agent = FeatureAgent(
        LLM(fake), Evaluator(sandbox, task, "hist_gradient_boosting"), task, run_dir=run
    )
    summary = agent.run(time.monotonic() + 300)
    assert fake.remaining == 0
    assert summary.rounds == 4
    assert [formula(f) for f in summary.kept] == [
        "left_weight * left_distance",
        "right_weight * right_distance",
    ]
    verdicts = {r.formula: r.verdict for r in summary.records}
    assert verdicts["left_weight * left_distance"] == "kept"
    assert verdicts["left_weight / left_weight"] == "invalid"
    assert "did not answer" in summary.stopped
    assert summary.score > summary.base_score + 0.02
    # round 3's prompt carries round 2's error and round 1's measured gain
    third = fake.calls[3].messages[-1]["content"]
    assert "could not be used" in third and "left_weight * left_distance: kept, gain +" in third
    # from the second round on, the column pairs not combined yet are named to the
    # model: round 2 is a pairing round (its answer can only combine them), round 3
    # names them beside the families not tried yet
    first, second = (fake.calls[i].messages[-1]["content"] for i in (0, 1))
    assert "families not tried yet" not in first and "not combined yet" not in first
    pairs = (
        "(left_weight * left_distance) & (right_weight * right_distance); "
        "left_weight & right_weight; left_weight & (right_weight * right_distance); "
        "left_distance & right_distance; left_distance & (right_weight * right_distance); "
        "right_weight & (left_weight * left_distance)"
    )
    assert f"combine column pairs that no feature has combined yet: {pairs}." in second
    schema = json.dumps(fake.calls[1].params["response_format"])
    assert '"pair"' in schema and "left_weight & right_weight" in schema
    assert "families not tried yet: unary, categorical, groupby" in third
    assert "pairs not combined yet (what does each pair mean together?): " in third
    assert "\n- balance" not in fake.calls[0].messages[-1]["content"]  # no per-row labels
    # progress is on disk after every round; a new agent resumes from it
    saved = json.loads((run.path / "features.json").read_text())
    assert saved["rounds"] == 4 and len(saved["kept"]) == 2
    again = FeatureAgent(
        LLM(ScriptedLLM([])),
        Evaluator(sandbox, task, "hist_gradient_boosting"),
        task,
        run_dir=run,
        rounds=4,
    ).run(time.monotonic() + 60)
    assert again.rounds == 4 and again.kept == summary.kept  # nothing re-asked


def test_a_pairing_round_can_only_combine_pairs_not_combined_yet(sandbox) -> None:
    # Round 1 pairs the columns that look alike (both weights); round 2's answer must
    # name an untried pair: the model picks a side's weight and distance, the data
    # picks the product over the model's ratio, and the other side's mirror joins it.
    task = TaskSpec.from_data(balance_scale(), target="balance", metric="accuracy")
    pairing = json.dumps(
        {
            "features": [
                {
                    "reason": "torque on the left",
                    "pair": "left_weight & left_distance",
                    "op": "divide",
                }
            ]
        }
    )
    fake = ScriptedLLM(
        [_reply(("subtract", "left_weight", "right_weight")), pairing, LLMTimeout("slow")]
    )
    agent = FeatureAgent(
        LLM(fake), Evaluator(sandbox, task, "hist_gradient_boosting"), task, build_on_kept=False
    )
    summary = agent.run(time.monotonic() + 300)
    assert summary.rounds == 3
    model = pair_model(["left_weight & left_distance", "left_distance & right_distance"], 4)
    enum = model.model_json_schema()["$defs"]["PairFeature"]["properties"]["pair"]["enum"]
    assert enum == ["left_weight & left_distance", "left_distance & right_distance"]
    with pytest.raises(ValueError):  # a pair combined already is not an answer
        model.model_validate_json(
            '{"features": [{"reason": "weights again", "pair": "left_weight & right_weight",'
            ' "op": "subtract"}]}'
        )
    second = [r for r in summary.records if r.round == 2]
    assert {r.formula for r in second} == {
        "left_weight * left_distance",
        "right_weight * right_distance",
    }
    assert [r.proposed for r in second if r.formula.startswith("left")] == [
        "left_weight / left_distance"
    ]
    assert "left_weight & right_weight" not in json.dumps(fake.calls[1].params["response_format"])


# -- the plan ---------------------------------------------------------------------------


def test_the_planner_plans_features_when_asked_or_when_the_data_has_meaning(credit) -> None:
    def planned(request: str, **kw) -> bool:
        options = {"description": "", "has_llm": True, "time_budget_s": 600.0, **kw}
        return feature_step(request, credit, **options)[0] is not None

    assert planned("find better features and tune a model", time_budget_s=60)
    assert planned("tune a model")  # meaningful names and a long enough budget
    assert not planned("tune a model", time_budget_s=60)
    assert not planned("tune a model without feature engineering")
    assert not planned("find better features", has_llm=False)
    assert not planned("find better features", choice=False)
    assert planned("tune a model", choice=True, time_budget_s=30)
    assert interpretable(["income", "debt", "age"]) and not interpretable(["x1", "x2", "V3"])
    assert set(applicable_families(column_kinds(credit))) == {
        "unary",
        "arithmetic",
        "categorical",
        "groupby",
        "date",  # ("note" is too short to count as text: a category here)
    }


def test_feature_step_needs_a_description_or_meaningful_names() -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(60, 3)), columns=["x1", "x2", "x3"])
    frame["target"] = rng.integers(0, 2, 60)
    task = TaskSpec.from_data(frame, target="target")
    opts = {"has_llm": True, "time_budget_s": 600.0}
    assert feature_step("tune", task, description="", **opts)[0] is None
    assert feature_step("tune", task, description="sensor readings", **opts)[0] is not None


# -- a whole run --------------------------------------------------------------------------

PLAN = json.dumps({"families": ["hist_gradient_boosting", "linear"], "rationale": "test"})
TORQUE = _reply(
    ("multiply", "left_weight", "left_distance"), ("multiply", "right_weight", "right_distance")
)
NO_LEAKS = '{"columns": []}'


def test_a_run_engineers_features_and_its_model_computes_them_on_raw_rows(tmp_path) -> None:
    from mlpilot import Pilot
    from mlpilot.agents.hpo import HpoSettings

    frame = balance_scale()
    description = tmp_path / "balance.md"
    description.write_text(
        "A balance scale tips to the side with the larger weight times distance."
    )
    fake = ScriptedLLM([PLAN, TORQUE, LLMTimeout("slow"), NO_LEAKS])
    result = Pilot(llm=LLM(fake), runs_dir=tmp_path).run(
        "find better features and tune a model, predict balance",
        frame,
        time_budget=120,  # the feature step's share (30 s) holds round 2 on a slow machine
        max_trials=8,
        hpo=HpoSettings(warmstart=0, sample_every=10**6),
        description=description,
    )
    assert result.status == "finished", result.events
    assert fake.remaining == 0
    assert description.read_text() in fake.calls[1].messages[-1]["content"]
    features = result.features
    assert features is not None and not features.dropped
    assert [formula(f) for f in features.kept] == [
        "left_weight * left_distance",
        "right_weight * right_distance",
    ]
    checks = {c["check"]: c for c in result.checks}
    assert checks["final holdout score"]["ok"]
    assert "features vs none" in checks, checks
    # the saved model computes the features itself from raw rows, alone or in a batch
    from mlpilot.api import Pilot as P

    loaded = P.load(result.run_dir)
    raw = frame.drop(columns=["balance"]).sample(50, random_state=0)
    batch = loaded.model.predict_proba(raw)
    alone = np.vstack([loaded.model.predict_proba(raw.iloc[[i]]) for i in range(len(raw))])
    # the features are identical; the model's float arithmetic may differ in the last bit
    builder = loaded.model.estimator.named_steps["features"]
    rows = pd.concat([builder.transform(raw.iloc[[i]]) for i in range(len(raw))])
    pd.testing.assert_frame_equal(rows, builder.transform(raw))
    np.testing.assert_allclose(batch, alone, rtol=1e-9, atol=1e-12)
    assert (loaded.predict(raw) == frame.loc[raw.index, "balance"]).mean() > 0.9
    report = result.report_path.read_text()
    assert "## Engineered features" in report
    assert "| 1 | `left_weight * left_distance` | arithmetic | kept |" in report
    assert "because multiply" in report  # the model's reason is shown
    drawn = {p.name for p in result.run_dir.glob("plot-*.png")}
    assert {"plot-feature-gains.png", "plot-llm.png", "plot-confusion.png"} <= drawn, drawn


DRIVER = """
import json, sys, time
from pathlib import Path
from mlpilot import Pilot
from mlpilot.agents.hpo import HpoSettings
from mlpilot.llm import LLM, LLMTimeout
from mlpilot.testing import ScriptedLLM
from mlpilot.testing.datasets import balance_scale

mode, data, run_dir, seen = sys.argv[1:5]
replies = json.loads(Path(data).with_suffix(".json").read_text())

def hang(messages, params):
    time.sleep(600)  # killed here, in round 2

def record(messages, params):
    Path(seen).write_text(messages[-1]["content"])
    raise LLMTimeout("the step ends here")

if mode == "start":
    fake = ScriptedLLM([replies["plan"], replies["torque"], hang])
    Pilot(llm=LLM(fake), runs_dir=Path(run_dir).parent).run(
        "find better features and tune a model, predict balance", data,
        time_budget=120, max_trials=8, hpo=HpoSettings(warmstart=0, sample_every=10**6),
        run_dir=run_dir,
    )
else:
    fake = ScriptedLLM([record, replies["leaks"]])
    result = Pilot(llm=LLM(fake), runs_dir=Path(run_dir).parent).resume(run_dir)
    print(json.dumps({"status": result.status, "remaining": fake.remaining,
                      "features": result.features.model_dump()}))
"""


@pytest.mark.ci_only
def test_a_run_killed_during_the_feature_step_resumes_from_its_last_round(tmp_path) -> None:
    import os
    import signal
    import subprocess
    import sys

    data = tmp_path / "balance.csv"
    balance_scale().to_csv(data, index=False)
    data.with_suffix(".json").write_text(
        json.dumps({"plan": PLAN, "torque": TORQUE, "leaks": NO_LEAKS})
    )
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    run_dir, seen = tmp_path / "runs" / "run", tmp_path / "seen.txt"
    args = [str(data), str(run_dir), str(seen)]
    proc = subprocess.Popen(
        [sys.executable, str(driver), "start", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    saved = run_dir / "features.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if saved.exists() and json.loads(saved.read_text())["records"]:
            time.sleep(1.0)  # round 1 is measured and saved; round 2 waits for the LLM
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = json.loads(saved.read_text())
    assert [r["verdict"] for r in before["records"]] == ["kept", "kept"], before
    done = subprocess.run(
        [sys.executable, str(driver), "resume", *args],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["status"] == "finished" and out["remaining"] == 0
    # round 1 was not asked again: the resumed prompt already shows its measured gain
    assert "left_weight * left_distance: kept, gain +" in seen.read_text()
    features = out["features"]
    assert features["kept"] == before["kept"] and features["rounds"] == 2
    assert "did not answer" in features["stopped"]
    assert "Engineered features" in (run_dir / "report.md").read_text()


def test_features_refused_as_leaks_are_flagged_by_the_verifier() -> None:
    from mlpilot.agents.features import FeatureAgent
    from mlpilot.agents.state import FeatureSummary
    from mlpilot.agents.verifier import check_feature_leaks

    frame = balance_scale()
    frame = frame[frame.balance != "B"].assign(
        left_torque=lambda f: f.left_weight * f.left_distance,
        right_torque=lambda f: f.right_weight * f.right_distance,
    )
    task = TaskSpec.from_data(frame, target="balance")
    agent = FeatureAgent(LLM(ScriptedLLM([])), None, task)  # type: ignore[arg-type]
    block = [
        {"op": "subtract", "a": "left_torque", "b": "right_torque", "reason": "the answer"},
        {"op": "log", "a": "left_weight", "b": None, "reason": "honest"},
    ]
    valid, records = agent._check(block, FeatureSummary(), 1)
    assert [r.verdict for r in records] == ["refused", ""]
    assert valid == [{"op": "log", "a": "left_weight"}]
    check = check_feature_leaks(records)
    assert not check.ok and check.severity == "warning"
    assert "left_torque - right_torque" in check.detail
    assert check_feature_leaks(records[1:]).ok


# -- free code ----------------------------------------------------------------------------

TORQUE_CODE = """# the torque on each side
def fit(train):
    return {}

def transform(df, state):
    return pd.DataFrame({"left_torque": df.left_weight * df.left_distance,
                         "right_torque": df.right_weight * df.right_distance})
"""


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("def fit(train):\n  return {}\n", "missing: ['transform']"),
        ("def fit(train) return", "does not parse"),
        (
            "import os\ndef fit(t):\n  return {}\ndef transform(d, s):\n  return d",
            "imports 'os'",
        ),
        (
            "def fit(t):\n  return {'x': open('/etc/passwd').read()}\n"
            "def transform(d, s):\n  return d",
            "uses 'open'",
        ),
        (
            "def fit(t):\n  return {'x': pd.read_csv('/etc/hosts')}\n"
            "def transform(d, s):\n  return d",
            "may not read or write files",
        ),
        (
            "def fit(t):\n  return {'x': t.__class__}\ndef transform(d, s):\n  return d",
            "'__class__'",
        ),
    ],
)
def test_free_code_that_reaches_for_files_or_imports_is_refused_before_it_runs(
    code, expected
) -> None:
    from mlpilot.agents.feature_code import check_code

    why = check_code(code)
    assert why is not None and expected in why, why
    assert check_code(TORQUE_CODE) is None


def _code_agent(sandbox, task, code: str, limits=None):
    from mlpilot.agents.state import FeatureSummary
    from mlpilot.sandbox import Limits

    evaluator = Evaluator(sandbox, task, "hist_gradient_boosting", limits=limits or Limits(60))
    agent = FeatureAgent(LLM(ScriptedLLM([])), evaluator, task, free_code=True)
    base = evaluator.run([{"features": [], "drop": []}])
    assert not isinstance(base, str), base
    return agent._try_code(code, FeatureSummary(), base[0], 1, time.monotonic() + 60)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("    return df.head(5)[['left_weight']].rename(columns=str.upper)", "5 rows"),
        (
            "    return pd.DataFrame({'z': df.left_weight - df.left_weight.mean()})",
            "depends on the batch",
        ),
        ("    return pd.DataFrame({'c': df.left_weight * 0 + 1.0})", "constant"),
        ("    return pd.DataFrame({'r': np.arange(len(df)) + state['n']})", "depends on the batch"),
        ("    return df[['left_weight']]", "existing columns"),
    ],
)
def test_free_code_that_misbehaves_in_the_sandbox_is_refused_with_its_reason(
    sandbox, body, expected
) -> None:
    task = TaskSpec.from_data(balance_scale(), target="balance", metric="accuracy")
    code = f"def fit(train):\n    return {{'n': 0}}\n\ndef transform(df, state):\n{body}\n"
    record = _code_agent(sandbox, task, code)
    assert record.verdict in ("invalid", "refused") and expected in record.why, record.why


def test_free_code_that_loops_or_eats_memory_is_stopped_by_the_sandbox(sandbox) -> None:
    from mlpilot.sandbox import Limits

    task = TaskSpec.from_data(balance_scale(), target="balance", metric="accuracy")
    loop = (
        "def fit(train):\n    while True:\n        pass\n\ndef transform(df, s):\n    return df\n"
    )
    record = _code_agent(sandbox, task, loop, Limits(timeout_s=8))
    assert record.verdict == "invalid" and "out of time" in record.why, record.why
    hog = (
        "def fit(train):\n    x = np.ones((20000, 100000))\n    return {'s': float(x.sum())}\n"
        "\ndef transform(df, s):\n    return df\n"
    )
    record = _code_agent(sandbox, task, hog, Limits(timeout_s=30, memory_mb=4096))
    assert record.verdict == "invalid", record
    assert "memory" in record.why.lower(), record.why


def test_free_code_that_helps_is_measured_but_never_delivered(sandbox, tmp_path) -> None:
    task = TaskSpec.from_data(balance_scale(), target="balance", metric="accuracy")
    record = _code_agent(sandbox, task, TORQUE_CODE)
    assert record.verdict == "helps" and record.gain > 0.02, record
    assert "restate the idea with the typed operators" in record.why
    # code that passes the static check still runs only in the sandbox: a write to a
    # host path lands nowhere on the host
    marker = tmp_path / "written-by-the-code.npy"
    code = TORQUE_CODE.replace(
        "    return {}", f"    np.save({str(marker)!r}, np.zeros(1))\n    return {{}}"
    )
    record = _code_agent(sandbox, task, code)
    assert not marker.exists()
    assert record.verdict == "invalid" and "No such file or directory" in record.why


def test_the_agent_asks_to_restate_helpful_code_with_typed_operators(sandbox) -> None:
    task = TaskSpec.from_data(balance_scale(), target="balance", metric="accuracy")
    fake = ScriptedLLM([json.dumps({"features": [], "code": TORQUE_CODE}), LLMTimeout("slow")])
    evaluator = Evaluator(sandbox, task, "hist_gradient_boosting")
    summary = FeatureAgent(LLM(fake), evaluator, task).run(time.monotonic() + 120)
    assert [r.verdict for r in summary.records] == ["helps"]
    assert summary.kept == []  # free code is never part of the model
    second = fake.calls[1].messages[-1]["content"]
    assert "code: the torque on each side" in second and "restate" in second
    assert "fit(train) -> state" in fake.calls[0].messages[-1]["content"]  # the contract


def test_the_verifier_delivers_the_model_without_features_when_they_hurt(sandbox, tmp_path):
    from mlpilot.agents.context import RunContext
    from mlpilot.agents.finalize import _compare_without_features
    from mlpilot.agents.rundir import RunDir
    from mlpilot.agents.state import TrialRow
    from mlpilot.agents.trials import TrialRunner

    task = TaskSpec.from_data(balance_scale(), target="balance", metric="accuracy")
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    ctx = RunContext(
        task=task,
        llm=None,
        sandbox=sandbox,
        run=run,
        request="",
        time_budget_s=120,
        max_trials=10,
        started=time.monotonic(),
    )
    row = TrialRow(
        key="linear-0",
        family="linear",
        number=0,
        params={"C": 1.0},
        source="default",
        seconds=0.5,
        reason="",
        state="COMPLETE",
        cv_score=0.9,
        holdout_score=0.9,
        started=0.0,
    )
    plain = TrialRunner(sandbox, task)
    # a model with features that scored 0.5 on the holdout: the plain refit wins
    check, without = _compare_without_features(
        ctx, plain, {"linear-0": 1.0}, {"linear-0": row}, 0.5
    )
    assert without is not None and "features dropped" in check.detail
    model, score = without
    assert score > 0.5 and "features" not in getattr(model.estimator, "named_steps", {})
    # ... and one that scored 1.0 keeps its features
    check, without = _compare_without_features(
        ctx, plain, {"linear-0": 1.0}, {"linear-0": row}, 1.0
    )
    assert without is None and "without them" in check.detail
