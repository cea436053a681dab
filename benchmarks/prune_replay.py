"""Would pruning a trial after its first fold pay? A replay over finished runs.

For each run directory given, the trials of each family are replayed in the order
they started: once a family has ``--after`` finished trials, a trial whose score on
fold 0 (from its saved out-of-fold predictions) is worse than the median fold-0
score of the family's earlier trials counts as pruned after that fold, saving
``(folds - 1) / folds`` of its seconds. Prints per run the trials, how many would be
pruned, whether the run's best or top-3 trials (by CV) would have been, and the
share of trial time saved. A replay, not a run: the time saved would have bought more
trials, which it cannot show.

    python benchmarks/prune_replay.py mlpilot-runs/2026* [--after 3]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import optuna
import pandas as pd

from mlpilot.tools.metrics import get_metric, predictions_for


def replay(run: Path, after: int) -> dict[str, float] | None:
    meta = json.loads((run / "run.json").read_text())
    metric = get_metric(meta["metric"])
    data = run / "sandbox-data"
    if not (data / "folds.npy").exists() or not (run / "optuna.db").exists():
        return None
    y = pd.read_parquet(data / "train.parquet")[meta["target"]].to_numpy()
    folds = np.load(data / "folds.npy")
    n_folds = len(np.unique(folds))
    storage = f"sqlite:///{run / 'optuna.db'}"
    rows = []
    for name in optuna.get_all_study_names(storage):
        family = name.rsplit("-", 1)[-1]
        study = optuna.load_study(study_name=name, storage=storage)
        for t in study.trials:
            saved = run / "predictions" / f"{family}-{t.number}.npz"
            if t.state != optuna.trial.TrialState.COMPLETE or not saved.exists():
                continue
            z = np.load(saved, allow_pickle=False)
            classes = list(z["classes"]) if "classes" in z.files else None
            first = folds == 0
            f0 = float(metric(y[first], predictions_for(metric, z["oof"][first], classes)))
            seconds = (t.datetime_complete - t.datetime_start).total_seconds()
            key = f"{family}-{t.number}"
            rows.append(
                (
                    t.datetime_start,
                    family,
                    key,
                    metric.sign() * f0,
                    metric.sign() * t.value,
                    seconds,
                )
            )
    if not rows:
        return None
    rows.sort()
    earlier: dict[str, list[float]] = {}
    pruned, saved_s = set(), 0.0
    for _, family, key, f0, _, seconds in rows:
        scores = earlier.setdefault(family, [])
        if len(scores) >= after and f0 < float(np.median(scores)):
            pruned.add(key)
            saved_s += seconds * (n_folds - 1) / n_folds
        scores.append(f0)
    ranked = [r[2] for r in sorted(rows, key=lambda r: -r[4])]
    return {
        "trials": len(rows),
        "pruned": len(pruned),
        "best": float(ranked[0] in pruned),
        "top3": float(sum(k in pruned for k in ranked[:3])),
        "saved_s": saved_s,
        "spent_s": sum(r[5] for r in rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--after", type=int, default=3, help="finished trials before pruning")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    total: dict[str, float] = {}
    print(
        f"{'run':40} {'metric':>8} {'trials':>6} {'pruned':>6} {'best':>5} {'top3':>5} {'saved':>6}"
    )
    for run in args.runs:
        out = replay(run, args.after)
        if out is None:
            continue
        metric = json.loads((run / "run.json").read_text())["metric"]
        for k, v in out.items():
            total[k] = total.get(k, 0.0) + v
        share = out["saved_s"] / max(out["spent_s"], 1e-9)
        print(
            f"{run.name:40} {metric:>8} {out['trials']:>6.0f} {out['pruned']:>6.0f} "
            f"{'yes' if out['best'] else 'no':>5} {out['top3']:>5.0f} {share:>6.0%}"
        )
    if total:
        share = total["saved_s"] / max(total["spent_s"], 1e-9)
        print(
            f"{'all':40} {'':>8} {total['trials']:>6.0f} {total['pruned']:>6.0f} "
            f"{total['best']:>5.0f} {total['top3']:>5.0f} {share:>6.0%}"
        )


if __name__ == "__main__":
    main()
