"""How the delivered model should learn from every row: one refit on all rows, or
the average of cross-validation's fold models (bagging), which together saw them all.

On the race's outer splits (``benchmarks/tabular.py``: the same datasets, seeds and
test rows), for mlpilot's LightGBM default and its two portfolio configurations
(the configurations every run starts with, built by the sandbox job's own code):

* **80% rows**: one model on the training rows minus mlpilot's 20% holdout (what a
  run delivered before its refit on all rows, and still delivers when it has no time)
* **refit on all**: one model on every training row (mlpilot's choice)
* **bag of 5**: five models, each on four fifths of every training row, averaged

Prints the test score of each per dataset and seed, the mean rank of the three, and
their fit seconds: the time the search would give up to pay for them.

    python benchmarks/refit_vs_bagging.py [--datasets ...] [--seeds 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

sys.path.insert(0, str(Path(__file__).parent))

from tabular import Split

from mlpilot.tools.cv_job import build_estimator, build_pipeline
from mlpilot.tools.search_spaces import first_configs

DATASETS = [
    "titanic",
    "credit_data",
    "wa_churn",
    "lending_club",
    "hpc_data",
    "concrete",
    "ames",
    "diamonds",
]
WAYS = ["80% rows", "refit on all", "bag of 5"]


def predict(split: Split, pipes: list[Any]) -> np.ndarray:
    """The pipelines' averaged test predictions (probabilities in ``split.classes`` order)."""
    outs = []
    for pipe in pipes:
        if split.classification:
            proba = pipe.predict_proba(split.test_X)
            by_name = {str(c): proba[:, i] for i, c in enumerate(pipe.classes_)}
            outs.append(np.column_stack([by_name[str(c)] for c in split.classes]))
        else:
            outs.append(np.asarray(pipe.predict(split.test_X), dtype=float))
    return np.mean(outs, axis=0)


def fit(split: Split, params: dict[str, Any], X: pd.DataFrame, y: pd.Series) -> Any:
    estimator = build_estimator("lightgbm", dict(params), split.classification, split.seed)
    return build_pipeline(X, [], estimator).fit(X, y)


def cell(split: Split, params: dict[str, Any]) -> dict[str, tuple[float, float]]:
    X = split.train.drop(columns=[split.target])
    y = split.train[split.target]
    stratify = y if split.classification else None
    part, _ = train_test_split(np.arange(len(y)), test_size=0.2, random_state=0, stratify=stratify)
    out = {}
    t0 = time.perf_counter()
    pipes = [fit(split, params, X.iloc[part], y.iloc[part])]
    out["80% rows"] = (split.score(predict(split, pipes)), time.perf_counter() - t0)
    t0 = time.perf_counter()
    pipes = [fit(split, params, X, y)]
    out["refit on all"] = (split.score(predict(split, pipes)), time.perf_counter() - t0)
    folds = (StratifiedKFold if split.classification else KFold)(5, shuffle=True, random_state=0)
    t0 = time.perf_counter()
    pipes = [
        fit(split, params, X.iloc[inner], y.iloc[inner])
        for inner, _ in folds.split(X, y if split.classification else None)
    ]
    out["bag of 5"] = (split.score(predict(split, pipes)), time.perf_counter() - t0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="*", default=DATASETS)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    first = Split(args.datasets[0], 0)  # imports and caches before any timing
    fit(
        first,
        {},
        first.train.drop(columns=[first.target]).head(200),
        first.train[first.target].head(200),
    )
    ranks: dict[str, list[float]] = {w: [] for w in WAYS}
    seconds: dict[str, list[float]] = {w: [] for w in WAYS}
    print(f"{'dataset':14} {'seed':>4} {'config':>6} " + " ".join(f"{w:>13}" for w in WAYS))
    for name in args.datasets:
        for seed in range(args.seeds):
            split = Split(name, seed)
            sign = split.metric.sign()
            for c, params in enumerate(first_configs("lightgbm")):
                out = cell(split, params)
                scores = {w: out[w][0] for w in WAYS}
                for w in WAYS:
                    ranks[w].append(
                        1 + sum(sign * (s - scores[w]) > 1e-12 for s in scores.values())
                    )
                    seconds[w].append(out[w][1])
                print(
                    f"{name:14} {seed:>4} {c:>6} " + " ".join(f"{scores[w]:>13.4f}" for w in WAYS),
                    flush=True,
                )
    print(f"\n{'':26} " + " ".join(f"{w:>13}" for w in WAYS))
    print(f"{'mean rank (1 = best)':26} " + " ".join(f"{np.mean(ranks[w]):>13.2f}" for w in WAYS))
    print(f"{'mean fit seconds':26} " + " ".join(f"{np.mean(seconds[w]):>13.2f}" for w in WAYS))


if __name__ == "__main__":
    main()
