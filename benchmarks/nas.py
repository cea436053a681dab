"""Structural pruning of MiniLM-L6 text classifiers: the NAS agent's searches
against layer dropping and head-importance pruning, on packaged text data.

Per dataset: one outer split (80% train, 20% test, stratified, seed 0). The agent
fine-tunes MiniLM-L6 on the training rows (its own validation split inside them),
trains the super-network, and each search method evaluates sub-networks of that
same super-network; the baselines prune the fine-tuned model. Printed per dataset:

* each method's hypervolume of (validation error, encoder parameters / full) and of
  (validation error, CPU latency / full), with the reference point (the majority-
  class error, 1.0) — the area the method's points dominate, larger is better;
* per method, the smallest sub-network within 1 point of the full model's
  validation accuracy;
* the full model and the shipped sub-network (NSGA-II's choice, sliced and saved)
  measured by the host on the test rows: accuracy, encoder and embedding parameters,
  file size, CPU latency per example;
* wall time per phase.

Results and Pareto plots go to ``--out`` (a rerun reuses every finished phase).

    python benchmarks/nas.py [--datasets rotten_tomatoes bbc_news] [--evaluations 60]
        [--methods nsga2 random local] [--train N] [--out DIR] [--device auto]

Needs ``pip install -e ".[nas,evals]"`` and torch.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from mlpilot.agents.nas import NasAgent, NasSettings, NasStore, measure
from mlpilot.agents.plots import pareto_plot
from mlpilot.sandbox import LocalSandbox
from mlpilot.tools import pareto

DATASETS = {
    # dataset: (loader, max tokens per text)
    "rotten_tomatoes": ("rotten", 64),
    "bbc_news": ("bbc", 128),
}


def load(name: str) -> tuple[list[str], list[str]]:
    from mlpilot.evals.tasks import bbc_news, rotten_tomatoes

    if name in DATASETS:
        df = rotten_tomatoes() if name == "rotten_tomatoes" else bbc_news()
        return df["text"].tolist(), df["category"].tolist()
    raise SystemExit(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")


def within(cands, full, points: float = 0.01):
    ok = [c for c in cands if c.error <= full.error + points + 1e-12]
    return min(ok, key=lambda c: (c.params, c.error)) if ok else None


def run_dataset(name: str, args: argparse.Namespace, box: LocalSandbox) -> dict:
    texts, labels = load(name)
    if args.train:
        keep = min(len(texts), int(args.train / 0.8))
        texts, _, labels, _ = (
            train_test_split(texts, labels, train_size=keep, stratify=labels, random_state=0)
            if keep < len(texts)
            else (texts, None, labels, None)
        )
    X_tr, X_te, y_tr, y_te = train_test_split(
        texts, labels, test_size=0.2, stratify=labels, random_state=0
    )
    settings = NasSettings(
        max_length=DATASETS[name][1],
        evaluations=args.evaluations,
        finetune_epochs=args.epochs,
        supernet_epochs=args.epochs,
        device=args.device,
        space=args.space,
    )
    out = Path(args.out) / name
    t0 = time.time()

    def progress(phase: str, details: dict) -> None:
        print(f"  {time.time() - t0:7.1f}s {phase}: {details}", flush=True)

    agent = NasAgent(box, NasStore(out), X_tr, y_tr, settings, progress=progress)
    result = agent.run()  # NSGA-II (the default) searches, chooses and ships
    methods = {"nsga2": result.candidates}
    for method in args.methods:
        if method != "nsga2":
            methods[method] = agent.timed(f"search {method}", lambda m=method: agent.search(m))
    full = result.full
    ref = (1.0 - max(np.bincount(agent.y_val)) / len(agent.y_val), 1.0)
    fronts = {**methods, **result.baselines}
    rows = []
    for method, cands in fronts.items():
        best = within(cands, full)
        rows.append(
            {
                "method": method,
                "evaluations": len(cands),
                "hv_params": pareto.hypervolume_2d([c.objectives("params") for c in cands], ref),
                "hv_latency": pareto.hypervolume_2d([c.objectives("latency") for c in cands], ref),
                "within_1pt": None
                if best is None
                else {
                    "val_accuracy": 1 - best.error,
                    "params_ratio": best.params_ratio,
                    "latency_ms": best.latency_ms,
                    "subnet": best.subnet,
                },
            }
        )
    full_dir = out / "finetune"
    host_full = measure(full_dir, X_te, y_te, settings.max_length)
    host_pruned = measure(result.model_dir, X_te, y_te, settings.max_length)
    for kind, fn in (("params", "pareto-params"), ("latency", "pareto-latency")):
        pareto_plot(
            out / f"{fn}.png",
            {m: [c.objectives(kind)[::-1] for c in cands] for m, cands in fronts.items()},
            xlabel="encoder parameters / full" if kind == "params" else "CPU latency / full",
            chosen=result.chosen.objectives(kind)[::-1],
            title=f"{name}: validation error vs {'size' if kind == 'params' else 'latency'}",
        )
    summary = {
        "dataset": name,
        "train_rows": len(X_tr),
        "test_rows": len(X_te),
        "device": result.device,
        "full_val_accuracy": 1 - full.error,
        "methods": rows,
        "reference_point": ref,
        "host_full": host_full,
        "host_pruned": host_pruned,
        "chosen": result.chosen.subnet,
        "why": result.why,
        "seconds": agent.seconds,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    return summary


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def table(summary: dict) -> str:
    lines = [
        f"### {summary['dataset']} ({summary['train_rows']} training rows, "
        f"{summary['test_rows']} test rows, {summary['device']})",
        "",
        _row(
            [
                "method",
                "evaluated",
                "HV error×params",
                "HV error×latency",
                "within 1 point: val acc, params, latency",
            ]
        ),
        _row(["---"] * 5),
    ]
    for r in summary["methods"]:
        w = r["within_1pt"]
        best = (
            "–"
            if w is None
            else (f"{w['val_accuracy']:.4f}, {w['params_ratio']:.1%}, {w['latency_ms']:.1f} ms")
        )
        lines.append(
            _row(
                [
                    r["method"],
                    str(r["evaluations"]),
                    f"{r['hv_params']:.4f}",
                    f"{r['hv_latency']:.4f}",
                    best,
                ]
            )
        )
    lines += [
        "",
        _row(
            [
                "model (host, test rows)",
                "accuracy",
                "encoder params",
                "embedding params",
                "file MB",
                "CPU ms/example",
            ]
        ),
        _row(["---"] * 6),
    ]
    for name, m in (
        ("full fine-tuned", summary["host_full"]),
        ("pruned (shipped)", summary["host_pruned"]),
    ):
        lines.append(
            _row(
                [
                    name,
                    f"{m['accuracy']:.4f}",
                    f"{m['params']['encoder']:,}",
                    f"{m['params']['embeddings']:,}",
                    f"{m['file_mb']:.1f}",
                    f"{m['latency_ms']:.1f}",
                ]
            )
        )
    lines += [
        "",
        f"Chosen: {summary['why']}. Seconds: "
        + ", ".join(f"{k} {v:.0f}" for k, v in summary["seconds"].items()),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--methods", nargs="+", default=["nsga2", "random", "local"])
    parser.add_argument("--evaluations", type=int, default=60)
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--space", default="small")
    parser.add_argument("--train", type=int, default=0, help="at most this many training rows")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="benchmarks/.nas")
    args = parser.parse_args()
    with LocalSandbox() as box:
        for name in args.datasets:
            print(f"{name}:", flush=True)
            print(table(run_dataset(name, args, box)), flush=True)


if __name__ == "__main__":
    pd.options.mode.copy_on_write = True
    main()
