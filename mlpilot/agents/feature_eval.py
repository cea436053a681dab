"""Checking and measuring proposed features: what a column may feed, whether a
feature's values can be a model's input, and its gain under repeated, paired
cross-validation in the sandbox, with a noise gate.

The gate: each repeat of K-fold CV scores the data with and without the block on
the same folds; the per-fold differences d (signed so that positive is better)
give a mean gain and its standard error. The folds of repeated CV overlap, so the
plain standard error understates the noise; the corrected one (Nadeau and Bengio,
2003) multiplies the variance by (1/J + 1/(K-1)) instead of 1/J for J = repeats·K
differences: about 2.2 times the plain error for 3 × 5 folds. A block is kept only
when its mean gain exceeds that corrected standard error. Ten rounds of the plain
one-standard-error rule on pure noise would keep a block most of the time.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlpilot.agents.leakage import NEAR_PERFECT, feature_strength
from mlpilot.agents.trials import job_classes, job_outputs, load_npy, npy_bytes, parquet_bytes
from mlpilot.sandbox import Job, Limits, Sandbox, SandboxError
from mlpilot.task import TaskSpec
from mlpilot.tools import cv_job, featurize
from mlpilot.tools.data import plain_numbers
from mlpilot.tools.featurize import OPS, FeatureBuilder
from mlpilot.tools.metrics import Metric, predictions_for

# the job's script: not imported here (it imports its neighbours as the sandbox lays them out)
JOB = Path(cv_job.__file__).with_name("feature_job.py")
REPEATS = 3
FOLDS = 5
MAX_EVAL_ROWS = 4000  # rows the evaluator uses (a seeded sample of larger data)
DATE_SHARE = 0.8  # share of non-missing values that must parse as dates
ROW_ORDER = 0.99  # |Spearman ρ| with the row number that marks a row-order feature
MAX_DIVIDE_BY_ZERO = 0.5  # share of rows a division may leave missing
# how the reasons of refusals that suggest a leak begin (the verifier flags them)
ROW_ORDER_REASON = "follows the row order"
ANSWER_REASON = "predicts the target almost perfectly on its own"


# -- what columns are -------------------------------------------------------------------


def column_kinds(task: TaskSpec) -> dict[str, set[str]]:
    """What each feature column can feed: ``number``, ``date``, ``text`` and ``any``
    (every non-text column: categories, frequency tables, groups)."""
    kinds: dict[str, set[str]] = {}
    for col in task.feature_columns:
        s = task.train[col]
        if col in task.text_columns:
            kinds[col] = {"text"}
            continue
        found = {"any"}
        if pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
            found.add("number")
        elif not pd.api.types.is_datetime64_any_dtype(s):
            sample = s.dropna().astype(str).head(200)
            if len(sample):
                parsed = pd.to_datetime(sample, errors="coerce", format="mixed")
                numeric = sample.str.fullmatch(r"-?\d+(\.\d+)?").all()
                if parsed.notna().mean() >= DATE_SHARE and not numeric:
                    found.add("date")
        else:
            found.add("date")
        kinds[col] = found
    return kinds


def check_spec(spec: dict[str, Any], kinds: dict[str, set[str]]) -> str | None:
    """Why ``spec`` cannot be computed at all (unknown operator or column, a column of
    the wrong kind), or None."""
    op = OPS.get(str(spec.get("op")))
    if op is None:
        return f"unknown operator {spec.get('op')!r}; known: {', '.join(OPS)}"
    names = [spec.get("a")] + ([spec.get("b")] if op.binary else [])
    for name, kind in zip(names, op.kinds, strict=True):
        if not name:
            return f"{spec['op']} needs {'two columns (a, b)' if op.binary else 'a column (a)'}"
        if name not in kinds:
            return f"unknown column {name!r}; the columns are: {', '.join(list(kinds)[:40])}"
        if kind not in kinds[name]:
            have = "numbers" if "number" in kinds[name] else "categories"
            have = "text" if "text" in kinds[name] else have
            return f"{spec['op']} needs a {kind} column, but {name!r} holds {have}"
    if op.binary and spec.get("a") == spec.get("b"):
        return f"{spec['op']} of a column with itself"
    return None


def check_values(
    name: str, values: np.ndarray, spec: dict[str, Any], task: TaskSpec, X: pd.DataFrame
) -> str | None:
    """Why a computed feature (on the training rows) cannot be a model input, or None:
    empty, constant, infinite, mostly divided by zero, a copy of a column, tracking the
    row order, or predicting the target near perfectly on its own (a leak, or the
    answer written as a feature: either way not something to learn from)."""
    if values.dtype == object:
        if pd.Series(values).nunique() < 2:
            return "constant: one value on every training row"
        return None
    finite = np.isfinite(values)
    if np.isinf(values).any():
        return f"infinite on {int(np.isinf(values).sum())} training rows"
    if not finite.any():
        return "missing on every training row"
    missing = 1 - finite.mean()
    if spec["op"] in ("divide", "reciprocal") and missing > MAX_DIVIDE_BY_ZERO:
        return f"divides by zero (or by a missing value) on {missing:.0%} of the training rows"
    if np.nanstd(values) == 0:
        return f"constant: {float(np.nanmax(values)):g} on every training row"
    for col in X.columns:
        other = X[col]
        if pd.api.types.is_numeric_dtype(other):
            same = np.allclose(featurize.numbers(other), values, equal_nan=True)
            if same:
                return f"the same values as the column {col!r}"
    order = _row_order(values)
    inputs = [c for c in (spec.get("a"), spec.get("b")) if c]
    if order >= ROW_ORDER and all(
        _row_order(_as_order(X[c])) < ROW_ORDER for c in inputs if c in X
    ):
        return f"{ROW_ORDER_REASON} (Spearman ρ {order:.3f} with the row number)"
    alone = strength_alone(pd.Series(values, index=task.train.index), task)
    if alone is not None and alone >= NEAR_PERFECT:
        return f"{ANSWER_REASON} (strength {alone:.3f}): a leak, or the answer itself"
    return None


def suggests_leak(why: str) -> bool:
    """Whether a refusal's reason says the feature may leak (row order, the answer)."""
    return why.startswith((ROW_ORDER_REASON, ANSWER_REASON))


