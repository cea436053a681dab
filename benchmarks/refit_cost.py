"""What a refit job costs in the warm local sandbox, before and after the workers
import skops (the model files' format) with ``Sandbox.warm_up``.

The final step of a run refits its ensemble's members in the sandbox twice (on the
training rows to verify, then on all rows to deliver); each job writes a skops file.
This fits three families side by side on two workers, as the final step does, and
prints each refit job's seconds (measured by the sandbox) and the wall time of the
round.

    python benchmarks/refit_cost.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor

from sklearn.datasets import load_breast_cancer

from mlpilot.agents.trials import TrialRunner
from mlpilot.sandbox import Limits, LocalSandbox
from mlpilot.task import TaskSpec

FAMILIES = [("lightgbm", {}), ("linear", {}), ("random_forest", {})]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="refit rounds per phase")
    args = parser.parse_args()
    frame = load_breast_cancer(as_frame=True).frame
    task = TaskSpec.from_data(frame, target="target")
    rows: list[tuple[str, float, list[float]]] = []
    with LocalSandbox(warm=True, workers=2) as box, ThreadPoolExecutor(2) as pool:
        runner = TrialRunner(box, task, folds=5, limits=Limits(timeout_s=300, cpus=1))
        for run in pool.map(lambda f: runner.run(*f), FAMILIES):  # start both workers
            assert run.ok, run.reason

        def round_(phase: str, all_rows: bool = False) -> None:
            t0 = time.perf_counter()
            outs = list(pool.map(lambda f: runner.refit(*f, all_rows=all_rows), FAMILIES))
            assert all(o.ok for o in outs), [o.reason for o in outs]
            rows.append((phase, time.perf_counter() - t0, [o.seconds for o in outs]))

        for _ in range(args.rounds):
            round_("each job imports skops")
        t0 = time.perf_counter()
        box.warm_up(["skops.io"])
        round_("first round after warm_up")
        rows[-1] = (rows[-1][0], time.perf_counter() - t0, rows[-1][2])
        for _ in range(args.rounds):
            round_("workers hold skops")
        round_("workers hold skops, all rows", all_rows=True)
    names = [f for f, _ in FAMILIES]
    print(f"{'phase':32} {'round wall s':>12} " + " ".join(f"{n:>14}" for n in names))
    for phase, wall, seconds in rows:
        print(f"{phase:32} {wall:12.2f} " + " ".join(f"{s:14.2f}" for s in seconds))


if __name__ == "__main__":
    main()
