"""Would an XGBoost or CatBoost family earn its place? One default model of each,
beside mlpilot's LightGBM default, on the race's outer splits.

On each dataset and seed of ``benchmarks/tabular.py`` (the same training and test
rows), one model per library is fitted on the training rows and scored on the test
rows:

* **mlpilot LightGBM**: the LightGBM family's default configuration, built by the
  sandbox job's own code (early stopping on 15% of the rows, then a refit on all)
* **XGBoost**: ``hist`` trees with native categoricals, learning rate 0.05, depth
  6, row and column subsampling 0.8, up to 5,000 rounds, early stopping after 50
  rounds without gain on a seeded 10% of the rows (trained on the other 90%)
* **CatBoost**: its own defaults (learning rate chosen by CatBoost), categorical
  columns as CatBoost's categorical features, up to 2,000 rounds, the same 10%
  for early stopping

All on both cores. Prints each cell's test scores and fit seconds, then per dataset
the means over seeds, the mean rank of the three (1 = best) and the mean fit
seconds: a family's trial fits five folds, so its fit time decides how many trials a
60 s run gets.

    pip install xgboost-cpu==3.2.0 catboost==1.2.10   # not mlpilot dependencies
    python benchmarks/zoo_defaults.py [--datasets ...] [--seeds 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

sys.path.insert(0, str(Path(__file__).parent))

from tabular import DATASETS, Split

from mlpilot.tools.cv_job import build_estimator, build_pipeline
from mlpilot.tools.search_spaces import first_configs

SYSTEMS = ["mlpilot LightGBM", "XGBoost", "CatBoost"]


def categorical_columns(X: pd.DataFrame) -> list[str]:
    return [c for c in X.columns if not pd.api.types.is_numeric_dtype(X[c])]


def as_categories(train: pd.DataFrame, test: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Text columns as pandas categoricals, the test rows on the training categories."""
    train, test = train.copy(), test.copy()
    for c in categorical_columns(train):
        train[c] = train[c].astype("category")
        known = train[c].cat.categories
        test[c] = pd.Categorical(test[c].where(test[c].isin(known)), categories=known)
    return train, test


