"""Free pandas feature code read back into operator classes, without running it."""

from __future__ import annotations

import pytest

from mlpilot.evals.code_ops import classify_code, classify_expression


@pytest.mark.parametrize(
    ("expr", "ops"),
    [
        ("df.a + df.b", ["add"]),
        ("df['a'] - df['b']", ["subtract"]),
        ("df.a * df.b", ["multiply"]),
        ("df.a * df.a", ["square"]),
        ("df.a ** 2", ["square"]),
        ("np.square(df.a)", ["square"]),
        ("df.a ** 0.5", ["sqrt"]),
        ("np.sqrt(df.a)", ["sqrt"]),
        ("df.debt / df.income", ["divide"]),
        ("df.debt // df.income", ["divide"]),
        ("1 / df.a", ["reciprocal"]),
        ("np.log(df.a)", ["log"]),
        ("np.log1p(df['a'])", ["log"]),
        ("math.log(x)", ["log"]),
        ("np.abs(df.a)", ["abs"]),
        ("df.a.abs()", ["abs"]),
        ("abs(df.a)", ["abs"]),
        ("np.round(df.a)", ["bin"]),
        ("pd.qcut(df.a, 10, labels=False)", ["bin"]),
        ("pd.cut(df.a, bins=5)", ["bin"]),
        ("np.minimum(df.a, df.b)", ["min"]),
        ("np.maximum(df.a, df.b)", ["max"]),
        ("df[['a', 'b']].min(axis=1)", ["min"]),
        ("df[['a', 'b']].max(axis=1)", ["max"]),
        ("df.a.map(df.a.value_counts())", ["frequency"]),
        ("df['a'].map(df['a'].value_counts(normalize=True))", ["frequency"]),
        ("df.a.map(df.a.value_counts() / len(df))", ["frequency"]),
        ("df.a.astype(str) + '_' + df.b.astype(str)", ["combine"]),
        ("df.a.astype(str).str.cat(df.b.astype(str), sep='_')", ["combine"]),
        ("df.groupby('city')['income'].transform('mean')", ["group_mean"]),
        ("df.groupby('city')['income'].transform(np.median)", ["group_median"]),
        ("df.groupby('city').income.transform('std')", ["group_std"]),
        ("df.groupby(['city'])['income'].transform('max')", ["group_max"]),
        ("df.groupby('city')['income'].transform('min')", ["group_min"]),
        ("df.groupby('city')['income'].transform('count')", ["group_count"]),
        ("df.groupby('city')['income'].rank(pct=True)", ["group_rank"]),
        ("df.city.map(df.groupby('city')['income'].mean())", ["group_mean"]),
        ("df.signup.dt.year", ["year"]),
        ("pd.to_datetime(df.signup).dt.dayofweek", ["weekday"]),
        ("df.note.str.len()", ["text_length"]),
        ("df.note.str.split().str.len()", ["word_count"]),
        ("df.note.str.count(' ')", ["word_count"]),
        ("len(s.split())", ["word_count"]),
        # nested: the outermost operator first, then what is inside
        ("np.log(df.debt / df.income)", ["log", "divide"]),
        ("(df.a + df.b) / df.c", ["divide", "add"]),
        ("np.sqrt(df.a * df.b) - df.c", ["subtract", "sqrt", "multiply"]),
        ("df.income / df.groupby('city')['income'].transform('mean')", ["divide", "group_mean"]),
        # no class of the vocabulary
        ("np.exp(df.a)", ["other"]),
        ("df.a.apply(lambda v: v % 7)", ["other"]),
        ("np.where(df.a > 3, 1, 0)", ["other"]),
        ("df.a", ["other"]),
        ("df.a % 3", ["other"]),
    ],
)
def test_an_expression_is_read_into_operator_classes(expr: str, ops: list[str]) -> None:
    assert classify_expression(expr) == ops


def test_the_columns_a_code_block_adds_are_found_in_every_form() -> None:
    code = """
import numpy as np
import pandas as pd

def fit(train):
    return {"mean": train.groupby("city")["income"].mean().to_dict()}

def transform(df, state):
    out = pd.DataFrame(index=df.index)
    ratio = df["debt"] / df["income"]
    out["log_ratio"] = np.log1p(ratio)
    out.loc[:, "city_plan"] = df.city.astype(str) + "|" + df.plan.astype(str)
    out["age2"] = df.age ** 2
    out["age2"] += 1
    df = df.assign(words=df.note.str.count(" ") + 1)
    return pd.DataFrame({"older": np.maximum(df.age, 40), "x": df.age.apply(str)})
"""
    got = [(f.name, f.op, f.ops) for f in classify_code(code) or []]
    assert got == [
        ("log_ratio", "log", ["log", "divide"]),
        ("city_plan", "combine", ["combine"]),
        ("age2", "square", ["square"]),
        ("age2", "add", ["add", "square"]),
        ("words", "add", ["add", "word_count"]),
        ("older", "max", ["max"]),
        ("x", "other", ["other"]),
    ]


def test_code_that_does_not_parse_is_none_and_code_without_columns_is_empty() -> None:
    assert classify_code("def transform(df, state:\n  return df") is None
    assert classify_code("x = 1\n") == []


def test_names_bound_to_themselves_do_not_loop() -> None:
    code = "c = df.a.value_counts()\nc = c / len(df)\ng = df\ng = g[g.a > 0]\ns = 'x'\ns = s + s\n"
    code += "df['f'] = df.a.map(c)\ndf['g'] = g.b + 1\ndf['h'] = s + df.a.astype(str)\n"
    assert [f.op for f in classify_code(code) or []] == ["frequency", "add", "combine"]


def test_only_transform_is_read_and_copies_are_not_features() -> None:
    code = """
import pandas as pd

def transform(df):
    out = pd.DataFrame(index=df.index)
    out["copy"] = df["npreg"]
    out["ratio"] = df.glu / df.bmi
    return out

example = pd.DataFrame({"npreg": [6, 1], "glu": [148, 85]})
print(transform(example))
"""
    assert [(f.name, f.op) for f in classify_code(code) or []] == [("ratio", "divide")]
