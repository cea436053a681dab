"""Looking for features that give the target away, where they hide.

All statistics are computed on the host from the training rows:

* a feature identical to the target, or the target a deterministic function of it;
* ID-like columns (a unique value per row);
* a single feature that alone scores near-perfectly, or nearly as well as the
  whole model (its strength — 2·|AUC − ½| for binary targets, |Spearman ρ| for
  regression — reaches :data:`CLOSE_TO_MODEL` of the model's own, and is itself
  strong);
* a categorical level that holds one class almost purely over many rows;
* with an LLM: columns whose name or values say they are recorded after the
  outcome. The LLM may add suspicion, never remove it.

Flagged columns are reported with the evidence and a suggested re-run without
them (``--drop COL``); they are never dropped silently.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field, create_model

from mlpilot import prompts
from mlpilot.agents.verifier import Check
from mlpilot.llm import LLM, LLMError, StructuredOutputError, structured
from mlpilot.task import TaskSpec

log = logging.getLogger(__name__)

NEAR_PERFECT = 0.995  # a single raw feature scoring this well (AUC, |ρ|) alone
# A single feature whose strength is this share of the whole model's: the model is that
# feature. (Breast cancer's best feature reaches 0.96 of a tuned model's: honest.)
CLOSE_TO_MODEL = 0.98
MIN_MODEL_STRENGTH = 0.3  # below this the model itself is too weak to compare with
# ... and a feature must itself be this strong (AUC 0.95) to be called close: a weak
# model can trail one honest feature
MIN_CLOSE_STRENGTH = 0.9
PURE_LEVEL = 0.95  # a level holding one class at least this purely ...
PURE_LIFT = 0.06  # ... with the other classes this much rarer in it than overall ...
PURE_MIN_ROWS = 30  # ... over at least this many rows (and 2% of all rows)
MAX_LEVELS = 50  # integer columns with at most this many values count as categorical
# Columns shown to the LLM: the ones most associated with the target (a weak column
# cannot leak much). Every prompt token costs on a CPU: the review of all 56 columns
# of cells was 1,650 tokens, 56 s of one core, and beside the trials of a 120 s run it
# did not finish; 16 columns with their samples are about 550 tokens.
LLM_COLUMNS = 16


@dataclass(frozen=True)
class Finding:
    """One suspected leak: the column, what kind, and the evidence in words."""

    column: str
    kind: Literal["copy", "function", "id", "perfect", "close", "pure_level", "llm"]
    evidence: str


# -- statistics -----------------------------------------------------------------------


def _positive(y: pd.Series) -> np.ndarray:
    return (y.to_numpy() == sorted(y.unique().tolist(), key=str)[-1]).astype(float)


def _auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    if len(np.unique(labels)) < 2 or len(np.unique(scores)) < 2:
        return None
    return float(roc_auc_score(labels, scores))


def _level_codes(s: pd.Series) -> np.ndarray:
    return pd.Series(pd.factorize(s.astype("object").fillna("<missing>"))[0]).to_numpy()


def _is_categorical(s: pd.Series) -> bool:
    if pd.api.types.is_bool_dtype(s) or not pd.api.types.is_numeric_dtype(s):
        return True
    return pd.api.types.is_integer_dtype(s) and s.nunique() <= MAX_LEVELS


def feature_strength(s: pd.Series, y: pd.Series, problem_type: str, seed: int = 0) -> float | None:
    """How much ``s`` alone tells about ``y``, on the model-strength scale: 2·|AUC − ½|
    (binary; categories by their out-of-fold positive rate) or |Spearman ρ|
    (regression; numeric features only). None where it does not apply."""
    if problem_type == "multiclass":
        return None
    if _is_categorical(s):
        if problem_type != "binary":
            return None
        codes = _level_codes(s)
        target = _positive(y)
        rates = np.empty(len(s))
        folds = np.random.default_rng(seed).integers(0, 5, len(s))
        for k in range(5):  # out of fold: a rare level does not score itself
            inside = folds != k
            sums = np.bincount(codes[inside], weights=target[inside], minlength=codes.max() + 1)
            counts = np.bincount(codes[inside], minlength=codes.max() + 1)
            prior = target[inside].mean()
            rate = (sums + prior) / (counts + 1.0)
            rates[~inside] = rate[codes[~inside]]
        auc = _auc(target, rates)
        return None if auc is None else 2 * abs(auc - 0.5)
    valid = s.notna().to_numpy()
    if valid.mean() < 0.5:
        return None
    values = s.to_numpy(dtype=float)[valid]
    if problem_type == "regression":
        rho = pd.Series(values).rank().corr(pd.Series(y.to_numpy(dtype=float)[valid]).rank())
        return None if np.isnan(rho) else abs(float(rho))
    auc = _auc(_positive(y)[valid], values)
    return None if auc is None else 2 * abs(auc - 0.5)


def model_strength(
    y: pd.Series, oof: np.ndarray, classes: Sequence[Any] | None, problem_type: str
) -> float | None:
    """The whole model's strength on the same scale, from its out-of-fold predictions."""
    if problem_type == "regression":
        rho = pd.Series(oof.ravel()).rank().corr(pd.Series(y.to_numpy(dtype=float)).rank())
        return None if np.isnan(rho) else abs(float(rho))
    if problem_type != "binary" or classes is None or oof.ndim != 2:
        return None
    positive = sorted(y.unique().tolist(), key=str)[-1]
    column = [str(c) for c in classes].index(str(positive))
    auc = _auc(_positive(y), oof[:, column])
    return None if auc is None else 2 * abs(auc - 0.5)


