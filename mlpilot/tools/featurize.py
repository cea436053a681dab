"""Typed engineered features: learned on training rows, applied row by row.

A feature is a small dict, ``{"op": "divide", "a": "debt", "b": "income"}``, over a
fixed vocabulary (:data:`OPS`). :class:`FeatureBuilder` fits every feature's state
(bin edges, frequency tables, group statistics, a date format) on the rows it is
fitted on and then computes each row from that row's own values and the fitted
state only: a row gets the same numbers alone or in a batch of 10,000.

Standalone (numpy and pandas only): the host imports it as
``mlpilot.tools.featurize`` to check proposals and to build the delivered model,
and sandbox jobs get this file next to their script (imported as ``featurize``),
so the features a job computes per fold are the ones the delivered model computes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin


@dataclass(frozen=True)
class Op:
    """One operator: its family, whether it takes a second column, what its columns
    must hold (``number``, ``any``, ``date``, ``text``) and how it is written."""

    family: str
    binary: bool
    kinds: tuple[str, ...]
    formula: str
    help: str


_NUM, _TWO, _GROUP = ("number",), ("number", "number"), ("number", "any")

OPS: dict[str, Op] = {
    # unary: a number in, a number out
    "log": Op("unary", False, _NUM, "log({a})", "sign(a)·log(1+|a|)"),
    "sqrt": Op("unary", False, _NUM, "sqrt({a})", "sign(a)·sqrt(|a|)"),
    "abs": Op("unary", False, _NUM, "abs({a})", "|a|"),
    "square": Op("unary", False, _NUM, "{a}^2", "a²"),
    "reciprocal": Op("unary", False, _NUM, "1/{a}", "1 / a, missing where a is 0"),
    "bin": Op("unary", False, _NUM, "bin10({a})", "decile of a on the training rows"),
    # binary arithmetic on two numbers
    "add": Op("arithmetic", True, _TWO, "{a} + {b}", "a + b"),
    "subtract": Op("arithmetic", True, _TWO, "{a} - {b}", "a - b"),
    "multiply": Op("arithmetic", True, _TWO, "{a} * {b}", "a * b"),
    "divide": Op("arithmetic", True, _TWO, "{a} / {b}", "a / b, missing where b is 0"),
    "min": Op("arithmetic", True, _TWO, "min({a}, {b})", "the smaller of a, b"),
    "max": Op("arithmetic", True, _TWO, "max({a}, {b})", "the larger of a, b"),
    # categories
    "frequency": Op("categorical", False, ("any",), "freq({a})", "share of rows with a's value"),
    "combine": Op("categorical", True, ("any", "any"), "{a} & {b}", "the pair as one category"),
    # group-by aggregations: the value column a, grouped by the column b
    "group_mean": Op("groupby", True, _GROUP, "mean({a} by {b})", "mean of a in b's group"),
    "group_median": Op("groupby", True, _GROUP, "median({a} by {b})", "median of a in b's group"),
    "group_min": Op("groupby", True, _GROUP, "min({a} by {b})", "min of a in b's group"),
    "group_max": Op("groupby", True, _GROUP, "max({a} by {b})", "max of a in b's group"),
    "group_std": Op("groupby", True, _GROUP, "std({a} by {b})", "spread of a in b's group"),
    "group_rank": Op("groupby", True, _GROUP, "rank({a} in {b})", "a's percentile in b's group"),
    "group_count": Op("groupby", False, ("any",), "count(by {a})", "training rows in a's group"),
    # date parts
    "year": Op("date", False, ("date",), "year({a})", "the year"),
    "month": Op("date", False, ("date",), "month({a})", "the month, 1-12"),
    "day": Op("date", False, ("date",), "day({a})", "the day of the month"),
    "weekday": Op("date", False, ("date",), "weekday({a})", "0 = Monday"),
    "hour": Op("date", False, ("date",), "hour({a})", "the hour"),
    # text
    "text_length": Op("text", False, ("text",), "length({a})", "characters"),
    "token_count": Op("text", False, ("text",), "tokens({a})", "words"),
}
FAMILIES: tuple[str, ...] = ("unary", "arithmetic", "categorical", "groupby", "date", "text")
BINS = 10
RANK_GRID = 101  # quantiles kept per group for group_rank
MISSING_KEY = "<missing>"


_INFIX = (" + ", " - ", " * ", " / ", " & ")


def operand(name: object) -> str:
    """A column name inside a formula: an earlier feature written with an infix
    operator is put in brackets (``(a - b) / c``)."""
    text = str(name)
    if not any(op in text for op in _INFIX) or _one_call(text):
        return text
    return f"({text})"


def _one_call(text: str) -> bool:
    """Whether ``text`` is one bracketed call, ``f(...)`` or ``(...)``, end to end."""
    start = text.find("(")
    head = text[:start]
    if start < 0 or not text.endswith(")") or (head and not head.replace("_", "").isalnum()):
        return False
    depth = 0
    for i, ch in enumerate(text[start:], start):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0:
            return i == len(text) - 1
    return False


def formula(spec: dict) -> str:
    """How a feature is written (also its column name): ``debt / income``."""
    op = OPS[spec["op"]]
    if op.formula.startswith("{a} ") and " {b}" in op.formula:  # infix: a op b
        return op.formula.format(a=operand(spec.get("a")), b=operand(spec.get("b")))
    return op.formula.format(a=spec.get("a"), b=spec.get("b"))


def numbers(s: pd.Series) -> np.ndarray:
    """A column as float64, missing (and anything that is not a number) as NaN."""
    if pd.api.types.is_bool_dtype(s):
        s = s.astype("float64")
    return pd.to_numeric(s, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)


def key(value: object) -> str:
    """One category's key, the same whatever the column's dtype (3, 3.0 and True
    are the numbers 3.0, 3.0, 1.0): what frequency tables and groups are keyed by."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return MISSING_KEY
    if isinstance(value, (bool, np.bool_)):
        return repr(float(value))
    if isinstance(value, (int, float, np.integer, np.floating)):
        return repr(float(value))
    return "s:" + str(value)


