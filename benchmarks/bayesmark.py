"""Bayesmark in LLAMBO's setting: optimisers side by side, LLAMBO's published rows beside.

    python benchmarks/bayesmark.py [--optimisers random,tpe,gp,llambo] [--seeds 5]
        [--datasets breast,digits] [--models SVM,AdaBoost] [--record DIR | --replay DIR]

The same as `mlpilot eval hpo --bench bayesmark ...` (every option is passed on); the
setting, optimisers and tables are described in `mlpilot/evals/hpo_bench.py` and in
docs/evals.md. Results accumulate in mlpilot-evals/hpo/bayesmark (resumable).
"""

from __future__ import annotations

import sys

import typer

from mlpilot.evals.cli import eval_app

if __name__ == "__main__":
    typer.main.get_command(eval_app)(["hpo", "--bench", "bayesmark", *sys.argv[1:]])