def pure_levels(s: pd.Series, y: pd.Series) -> list[str]:
    """Levels of a categorical ``s`` that hold one class almost purely over many rows,
    described with their evidence."""
    if not _is_categorical(s):
        return []
    n = len(s)
    min_rows = max(PURE_MIN_ROWS, int(0.02 * n))
    base = y.value_counts(normalize=True)
    table = pd.crosstab(s.astype("object").fillna("<missing>"), y)
    found = []
    for level, row in table.iterrows():
        count = int(row.sum())
        if count < min_rows:
            continue
        cls = row.idxmax()
        purity = row[cls] / count
        lift = (1 - purity) / max(1e-12, 1 - base[cls])
        if purity >= PURE_LEVEL and lift <= PURE_LIFT and base[cls] < 1:
            shown, name = _plain(level), _plain(cls)
            found.append(
                f"level {shown!r} is class {name!r} in {purity:.1%} of its {count} rows "
                f"(class {name!r} overall: {base[cls]:.1%})"
            )
    return found


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def find_leaks(
    task: TaskSpec,
    *,
    model: float | None = None,
    max_features: int = 200,
) -> list[Finding]:
    """The statistical findings for ``task``'s training rows; ``model`` is the whole
    model's strength (:func:`model_strength`), when known."""
    X, y = task.X, task.y
    findings: list[Finding] = []
    n = len(X)
    for col in list(X.columns)[:max_features]:
        s = X[col]
        valid = s.notna()
        s_valid, y_valid = s[valid], y[valid]
        if len(s_valid) < 10:
            continue
        if s_valid.astype(str).equals(y_valid.astype(str)):
            findings.append(Finding(col, "copy", "identical to the target"))
            continue
        n_values = s_valid.nunique()
        if 1 < n_values <= 0.5 * len(s_valid):
            per_value = y_valid.groupby(s_valid.to_numpy()).nunique()
            if (per_value <= 1).all() and y_valid.nunique() > 1:
                findings.append(
                    Finding(col, "function", "the target is a deterministic function of it")
                )
                continue
        id_dtype = pd.api.types.is_integer_dtype(s) or pd.api.types.is_object_dtype(s)
        if n_values == n and id_dtype and col not in task.text_columns:
            findings.append(Finding(col, "id", "ID-like (a unique value per row)"))
            continue
        if col in task.text_columns:
            continue
        levels = pure_levels(s, y) if task.is_classification else []
        if levels:
            findings.append(Finding(col, "pure_level", "; ".join(levels[:2])))
            continue
        strength = feature_strength(s, y, task.problem_type, task.seed)
        if strength is None:
            continue
        score = 0.5 + strength / 2 if task.problem_type == "binary" else strength
        if score >= NEAR_PERFECT:
            findings.append(Finding(col, "perfect", f"alone scores {score:.3f}"))
        elif (
            model is not None
            and model >= MIN_MODEL_STRENGTH
            and strength >= max(MIN_CLOSE_STRENGTH, CLOSE_TO_MODEL * model)
        ):
            findings.append(
                Finding(
                    col,
                    "close",
                    f"alone it has {strength / model:.0%} of the whole model's strength "
                    f"({_scale(task)} {strength:.3f} vs {model:.3f})",
                )
            )
    return findings


def _scale(task: TaskSpec) -> str:
    return "2·|AUC − ½|" if task.problem_type == "binary" else "|Spearman ρ|"


# -- the LLM's review ------------------------------------------------------------------


class _Suspect(BaseModel):
    column: str
    reason: str = Field("", max_length=200)


