"""OpenFE reference job, run inside a sandbox: the features OpenFE's data-driven search
selects (Zhang et al. 2023, the reference of Küken et al. 2024), each read back into
the audit's operator classes. Standalone: imports nothing from mlpilot; needs the
``openfe`` package (``pip install 'mlpilot[evals]'``) where the job runs.

Inputs in the job directory:
    config.json    {"problem_type", "target", "seed", "n", "categorical": [columns]}
    train.parquet  features and target

OpenFE enumerates its 23 operators on the columns, ranks the candidates with
LightGBM (successive halving on data blocks, then gain importance) and returns them
best first. Only the operators and columns are taken from it: OpenFE computes group
statistics on whatever rows it is given, so the audit recomputes any feature it
measures with its own fitted transformer.

Outputs:
    openfe.json  {"features": [{"op", "a", "b", "openfe"} best first], "kept": how many
                  OpenFE selected, "blocks": its data blocks, "seconds": s}
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

# OpenFE's operator names → the audit's classes (``other`` where there is none)
OPERATORS = {
    "freq": "frequency",
    "abs": "abs",
    "log": "log",
    "sqrt": "sqrt",
    "square": "square",
    "sigmoid": "other",
    "round": "bin",
    "residual": "other",
    "min": "min",
    "max": "max",
    "+": "add",
    "-": "subtract",
    "*": "multiply",
    "/": "divide",
    "GroupByThenMin": "group_min",
    "GroupByThenMax": "group_max",
    "GroupByThenMean": "group_mean",
    "GroupByThenMedian": "group_median",
    "GroupByThenStd": "group_std",
    "GroupByThenRank": "group_rank",
    "GroupByThenNUnique": "other",
    "Combine": "combine",
    "CombineThenFreq": "combine",
}


def read_node(node: Any) -> dict[str, Any]:
    """One OpenFE feature (an operator over column leaves) as an audit suggestion.
    OpenFE's group-by nodes hold (value, key), as the audit's ``group_*`` (a, b) do."""
    children = [c.name for c in getattr(node, "children", [])]
    nested = any(getattr(c, "children", None) for c in getattr(node, "children", []))
    op = "other" if nested else OPERATORS.get(node.name, "other")
    return {
        "op": op,
        "a": children[0] if children else None,
        "b": children[1] if len(children) > 1 else None,
        "openfe": node.name,
    }


def main() -> None:
    t0 = time.perf_counter()
    config = json.loads(Path("config.json").read_text())
    train = pd.read_parquet("train.parquet")
    target = config["target"]
    X, y = train.drop(columns=[target]), train[target]
    task = "regression" if config["problem_type"] == "regression" else "classification"
    if task == "classification":
        y = pd.Series(pd.factorize(y, sort=True)[0], index=y.index)
    categorical = [c for c in config.get("categorical", []) if c in X.columns]
    for c in categorical:  # as codes: OpenFE applies arithmetic to string columns
        codes = pd.factorize(X[c], sort=True)[0].astype(float)
        codes[codes < 0] = float("nan")
        X[c] = codes
    X = X.astype(float)
    warnings.filterwarnings("ignore")
    from openfe import OpenFE  # type: ignore[import-not-found]

    # OpenFE's successive halving starts on 1/8 of the rows by default; on a few
    # hundred rows that is too few for LightGBM to split, every candidate scores the
    # same, and its duplicate filter leaves one. Blocks of at least 400 rows.
    blocks = max(1, min(8, len(X) // 400))
    search = OpenFE()  # it writes a temporary data file in the job's directory
    found = search.fit(
        data=X,
        label=y,
        task=task,
        categorical_features=categorical,
        n_jobs=int(config.get("n_jobs", 1)),
        n_data_blocks=blocks,
        seed=int(config.get("seed", 0)),
        verbose=False,
    )
    out = {
        "features": [read_node(node) for node in found[: int(config["n"])]],
        "kept": len(found),
        "blocks": blocks,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    Path("openfe.json").write_text(json.dumps(out))
    print(f"OpenFE: {len(found)} features kept in {out['seconds']} s")


if __name__ == "__main__":
    main()
