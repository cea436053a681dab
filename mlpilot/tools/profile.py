"""A compact data profile: what a planner or an LLM prompt needs to know about the data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from mlpilot.task import TaskSpec


@dataclass(frozen=True)
class DataProfile:
    """Facts about the training data, all computed on the host."""

    n_rows: int
    n_features: int
    n_numeric: int
    n_categorical: int
    n_text: int
    class_balance: str  # "" for regression
    missing_share: str  # "" when nothing is missing
    correlated_pairs: str  # "" when none


PROBLEM_WORDS = {
    "binary": "binary classification",
    "multiclass": "multiclass classification",
    "regression": "regression",
}


def profile_frame(
    X: pd.DataFrame,
    y: pd.Series,
    *,
    text_columns: tuple[str, ...] = (),
    classification: bool,
    max_pairs: int = 3,
    threshold: float = 0.95,
) -> DataProfile:
    """Profiles features ``X`` and target ``y``."""
    numeric = [
        c for c in X.columns if pd.api.types.is_numeric_dtype(X[c]) and c not in text_columns
    ]
    categorical = [c for c in X.columns if c not in numeric and c not in text_columns]
    balance = ""
    if classification:
        shares = y.value_counts(normalize=True).sort_index()
        balance = ", ".join(f"{k}: {v:.0%}" for k, v in shares.head(10).items())
        if len(shares) > 10:
            balance += f", ... ({len(shares)} classes)"
    missing = float(X.isna().to_numpy().mean()) if X.size else 0.0
    pairs = ""
    if 1 < len(numeric) <= 200:
        corr = X[numeric].corr().abs().to_numpy()
        iu = np.triu_indices_from(corr, k=1)
        strong = [
            (corr[i, j], numeric[i], numeric[j])
            for i, j in zip(*iu, strict=True)
            if corr[i, j] >= threshold
        ]
        strong.sort(reverse=True)
        pairs = "; ".join(f"{a} ~ {b} ({r:.2f})" for r, a, b in strong[:max_pairs])
        if len(strong) > max_pairs:
            pairs += f"; and {len(strong) - max_pairs} more"
    return DataProfile(
        n_rows=len(X),
        n_features=X.shape[1],
        n_numeric=len(numeric),
        n_categorical=len(categorical),
        n_text=len(text_columns),
        class_balance=balance,
        missing_share=f"{missing:.1%}" if missing > 0 else "",
        correlated_pairs=pairs,
    )


def prompt_context(task: TaskSpec, profile: DataProfile) -> dict[str, Any]:
    """The variables of the shared dataset block that opens every LLM prompt of a run.

    Every role (planner, warm start, candidate sampling) starts its prompt with the
    same system message and this same block, so a local model's prompt cache reuses
    it and each later call only processes its own part.
    """
    return {
        "problem": PROBLEM_WORDS[task.problem_type],
        "modality": task.modality,
        "metric": task.metric.display,
        "direction": "higher" if task.metric.greater_is_better else "lower",
        "profile": profile,
    }