def _as_order(s: pd.Series) -> np.ndarray:
    """A column as numbers to compare with the row number: its values, or for
    categories their sorted codes (data sorted by a category tracks the row order too)."""
    if pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
        return featurize.numbers(s)
    return pd.Series(featurize.keys(s)).rank(method="dense").to_numpy(dtype=float)


def _row_order(values: np.ndarray) -> float:
    ok = np.isfinite(values)
    if ok.sum() < 10:
        return 0.0
    rho = pd.Series(values[ok]).rank().corr(pd.Series(np.flatnonzero(ok)).rank())
    return 0.0 if np.isnan(rho) else abs(float(rho))


def strength_alone(s: pd.Series, task: TaskSpec) -> float | None:
    """A feature's strength alone: 2·|AUC − ½| or |ρ| (see :mod:`leakage`); for many
    classes the out-of-fold accuracy of the majority class per decile, over that of
    the most common class."""
    y = task.y
    if task.problem_type != "multiclass":
        return feature_strength(s, y, task.problem_type, seed=task.seed)
    x = s.to_numpy(dtype=float)
    ok = np.isfinite(x)
    if ok.mean() < 0.5:
        return None
    edges = np.unique(np.quantile(x[ok], np.linspace(0, 1, 21)[1:-1]))
    bins = np.where(ok, np.searchsorted(edges, np.where(ok, x, 0), side="right"), -1)
    labels = y.astype(str).to_numpy()
    folds = np.random.default_rng(task.seed).integers(0, 5, len(x))
    right = 0
    for k in range(5):
        inside = folds != k
        table = pd.crosstab(bins[inside], labels[inside])
        best = table.idxmax(axis=1).to_dict()
        fallback = pd.Series(labels[inside]).mode().iloc[0]
        guess = np.array([best.get(b, fallback) for b in bins[~inside]])
        right += int((guess == labels[~inside]).sum())
    base = pd.Series(labels).value_counts(normalize=True).iloc[0]
    accuracy = right / len(x)
    return None if base >= 1 else max(0.0, (accuracy - base) / (1 - base))


# -- measuring ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gain:
    """A block's measured gain: mean per-fold difference (positive is better, in the
    metric's units), its corrected standard error, and both mean scores."""

    mean: float
    se: float
    base: float
    score: float

    @property
    def passes(self) -> bool:
        return self.mean > 0 and self.mean > self.se


def repeated_folds(task: TaskSpec, rows: np.ndarray, repeats: int, k: int) -> np.ndarray:
    """(repeats, len(rows)) fold numbers, stratified for classification, seeded."""
    from sklearn.model_selection import KFold, StratifiedKFold

    y = task.y.to_numpy()[rows]
    out = np.empty((repeats, len(rows)), dtype=np.int64)
    for r in range(repeats):
        seed = task.seed * 1000 + r
        splitter = (
            StratifiedKFold(k, shuffle=True, random_state=seed)
            if task.is_classification
            else KFold(k, shuffle=True, random_state=seed)
        )
        for i, (_, valid) in enumerate(splitter.split(np.zeros(len(rows)), y)):
            out[r, valid] = i
    return out


def fold_scores(
    metric: Metric, y: np.ndarray, folds: np.ndarray, oof: np.ndarray, classes: list[Any] | None
) -> np.ndarray:
    """(repeats, k) scores of out-of-fold predictions, computed on the host."""
    repeats, k = folds.shape[0], int(folds.max()) + 1
    out = np.empty((repeats, k))
    for r in range(repeats):
        for i in range(k):
            rows = folds[r] == i
            out[r, i] = metric(y[rows], predictions_for(metric, oof[r][rows], classes))
    return out