def keys(s: pd.Series) -> np.ndarray:
    return np.array([key(v) for v in s.tolist()], dtype=object)


def _date_format(s: pd.Series) -> str:
    from pandas.tseries.api import guess_datetime_format

    first = s.dropna().astype(str)
    fmt = guess_datetime_format(first.iloc[0]) if len(first) else None
    return fmt or "mixed"


def dates(s: pd.Series, fmt: str) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(s):
        return s
    return pd.to_datetime(s.astype("string"), format=fmt, errors="coerce")


class FeatureBuilder(BaseEstimator, TransformerMixin):
    """Adds engineered columns to a frame (and drops the columns named in ``drop``).

    Features are computed in order, and a feature may name an earlier one as its
    column (``{"op": "subtract", "a": "lw * ld", "b": "rw * rd"}``).

    Args:
        features: feature dicts (``op``, ``a``, optionally ``b``), see :data:`OPS`.
        drop: input columns to leave out after the features are computed.
    """

    def __init__(self, features: list | None = None, drop: list | None = None) -> None:
        self.features = features
        self.drop = drop

    def fit(self, X: pd.DataFrame, y: object = None) -> FeatureBuilder:
        # in order: a feature may use the ones before it as columns (by their names)
        frame = X.copy()
        self.state_, self.names_ = [], []
        for spec in self.features or []:
            state = self._fit_one(spec, frame)
            name = formula(spec)
            frame[name] = self._apply(spec, state, frame)
            self.state_.append(state)
            self.names_.append(name)
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        out = X.copy()
        for spec, state, name in zip(self.features or [], self.state_, self.names_, strict=True):
            out[name] = self._apply(spec, state, out)
        return out.drop(columns=[c for c in self.drop or [] if c in out.columns])

    # -- one feature ---------------------------------------------------------

    @staticmethod
    def _fit_one(spec: dict, X: pd.DataFrame) -> dict:
        op, a, b = spec["op"], spec.get("a"), spec.get("b")
        if op == "bin":
            values = numbers(X[a])
            values = values[~np.isnan(values)]
            qs = np.quantile(values, np.linspace(0, 1, BINS + 1)[1:-1]) if len(values) else []
            return {"edges": sorted({float(q) for q in qs})}
        if op == "frequency":
            counts = pd.Series(keys(X[a])).value_counts()
            return {"keys": counts.index.tolist(), "values": (counts / len(X)).tolist()}
        if op == "group_count":
            counts = pd.Series(keys(X[a])).value_counts()
            return {"keys": counts.index.tolist(), "values": counts.astype(float).tolist()}
        if op.startswith("group_"):
            frame = pd.DataFrame({"g": keys(X[b]), "v": numbers(X[a])}).dropna(subset=["v"])
            grouped = frame.groupby("g")["v"]
            if op == "group_rank":
                grid = np.linspace(0, 1, RANK_GRID)
                table = {g: np.quantile(v.to_numpy(), grid).tolist() for g, v in grouped}
                every = frame["v"].to_numpy()
                fallback = np.quantile(every, grid).tolist() if len(every) else []
                return {"keys": list(table), "values": list(table.values()), "fallback": fallback}
            how = op.removeprefix("group_")
            stats = getattr(grouped, how)()
            overall = getattr(frame["v"], how)() if len(frame) else float("nan")
            return {
                "keys": stats.index.tolist(),
                "values": [float(v) for v in stats.fillna(overall)],
                "fallback": float(overall),
            }
        if OPS[op].family == "date":
            return {"format": _date_format(X[a])}
        return {}

    @staticmethod
    def _apply(spec: dict, state: dict, X: pd.DataFrame) -> np.ndarray:
        op, a, b = spec["op"], spec.get("a"), spec.get("b")
        family = OPS[op].family
        if family in ("unary", "arithmetic"):
            x = numbers(X[a])
            y = numbers(X[b]) if OPS[op].binary else None
            with np.errstate(all="ignore"):
                if op == "log":
                    return np.sign(x) * np.log1p(np.abs(x))
                if op == "sqrt":
                    return np.sign(x) * np.sqrt(np.abs(x))
                if op == "abs":
                    return np.abs(x)
                if op == "square":
                    return x * x
                if op == "reciprocal":
                    return np.where(x == 0, np.nan, 1.0 / np.where(x == 0, 1.0, x))
                if op == "bin":
                    edges = np.asarray(state["edges"], dtype=float)
                    out = np.searchsorted(edges, x, side="right").astype(float)
                    return np.where(np.isnan(x), np.nan, out)
                assert y is not None
                if op == "add":
                    return x + y
                if op == "subtract":
                    return x - y
                if op == "multiply":
                    return x * y
                if op == "divide":
                    return np.where(y == 0, np.nan, x / np.where(y == 0, 1.0, y))
                if op == "min":
                    return np.fmin(x, y)
                return np.fmax(x, y)
        if op == "combine":
            return np.array(
                [f"{p}|{q}" for p, q in zip(keys(X[a]), keys(X[b]), strict=True)], dtype=object
            )
        if op in ("frequency", "group_count"):
            table = dict(zip(state["keys"], state["values"], strict=True))
            return np.array([table.get(k, 0.0) for k in keys(X[a])], dtype=float)
        if op == "group_rank":
            table = dict(zip(state["keys"], state["values"], strict=True))
            x = numbers(X[a])
            out = np.full(len(x), np.nan)
            for i, (g, v) in enumerate(zip(keys(X[b]), x, strict=True)):
                grid = table.get(g, state["fallback"])
                if not np.isnan(v) and len(grid):
                    out[i] = np.searchsorted(np.asarray(grid), v, side="right") / len(grid)
            return out
        if family == "groupby":
            table = dict(zip(state["keys"], state["values"], strict=True))
            return np.array([table.get(g, state["fallback"]) for g in keys(X[b])], dtype=float)
        if family == "date":
            d = dates(X[a], state["format"])
            part = d.dt.day_of_week if op == "weekday" else getattr(d.dt, op)
            return part.to_numpy(dtype="float64", na_value=np.nan)
        text = X[a].astype("string")
        if op == "text_length":
            return text.str.len().to_numpy(dtype="float64", na_value=np.nan)
        return text.str.split().str.len().to_numpy(dtype="float64", na_value=np.nan)
