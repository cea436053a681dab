"""The audit's summary: tables in ``summary.md`` and ``summary.html``, plots as PNG
files (matplotlib, drawn without a display), all from the audit folder's JSONL, so
a replayed or resumed audit writes the same summary."""

from __future__ import annotations

import html
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from mlpilot.evals import audit_stats as st
from mlpilot.evals.code_ops import OTHER
from mlpilot.tools.featurize import OPS

OPERATORS = [*OPS, OTHER]


def read(out: Path) -> tuple[list[dict], list[dict], dict]:
    from mlpilot.evals.audit import read_jsonl
    from mlpilot.evals.audit_reference import merged

    meta = json.loads((out / "audit.json").read_text())
    reference = merged(read_jsonl(out / "reference.jsonl"))
    return read_jsonl(out / "suggestions.jsonl"), reference, meta


def read_openfe(out: Path) -> dict[str, Counter[str]]:
    """OpenFE's operator counts per dataset (datasets it failed on left out)."""
    from mlpilot.evals.audit import read_jsonl

    return {
        r["dataset"]: Counter(f["op"] for f in r["features"])
        for r in read_jsonl(out / "openfe.jsonl")
        if r["features"]
    }


def counts_by_dataset(records: list[dict], llm: str, condition: str) -> dict[str, Counter[str]]:
    """Operator counts per dataset for one LLM and condition, seeds pooled."""
    out: dict[str, Counter[str]] = {}
    for r in records:
        if r["llm"] == llm and r["condition"] == condition:
            c = out.setdefault(r["dataset"], Counter())
            c.update(f["op"] for f in r["features"])
    return out


def reference_counts(reference: list[dict]) -> dict[str, Counter[str]]:
    return {r["dataset"]: Counter(f["op"] for f in r["features"]) for r in reference}


def sources(records: list[dict], meta: dict) -> list[tuple[str, str]]:
    """(llm, condition) pairs, in the settings' order."""
    settings = meta["settings"]
    return [(llm, c) for llm in settings["llms"] for c in settings["conditions"]]


def analyse(out: Path) -> dict[str, Any]:
    """Every number the summary shows."""
    records, reference, meta = read(out)
    ref = reference_counts(reference)
    result: dict[str, Any] = {
        "settings": meta["settings"],
        "models": {k: v["model"] for k, v in meta.get("llms", {}).items()},
        "reference": {
            "shares": [s.__dict__ for s in st.shares(ref, OPERATORS)],
            "complexity": {k: v.__dict__ for k, v in st.complexity_shares(ref).items()},
            "n": sum(sum(c.values()) for c in ref.values()),
            "entropy": st.entropy(st.pooled(ref.values())),
        },
        "sources": [],
    }
    ofe = read_openfe(out)
    if ofe:
        result["openfe"] = {
            "shares": [s.__dict__ for s in st.shares(ofe, OPERATORS)],
            "complexity": {k: v.__dict__ for k, v in st.complexity_shares(ofe).items()},
            "n": sum(sum(c.values()) for c in ofe.values()),
            "datasets": len(ofe),
            "entropy": st.entropy(st.pooled(ofe.values())),
        }
    orders = menu_orders(records)
    for llm, condition in sources(records, meta):
        counts = counts_by_dataset(records, llm, condition)
        mine = [r for r in records if r["llm"] == llm and r["condition"] == condition]
        entry: dict[str, Any] = {
            "llm": llm,
            "condition": condition,
            "answers": len(mine),
            "unparsed": sum(1 for r in mine if r.get("error")),
            "n": sum(sum(c.values()) for c in counts.values()),
            "invalid": sum(1 for r in mine for f in r["features"] if not f.get("valid", True)),
            "seconds": float(sum(r.get("seconds") or 0 for r in mine)),
            "tokens": int(sum(r.get("tokens") or 0 for r in mine)),
            "shares": [s.__dict__ for s in st.shares(counts, OPERATORS)],
            "complexity": {k: v.__dict__ for k, v in st.complexity_shares(counts).items()},
            "entropy": st.entropy(st.pooled(counts.values())),
        }
        if condition in ("typed", "blind"):
            entry["menu"] = menu_effect(mine, orders)
        if ref:
            test = st.g_test(st.pooled(counts.values()), st.pooled(ref.values()), OPERATORS)
            entry["g_test"] = test.__dict__
            entry["anomalies"] = [a.__dict__ for a in st.anomalies(counts, ref, OPERATORS)]
        if ofe:
            test = st.g_test(st.pooled(counts.values()), st.pooled(ofe.values()), OPERATORS)
            entry["g_test_openfe"] = test.__dict__
        result["sources"].append(entry)
    result["accuracy"] = accuracy_table(reference)
    return result