def paired_gain(metric: Metric, base: np.ndarray, scores: np.ndarray) -> Gain:
    """The gain of ``scores`` over ``base`` (both (repeats, k), the same folds)."""
    sign = 1.0 if metric.greater_is_better else -1.0
    d = (sign * (scores - base)).ravel()
    k = base.shape[1]
    var = float(np.var(d, ddof=1)) if len(d) > 1 else 0.0
    se = math.sqrt((1 / len(d) + 1 / (k - 1)) * var)
    return Gain(float(d.mean()), se, float(base.mean()), float(scores.mean()))


class Evaluator:
    """Runs the repeated-CV evaluation job (:mod:`mlpilot.tools.feature_job`) for
    feature blocks in the sandbox, and scores its predictions on the host.

    Args:
        sandbox: where the job runs.
        task: the task (a seeded sample of at most ``MAX_EVAL_ROWS`` rows is used).
        family: the fast model (``hist_gradient_boosting`` or ``linear``).
        limits: the job's limits.
    """

    def __init__(
        self, sandbox: Sandbox, task: TaskSpec, family: str, limits: Limits | None = None
    ) -> None:
        self.sandbox = sandbox
        self.task = task
        self.family = family
        self.limits = limits or Limits(timeout_s=120)
        n = len(task.train)
        rng = np.random.default_rng(task.seed)
        self.rows = (
            np.sort(rng.choice(n, MAX_EVAL_ROWS, replace=False))
            if n > MAX_EVAL_ROWS
            else np.arange(n)
        )
        self.folds = repeated_folds(task, self.rows, REPEATS, FOLDS)
        self.X = task.X.iloc[self.rows].reset_index(drop=True)
        self.y = task.y.iloc[self.rows].reset_index(drop=True)
        frame = plain_numbers(task.train.iloc[self.rows].reset_index(drop=True), skip=[task.target])
        self._train = parquet_bytes(frame)
        # the free code's new columns on all sampled training rows, by variant, from
        # the last run (for the host's checks)
        self.last_code: dict[int, pd.DataFrame] = {}

    def run(
        self, variants: list[dict[str, Any]], timeout_s: float | None = None
    ) -> list[np.ndarray] | str:
        """(repeats, k) host-computed scores per variant ({"features", "drop"}), or
        why the job failed (as a message for the LLM)."""
        task = self.task
        cardinality = {}
        for v in variants:
            built = FeatureBuilder(v["features"], v.get("drop", [])).fit(self.X).transform(self.X)
            for col in built.columns:
                if col not in task.text_columns and not pd.api.types.is_numeric_dtype(built[col]):
                    cardinality[col] = int(built[col].nunique())
        config = {
            "family": self.family,
            "params": {},
            "problem_type": task.problem_type,
            "target": task.target,
            "text_columns": list(task.text_columns),
            "seed": task.seed,
            "cardinality": cardinality,
            "variants": variants,
        }
        files: dict[str, bytes | Path] = {
            "config.json": json.dumps(config, default=str),
            "train.parquet": self._train,
            "folds.npy": npy_bytes(self.folds),
            "cv_job.py": Path(cv_job.__file__).read_bytes(),
            "featurize.py": Path(featurize.__file__).read_bytes(),
        }
        limits = (
            self.limits
            if timeout_s is None
            else Limits(
                timeout_s=max(5.0, min(self.limits.timeout_s, timeout_s)),
                memory_mb=self.limits.memory_mb,
                cpus=self.limits.cpus,
            )
        )
        job = Job(code=JOB.read_text(), files=files)
        run = self.sandbox.run(job, limits=limits)
        if run.timed_out:
            return f"the evaluation ran out of time ({limits.timeout_s:.0f} s)"
        if not run.ok:
            return f"the evaluation failed: {run.summary()}"[:600]
        names = tuple(f"oof_{i}.npy" for i in range(len(variants)))
        coded = {i: f"code_{i}.parquet" for i, v in enumerate(variants) if v.get("code")}
        try:
            art = job_outputs(run, (*names, *coded.values()))
            classes = job_classes(art)
            oofs = [load_npy(art[name]) for name in names]
            self.last_code = {i: pd.read_parquet(io.BytesIO(art[f])) for i, f in coded.items()}
        except (KeyError, OSError, ValueError, SandboxError) as e:
            return f"the evaluation's outputs are unreadable: {e}"
        for frame in self.last_code.values():
            if len(frame) != len(self.rows):
                return f"the code gave {len(frame)} rows for {len(self.rows)}"
        y = self.y.to_numpy()
        scores = []
        for oof in oofs:
            if oof.shape[:2] != self.folds.shape or not np.isfinite(oof).all():
                return f"the evaluation returned unusable predictions (shape {oof.shape})"
            scores.append(fold_scores(task.metric, y, self.folds, oof, classes))
        return scores


def build_variant(features: list[dict[str, Any]], drop: list[str]) -> dict[str, Any]:
    return {"features": [dict(f) for f in features], "drop": list(drop)}