def as_strings(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """CatBoost takes categorical columns as strings, a missing value as its own string."""
    frame = frame.copy()
    for c in columns:
        frame[c] = frame[c].astype(object).where(frame[c].notna(), "NA").astype(str)
    return frame


def lightgbm_cell(split: Split, X: pd.DataFrame, y: pd.Series) -> np.ndarray:
    config = dict(first_configs("lightgbm")[0])
    estimator = build_estimator("lightgbm", config, split.classification, split.seed)
    pipe = build_pipeline(X, [], estimator).fit(X, y)
    if not split.classification:
        return np.asarray(pipe.predict(split.test_X), dtype=float)
    proba = pipe.predict_proba(split.test_X)
    by_name = {str(c): proba[:, i] for i, c in enumerate(pipe.classes_)}
    return np.column_stack([by_name[str(c)] for c in split.classes or []])


def xgboost_cell(split: Split, X: pd.DataFrame, y: np.ndarray, fit: np.ndarray, val: np.ndarray):
    import xgboost

    train, test = as_categories(X, split.test_X)
    cls = xgboost.XGBClassifier if split.classification else xgboost.XGBRegressor
    model = cls(
        n_estimators=5000,
        learning_rate=0.05,
        max_depth=6,
        subsample=0.8,
        colsample_bytree=0.8,
        tree_method="hist",
        enable_categorical=True,
        max_cat_to_onehot=4,
        early_stopping_rounds=50,
        n_jobs=2,
        random_state=split.seed,
    )
    model.fit(train.iloc[fit], y[fit], eval_set=[(train.iloc[val], y[val])], verbose=False)
    return model.predict_proba(test) if split.classification else model.predict(test)


def catboost_cell(split: Split, X: pd.DataFrame, y: np.ndarray, fit: np.ndarray, val: np.ndarray):
    import catboost

    columns = categorical_columns(X)
    train, test = as_strings(X, columns), as_strings(split.test_X, columns)
    cls = catboost.CatBoostClassifier if split.classification else catboost.CatBoostRegressor
    model = cls(
        iterations=2000,
        thread_count=2,
        random_seed=split.seed,
        od_type="Iter",
        od_wait=50,
        cat_features=columns,
        verbose=False,
        allow_writing_files=False,
    )
    model.fit(train.iloc[fit], y[fit], eval_set=(train.iloc[val], y[val]))
    return model.predict_proba(test) if split.classification else model.predict(test)


def cell(split: Split) -> dict[str, tuple[float, float]]:
    X = split.train.drop(columns=[split.target])
    labels = split.train[split.target]
    if split.classification:
        codes = {str(c): i for i, c in enumerate(split.classes or [])}
        y = labels.astype(str).map(codes).to_numpy()
    else:
        y = labels.to_numpy(float)
    fit, val = train_test_split(
        np.arange(len(y)),
        test_size=0.1,
        random_state=split.seed,
        stratify=y if split.classification else None,
    )
    out: dict[str, tuple[float, float]] = {}
    runs: dict[str, Any] = {
        "mlpilot LightGBM": lambda: lightgbm_cell(split, X, labels),
        "XGBoost": lambda: xgboost_cell(split, X, y, fit, val),
        "CatBoost": lambda: catboost_cell(split, X, y, fit, val),
    }
    for name, run in runs.items():
        t0 = time.perf_counter()
        raw = run()
        out[name] = (split.score(np.asarray(raw, dtype=float)), time.perf_counter() - t0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="*", default=list(DATASETS))
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    try:
        import catboost  # noqa: F401
        import xgboost  # noqa: F401
    except ImportError as e:
        sys.exit(f"{e}: pip install xgboost-cpu==3.2.0 catboost==1.2.10 first")
    cell(Split(args.datasets[0], 0))  # imports and caches before any timing
    ranks: dict[str, list[float]] = {s: [] for s in SYSTEMS}
    seconds: dict[str, list[float]] = {s: [] for s in SYSTEMS}
    means: list[str] = []
    print(f"{'dataset':14} {'seed':>4} " + " ".join(f"{s:>22}" for s in SYSTEMS))
    for name in args.datasets:
        per_seed: dict[str, list[float]] = {s: [] for s in SYSTEMS}
        metric = ""
        for seed in range(args.seeds):
            split = Split(name, seed)
            metric = split.metric.name
            out = cell(split)
            sign = split.metric.sign()
            for s in SYSTEMS:
                score = out[s][0]
                per_seed[s].append(score)
                seconds[s].append(out[s][1])
                ranks[s].append(1 + sum(sign * (o[0] - score) > 1e-12 for o in out.values()))
            print(
                f"{name:14} {seed:>4} "
                + " ".join(f"{out[s][0]:>13.4f} ({out[s][1]:5.1f} s)" for s in SYSTEMS),
                flush=True,
            )
        best = max if split.metric.sign() > 0 else min
        top = best(np.mean(per_seed[s]) for s in SYSTEMS)
        cells = [
            f"**{np.mean(per_seed[s]):.4f}**"
            if np.mean(per_seed[s]) == top
            else f"{np.mean(per_seed[s]):.4f}"
            for s in SYSTEMS
        ]
        means.append(f"| {name} ({metric}) | " + " | ".join(cells) + " |")
    print("\n| dataset (metric), mean over seeds | " + " | ".join(SYSTEMS) + " |")
    print("|---" * (len(SYSTEMS) + 1) + "|")
    print("\n".join(means))
    rank_cells = " | ".join(f"{np.mean(ranks[s]):.2f}" for s in SYSTEMS)
    print(f"| mean rank (1 = best) | {rank_cells} |")
    print("| mean fit s | " + " | ".join(f"{np.mean(seconds[s]):.1f}" for s in SYSTEMS) + " |")
    print("| longest fit s | " + " | ".join(f"{np.max(seconds[s]):.1f}" for s in SYSTEMS) + " |")


if __name__ == "__main__":
    main()