def menu_orders(records: list[dict]) -> dict[tuple[str, int], list[str]]:
    """The operators' order in the menu per (dataset, seed): the typed answers' menu
    (a blind menu is the same order under other names, drawn from the same seed)."""
    out = {}
    for r in records:
        if r["condition"] == "typed" and r.get("menu"):
            out[(r["dataset"], r["seed"])] = r["menu"]
    return out


def menu_effect(mine: list[dict], orders: dict[tuple[str, int], list[str]]) -> dict[str, Any]:
    """Whether the menu's order drives the choice: the mean position of the suggested
    operators in their menu (½ without an effect, as the order is shuffled per seed),
    the share of suggestions among the first five against the share expected, and the
    answers that are the menu's first operators in order."""
    positions: dict[str, list[float]] = {}
    first: dict[str, list[float]] = {}
    expected: list[float] = []
    copies = answered = 0
    for r in mine:
        order = r.get("menu_ops") or orders.get((r["dataset"], r["seed"]))
        ops = [f["op"] for f in r["features"]]
        if not order or not ops:
            continue
        answered += 1
        copies += st.copies_menu(ops, order)
        positions.setdefault(r["dataset"], []).extend(st.menu_positions(ops, order))
        top = set(order[:5])
        first.setdefault(r["dataset"], []).extend(float(o in top) for o in ops if o in order)
        expected.append(min(5, len(order)) / len(order))
    return {
        "position": st.mean_over_datasets(positions).__dict__,
        "first_five": st.mean_over_datasets(first).__dict__,
        "first_five_expected": float(np.mean(expected)) if expected else float("nan"),
        "copies": copies,
        "answers": answered,
    }


def accuracy_table(reference: list[dict]) -> list[dict[str, Any]]:
    """Per dataset: the mean CV score of none, the reference and each LLM/condition
    (mean over seeds), with the mean gain over none."""
    rows = []
    for r in reference:
        scores = r.get("scores") or {}
        if "mean" not in scores:
            continue
        row: dict[str, Any] = {"dataset": r["dataset"], "metric": scores["metric"]}
        groups: dict[str, list[float]] = {}
        for label, value in scores["mean"].items():
            key = "|".join(label.split("|")[:2]) if "|" in label else label
            groups.setdefault(key, []).append(value)
        row["mean"] = {k: float(np.mean(v)) for k, v in groups.items()}
        rows.append(row)
    return rows


# -- writing --------------------------------------------------------------------------------


def write(out: Path) -> Path:
    """Writes ``summary.json``, ``summary.md``, ``summary.html`` and the plots."""
    result = analyse(out)
    (out / "summary.json").write_text(json.dumps(result, indent=2, default=float))
    plots = draw(result, out)
    (out / "summary.md").write_text(markdown(result, plots))
    (out / "summary.html").write_text(to_html(result, plots))
    return out / "summary.md"


def _pct(x: float) -> str:
    return "–" if x != x else f"{100 * x:.1f}%"


