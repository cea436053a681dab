"""Which combiner would win if the ensemble step had all the time it wanted?

Runs mlpilot (no LLM) on the race's outer splits (``benchmarks/tabular.py``) at a
given budget and captures what its ensemble step compared: the members' out-of-fold
predictions and the labels. Then compares the four combiners (single best, greedy,
stacking, the regularized neural ensembler) on them again by the same nested
cross-validation, with no deadline, each method timed alone. Prints, per run, what
the run itself chose (and which methods its time let it try), and what each method
scores and costs without a deadline; then how often stacking or the neural
ensembler beats greedy out of fold, and by how much.

    python benchmarks/combiners.py [--budget 60] [--datasets ...] [--seeds 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from tabular import DATASETS, Split

from mlpilot.agents import stacking

CAPTURED: list[dict[str, Any]] = []
_choose = stacking.choose


def capturing_choose(members, y, metric, **kw):  # type: ignore[no-untyped-def]
    """The run's own comparison, recorded with its inputs."""
    choice = _choose(members, y, metric, **kw)
    CAPTURED.append({"members": list(members), "y": y, "metric": metric, "kw": kw, "run": choice})
    return choice


def unhurried(entry: dict[str, Any]) -> dict[str, tuple[float | None, float]]:
    """Each method's nested out-of-fold score and seconds, with no deadline."""
    kw = {k: v for k, v in entry["kw"].items() if k != "deadline"}
    out = {}
    for method in stacking.METHODS:
        t0 = time.monotonic()
        choice = _choose(entry["members"], entry["y"], entry["metric"], methods=[method], **kw)
        out[method] = (choice.nested[method], time.monotonic() - t0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=60.0)
    parser.add_argument("--datasets", nargs="*", default=list(DATASETS))
    parser.add_argument("--seeds", type=int, default=1)
    args = parser.parse_args()
    stacking.choose = capturing_choose  # the graph calls stacking.choose
    from mlpilot.api import Pilot

    rows = []
    print(
        f"{'dataset':13} {'seed':>4} {'members':>7} {'run chose':>10} {'run tried':>28} | "
        + " ".join(f"{m:>16}" for m in stacking.METHODS)
    )
    for name in args.datasets:
        for seed in range(args.seeds):
            split = Split(name, seed)
            CAPTURED.clear()
            with tempfile.TemporaryDirectory() as work:
                Pilot(llm=False, runs_dir=work).run(
                    split.request,
                    split.train,
                    target=split.target,
                    time_budget=args.budget,
                    seed=seed,
                )
            if not CAPTURED:
                print(f"{name:13} {seed:>4} no ensemble step (fewer than two finished trials)")
                continue
            entry = CAPTURED[-1]  # the comparison whose winner the run delivered
            run = entry["run"]
            tried = ",".join(m for m, s in run.nested.items() if s is not None)
            scores = unhurried(entry)
            rows.append((name, entry["metric"], scores))
            print(
                f"{name:13} {seed:>4} {len(entry['members']):>7} {run.method:>10} {tried:>28} | "
                + " ".join(
                    f"{(s if s is not None else float('nan')):>9.4f} {t:>5.1f}s"
                    for s, t in scores.values()
                ),
                flush=True,
            )
    if not rows:
        return
    print()
    for method in ("stacking", "neural"):
        gains = []
        for _, metric, scores in rows:
            mine, greedy = scores[method][0], scores["greedy"][0]
            if mine is None or greedy is None:
                continue
            gains.append(metric.sign() * (mine - greedy) / max(abs(greedy), 1e-12))
        wins = sum(g > 1e-9 for g in gains)
        print(
            f"{method} vs greedy out of fold: {wins} of {len(gains)} runs better, "
            f"mean {100 * np.mean(gains):+.3f}%, best {100 * max(gains):+.3f}%, "
            f"worst {100 * min(gains):+.3f}%; mean seconds "
            f"{np.mean([s[method][1] for _, _, s in rows]):.1f}"
        )


if __name__ == "__main__":
    main()
