"""Structural pruning of MiniLM-L6 text classifiers: the NAS agent's searches
against layer dropping and head-importance pruning, on packaged text data.

Per dataset: one outer split (80% train, 20% test, stratified, seed 0). The agent
fine-tunes MiniLM-L6 on the training rows (its own validation split inside them),
trains the super-network, and each search method evaluates sub-networks of that
same super-network; the baselines prune the fine-tuned model. Printed per dataset:

* each method's hypervolume of (validation error, encoder parameters / full) and of
  (validation error, CPU latency / full), with the reference point (the majority-
  class error, 1.0) — the area the method's points dominate, larger is better;
* per method, the smallest sub-network within 1 point of the fine-tuned model's
  validation accuracy (the agent's rule);
* the full model and the shipped sub-network (NSGA-II's choice, sliced, polished
  and saved) measured by the host on the test rows: accuracy, encoder and embedding parameters,
  file size, CPU latency per example;
* wall time per phase.

Results and Pareto plots go to ``--out`` (a rerun reuses every finished phase).

    python benchmarks/nas.py [--datasets rotten_tomatoes bbc_news] [--evaluations 60]
        [--methods nsga2 random local] [--epochs 3] [--supernet-epochs E]
        [--polish 2] [--polish-tries 3] [--val-fraction 0.2] [--train N]
        [--out DIR] [--device auto]

Needs ``pip install -e ".[nas,evals]"`` and torch.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
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


def within(cands, reference, points: float = 0.01):
    ok = [c for c in cands if c.error <= reference.error + points + 1e-12]
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
        supernet_epochs=args.supernet_epochs or args.epochs,
        polish_epochs=args.polish,
        polish_tries=args.polish_tries,
        val_fraction=args.val_fraction,
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
    reference = agent.reference(full)  # the fine-tuned model, as the agent's choice
    ref = (1.0 - max(np.bincount(agent.y_val)) / len(agent.y_val), 1.0)
    fronts = {**methods, **result.baselines}
    rows = []
    for method, cands in fronts.items():
        best = within(cands, reference)
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
    host_supernet = measure(out / "supernet", X_te, y_te, settings.max_length)
    # every sub-network the polishing tried, before and after, on the test rows too
    polished = []
    for c in result.candidates:
        kept = agent._polish_name(c)
        if not (out / kept).is_dir():
            continue
        state = json.loads((out / f"{kept}.json").read_text())
        before = measure(out / f"{kept}-sliced", X_te, y_te, settings.max_length, 4)
        after = measure(out / kept, X_te, y_te, settings.max_length, 4)
        polished.append(
            {
                "params_ratio": c.params_ratio,
                "subnet": c.subnet,
                "val_before": 1 - c.error,
                "val_after": state["val_accuracy"],
                "test_before": before["accuracy"],
                "test_after": after["accuracy"],
            }
        )
    polished.sort(key=lambda r: r["params_ratio"])
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
        "finetuned_val_accuracy": 1 - reference.error,
        "methods": rows,
        "reference_point": ref,
        "host_full": host_full,
        "host_pruned": host_pruned,
        "host_supernet": host_supernet,
        "polished": polished,
        "chosen": result.chosen.subnet,
        "chosen_params_ratio": result.chosen.params_ratio,
        "chosen_val_accuracy": 1 - result.chosen.error,
        "chosen_unpolished_val_accuracy": None
        if result.chosen.unpolished_error is None
        else 1 - result.chosen.unpolished_error,
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
        ("super-network, full", summary["host_supernet"]),
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
    if summary.get("polished"):
        lines += [
            "",
            _row(["polished sub-network", "val before", "val after", "test before", "test after"]),
            _row(["---"] * 5),
        ]
        for r in summary["polished"]:
            lines.append(
                _row(
                    [
                        f"{r['params_ratio']:.1%}",
                        f"{r['val_before']:.4f}",
                        f"{r['val_after']:.4f}",
                        f"{r['test_before']:.4f}",
                        f"{r['test_after']:.4f}",
                    ]
                )
            )
    before = summary.get("chosen_unpolished_val_accuracy")
    lines += [
        "",
        f"Shipped: {summary['chosen_params_ratio']:.1%} of the encoder, validation accuracy "
        f"{summary['chosen_val_accuracy']:.4f}"
        + ("" if before is None else f" (before polishing {before:.4f})")
        + f" against the fine-tuned model's {summary['finetuned_val_accuracy']:.4f} (the "
        f"full super-network's: {summary['full_val_accuracy']:.4f}).",
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
    parser.add_argument("--supernet-epochs", type=float, default=0.0, help="default: --epochs")
    parser.add_argument(
        "--polish", type=float, default=2.0, help="epochs of polishing a sliced sub-network"
    )
    parser.add_argument("--polish-tries", type=int, default=3)
    parser.add_argument("--val-fraction", type=float, default=0.2)
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
    main()