def ask_llm(llm: LLM, task: TaskSpec, *, timeout: float | None = None) -> list[Finding] | None:
    """Asks the LLM which columns look recorded after the outcome (or are the outcome
    under another name). Its answer can only name real columns; a malformed answer adds
    nothing (and is logged). None when the LLM gave no answer (unavailable, or stopped
    at ``timeout``): the review did not happen, and the report must not say it did."""
    columns = review_columns(task)
    if not columns:
        return []
    name = Literal[tuple(columns)]  # type: ignore[valid-type]
    suspect = create_model("Suspect", column=(name, ...), reason=(str, Field("", max_length=200)))
    answer = create_model("LeakReview", columns=(list[suspect], Field(max_length=10)))  # type: ignore[valid-type]
    samples = {c: _samples(task.X[c]) for c in columns}
    message = prompts.render(
        "leakage",
        target=task.target,
        problem=task.problem_type,
        columns=columns,
        samples=samples,
    )
    try:
        system = {"role": "system", "content": prompts.render("system")}
        reply = structured(
            llm,
            [system, {"role": "user", "content": message}],
            answer,
            role="leakage",
            temperature=0.0,
            max_tokens=200,
            seed=0,
            timeout=timeout,
        )
    except StructuredOutputError as e:
        log.info("the LLM's leakage review gave nothing usable: %s", e)
        return []
    except LLMError as e:
        log.info("the LLM's leakage review did not answer: %s", e)
        return None
    found = []
    for item in reply.columns:  # type: ignore[attr-defined]
        reason = item.reason.strip() or "its name suggests it is recorded after the outcome"
        found.append(Finding(item.column, "llm", f"the LLM suspects it: {reason}"))
    return found


def association(s: pd.Series, y: pd.Series, problem_type: str, seed: int = 0) -> float | None:
    """How strongly ``s`` alone goes with ``y``, for choosing what the LLM reviews:
    :func:`feature_strength`, and where that does not apply, the best one-vs-rest
    strength over the classes (multiclass) or the rank correlation of a category's
    out-of-fold target mean (a categorical column in a regression)."""
    if problem_type == "multiclass":
        per_class = [
            feature_strength(s, (y == c).map({True: "1", False: "0"}), "binary", seed)
            for c in y.unique()[:20]
        ]
        known = [v for v in per_class if v is not None]
        return max(known) if known else None
    if problem_type == "regression" and _is_categorical(s):
        codes = _level_codes(s)
        target = y.to_numpy(dtype=float)
        means = np.empty(len(s))
        folds = np.random.default_rng(seed).integers(0, 5, len(s))
        for k in range(5):
            inside = folds != k
            sums = np.bincount(codes[inside], weights=target[inside], minlength=codes.max() + 1)
            counts = np.bincount(codes[inside], minlength=codes.max() + 1)
            means[~inside] = ((sums + target[inside].mean()) / (counts + 1.0))[codes[~inside]]
        rho = pd.Series(means).rank().corr(pd.Series(target).rank())
        return None if np.isnan(rho) else abs(float(rho))
    return feature_strength(s, y, problem_type, seed)


def review_columns(task: TaskSpec, n: int = LLM_COLUMNS) -> list[str]:
    """The columns the LLM's review reads: all of them up to ``n``, else the ``n`` most
    associated with the target (text columns, and columns whose association cannot
    be measured, after those), in the table's order."""
    columns = list(task.feature_columns)
    if len(columns) <= n:
        return columns
    strength: dict[str, float] = {}
    for c in columns:
        value = None
        if c not in task.text_columns:
            with contextlib.suppress(ValueError, TypeError):
                value = association(task.X[c], task.y, task.problem_type, task.seed)
        strength[c] = -1.0 if value is None else value
    keep = set(sorted(columns, key=lambda c: -strength[c])[:n])  # stable: ties by order
    return [c for c in columns if c in keep]


def _samples(column: pd.Series, n: int = 3) -> str:
    """A column's first ``n`` distinct values for the review's prompt; numbers to 3
    significant digits (the name says more than the 4th digit, and on a CPU every
    prompt token costs: the review read about 1,000 for 30 columns)."""
    values = column.dropna().unique()[:n]
    if pd.api.types.is_float_dtype(column):
        return ", ".join(f"{float(v):.3g}" for v in values)
    return ", ".join(map(str, values))


# -- the check ---------------------------------------------------------------------------


def leakage_check(findings: Sequence[Finding], rerun: str = "") -> Check:
    """One report line over all findings (statistical and the LLM's), with the suggested
    re-run; a warning, since a strong honest feature can look like a leak."""
    if not findings:
        return Check("leakage", True, "no feature gives the target away", "warning")
    by_column: dict[str, list[str]] = {}
    for f in findings:
        by_column.setdefault(f.column, []).append(f.evidence)
    parts = [f"{col!r}: {'; '.join(ev)}" for col, ev in list(by_column.items())[:8]]
    detail = " | ".join(parts)
    drops = " ".join(f"--drop {c}" for c in by_column)
    detail += f" | kept in the model (never dropped silently); to re-run without them: {drops}"
    if rerun:
        detail += f" ({rerun} {drops})"
    return Check("leakage", False, detail, "warning")


def check_leakage(task: TaskSpec, *, model: float | None = None) -> list[Check]:
    """The statistical leakage check alone (no LLM, no re-run command)."""
    return [leakage_check(find_leaks(task, model=model))]