def markdown(result: dict[str, Any], plots: list[str]) -> str:
    s = result["settings"]
    lines = [
        "# Feature operator audit",
        "",
        f"LLMs: {', '.join(f'{k} ({v})' for k, v in result['models'].items()) or '–'}; "
        f"{len(s['datasets']) if isinstance(s['datasets'], list) else s['datasets']} datasets, "
        f"{s['seeds']} seeds, {s['n_features']} features per answer; "
        f"conditions: {', '.join(s['conditions'])}.",
        "",
        "## Answers",
        "",
        "| LLM | condition | answers | unparsed | suggestions | not computable | entropy (bits) "
        "| simple | complex | G-test vs reference | LLM seconds | tokens |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    ofe = result.get("openfe")
    for e in result["sources"]:
        gtxt = _g(e.get("g_test"))
        if ofe:
            gtxt += f"; vs OpenFE {_g(e.get('g_test_openfe'))}"
        lines.append(
            f"| {e['llm']} | {e['condition']} | {e['answers']} | {e['unparsed']} | {e['n']} | "
            f"{e['invalid']} | {e['entropy']:.2f} | {_pct(e['complexity']['simple']['share'])} | "
            f"{_pct(e['complexity']['complex']['share'])} | {gtxt} | {e['seconds']:.0f} | "
            f"{e['tokens']} |"
        )
    ref = result["reference"]
    lines.append(
        f"| reference | data-driven | – | – | {ref['n']} | – | {ref['entropy']:.2f} | "
        f"{_pct(ref['complexity']['simple']['share'])} | "
        f"{_pct(ref['complexity']['complex']['share'])} | – | – | – |"
    )
    if ofe:
        lines.append(
            f"| OpenFE | data-driven | {ofe['datasets']} | – | {ofe['n']} | – | "
            f"{ofe['entropy']:.2f} | {_pct(ofe['complexity']['simple']['share'])} | "
            f"{_pct(ofe['complexity']['complex']['share'])} | – | – | – |"
        )
    lines += [
        "",
        "Shares are means over datasets of each dataset's share; intervals are 95% "
        "bootstrap intervals over datasets. Simple: unary operators, add, subtract; "
        "complex: group-by aggregations and combined categories.",
        "",
        "## Operator shares",
        "",
    ]
    header = (
        "| operator | reference | "
        + ("OpenFE | " if ofe else "")
        + " | ".join(f"{e['llm']} {e['condition']} (z)" for e in result["sources"])
    )
    lines += [header + " |", "|---|---|" + "---|" * (len(result["sources"]) + bool(ofe))]
    ref_shares = {x["op"]: x for x in ref["shares"]}
    ofe_shares = {x["op"]: x for x in ofe["shares"]} if ofe else {}
    for op in OPERATORS:
        cells = [_interval(ref_shares[op])]
        used = ref_shares[op]["share"] > 0
        if ofe:
            cells.append(_interval(ofe_shares[op]))
            used = used or ofe_shares[op]["share"] > 0
        for e in result["sources"]:
            share = next(x for x in e["shares"] if x["op"] == op)
            z = next((a["z"] for a in e.get("anomalies", []) if a["op"] == op), float("nan"))
            used = used or share["share"] > 0
            cells.append(f"{_interval(share)} ({z:+.1f})" if z == z else _interval(share))
        if used:
            lines.append(f"| {op} | " + " | ".join(cells) + " |")
    lines += ["", "z: the LLM's share minus the reference's, in bootstrap standard errors.", ""]
    menus = [e for e in result["sources"] if e.get("menu")]
    if menus:
        lines += [
            "## The menu's order",
            "",
            "The operator list is shuffled per seed, so without an effect of its order the "
            "suggested operators' mean position is 0.5 (0: first, 1: last).",
            "",
            "| LLM | condition | mean position [95%] | share from the first five (expected) "
            "| answers that list the menu's first operators in order |",
            "|---|---|---|---|---|",
        ]
        for e in menus:
            m = e["menu"]
            pos, top = m["position"], m["first_five"]
            ptxt = (
                "–"
                if pos["share"] != pos["share"]
                else (f"{pos['share']:.2f} [{pos['low']:.2f}, {pos['high']:.2f}]")
            )
            lines.append(
                f"| {e['llm']} | {e['condition']} | {ptxt} | {_pct(top['share'])} "
                f"({_pct(m['first_five_expected'])}) | {m['copies']} of {m['answers']} |"
            )
        lines.append("")
    if result["accuracy"]:
        keys = list(result["accuracy"][0]["mean"])
        lines += [
            "## Accuracy",
            "",
            "Repeated 5-fold CV (3 repeats) of histogram gradient boosting; LLM columns "
            "are means over seeds of each answer's valid suggestions.",
            "",
            "| dataset | metric | " + " | ".join(keys) + " |",
            "|---|---|" + "---|" * len(keys),
        ]
        for row in result["accuracy"]:
            cells = [f"{row['mean'].get(k, float('nan')):.4f}" for k in keys]
            lines.append(f"| {row['dataset']} | {row['metric']} | " + " | ".join(cells) + " |")
        means = {
            k: np.nanmean(
                [r["mean"].get(k, np.nan) - r["mean"]["none"] for r in result["accuracy"]]
            )
            for k in keys
        }
        lines.append(
            "| mean change over none | | " + " | ".join(f"{means[k]:+.4f}" for k in keys) + " |"
        )
        lines.append("")
    for p in plots:
        lines += [f"![{p}]({p})", ""]
    return "\n".join(lines)


def _g(g: dict[str, Any] | None) -> str:
    return f"G = {g['g']:.1f}, dof {g['dof']}, p = {g['p']:.2g}" if g else "–"


def _interval(s: dict[str, float]) -> str:
    if s["share"] != s["share"]:
        return "–"
    return f"{100 * s['share']:.1f}% [{100 * s['low']:.1f}, {100 * s['high']:.1f}]"


def to_html(result: dict[str, Any], plots: list[str]) -> str:
    """The markdown summary as a page: its tables as tables, then the plots."""
    body: list[str] = []
    rows: list[str] = []
    for line in [*markdown(result, []).splitlines(), ""]:
        if line.startswith("|"):
            if not line.startswith("|---"):
                cells = [html.escape(c.strip()) for c in line.strip("|").split("|")]
                rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
            continue
        if rows:
            body.append(f"<table>{''.join(rows)}</table>")
            rows = []
        if line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line:
            body.append(f"<p>{html.escape(line)}</p>")
    images = "".join(f'<p><img src="{html.escape(p)}" alt="{html.escape(p)}"></p>' for p in plots)
    style = (
        "body{font-family:sans-serif;max-width:70em;margin:2em auto}"
        "table{border-collapse:collapse}td{border:1px solid #ccc;padding:2px 6px}"
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Feature operator audit"
        f"</title><style>{style}</style></head><body>{''.join(body)}{images}</body></html>"
    )


def draw(result: dict[str, Any], out: Path) -> list[str]:
    """The operator-share bars (with intervals) and the accuracy per dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    ref = {x["op"]: x for x in result["reference"]["shares"]}
    series = [("reference", ref)]
    if result.get("openfe"):
        series.append(("OpenFE", {x["op"]: x for x in result["openfe"]["shares"]}))
    series += [
        (f"{e['llm']} {e['condition']}", {x["op"]: x for x in e["shares"]})
        for e in result["sources"]
    ]
    used = [op for op in OPERATORS if any((s[op]["share"] or 0) > 0 for _, s in series)]
    if used:
        fig, ax = plt.subplots(figsize=(max(8, len(used) * 0.6), 4.5))
        width = 0.8 / len(series)
        x = np.arange(len(used))
        for i, (label, shares) in enumerate(series):
            mean = np.array([np.nan_to_num(shares[o]["share"]) for o in used])
            low = np.array([np.nan_to_num(shares[o]["low"]) for o in used])
            high = np.array([np.nan_to_num(shares[o]["high"]) for o in used])
            ax.bar(
                x + (i - (len(series) - 1) / 2) * width,
                mean,
                width,
                yerr=[mean - low, high - mean],
                capsize=2,
                label=label,
            )
        ax.set_xticks(x, used, rotation=60, ha="right")
        ax.set_ylabel("mean share of suggestions")
        ax.set_title("Operators suggested: LLM vs what the data rewards (95% intervals)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "operators.png", dpi=110)
        plt.close(fig)
        names.append("operators.png")
    rows = result["accuracy"]
    if rows:
        keys = list(rows[0]["mean"])
        fig, ax = plt.subplots(figsize=(8, max(3, 0.3 * len(rows) + 1)))
        y = np.arange(len(rows))
        for k in keys:
            ax.scatter(
                [r["mean"].get(k, np.nan) - r["mean"]["none"] for r in rows], y, label=k, s=18
            )
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_yticks(y, [r["dataset"] for r in rows], fontsize=7)
        ax.set_xlabel("CV score minus no new features (AUC or accuracy)")
        ax.set_title("What the suggested features are worth")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "accuracy.png", dpi=110)
        plt.close(fig)
        names.append("accuracy.png")
    return names
