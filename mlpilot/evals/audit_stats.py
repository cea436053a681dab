"""The audit's statistics: operator shares with intervals, a test of LLM against
reference, simple against complex, and how far each operator is off.

Every statistic treats the dataset as the unit: an LLM that proposes ``add`` ten
times on one dataset has not shown a preference across data. A share is computed
per dataset (the fraction of that dataset's suggestions with the operator) and then
averaged over datasets; its interval comes from resampling the datasets (bootstrap,
percentile, fixed seed). The G-test compares the pooled counts of the two sources
(a 2 × operators table), which is the test the paper's figures invite; the per-
operator anomaly score is the difference of mean shares in units of its bootstrap
standard error (both sources resampled over the same datasets).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from scipy import stats

from mlpilot.tools.featurize import OPS

# The paper's split: simple operators are the unary ones and addition/subtraction;
# complex ones combine categories or aggregate over groups.
SIMPLE = frozenset({n for n, op in OPS.items() if op.family == "unary"} | {"add", "subtract"})
COMPLEX = frozenset({n for n, op in OPS.items() if op.family == "groupby"} | {"combine"})
BOOTSTRAP = 2000


def complexity(op: str) -> str:
    """``simple``, ``complex`` or ``other`` (everything between, and ``other``)."""
    return "simple" if op in SIMPLE else "complex" if op in COMPLEX else "other"


@dataclass(frozen=True)
class Share:
    """An operator's mean share over datasets with its 95% bootstrap interval."""

    op: str
    share: float
    low: float
    high: float
    se: float


def share_matrix(counts: Mapping[str, Counter[str]], ops: list[str]) -> np.ndarray:
    """Rows: datasets with at least one suggestion; columns: ``ops``; each row sums to
    one (the dataset's share of each operator)."""
    rows = []
    for counter in counts.values():
        total = sum(counter[o] for o in ops)
        if total:
            rows.append([counter[o] / total for o in ops])
    return np.array(rows, dtype=float).reshape(-1, len(ops))


def shares(
    counts: Mapping[str, Counter[str]], ops: list[str], *, seed: int = 0, n: int = BOOTSTRAP
) -> list[Share]:
    """Each operator's mean share over datasets, with a percentile interval from
    resampling the datasets ``n`` times."""
    m = share_matrix(counts, ops)
    if not len(m):
        return [Share(o, math.nan, math.nan, math.nan, math.nan) for o in ops]
    rng = np.random.default_rng(seed)
    boot = m[rng.integers(0, len(m), size=(n, len(m)))].mean(axis=1)  # (n, ops)
    low, high = np.percentile(boot, [2.5, 97.5], axis=0)
    mean, se = m.mean(axis=0), boot.std(axis=0, ddof=1)
    return [
        Share(o, float(mean[i]), float(low[i]), float(high[i]), float(se[i]))
        for i, o in enumerate(ops)
    ]


@dataclass(frozen=True)
class GTest:
    """The G-test of independence of source (LLM, reference) and operator."""

    g: float
    dof: int
    p: float
    n_llm: int
    n_reference: int


def g_test(llm: Counter[str], reference: Counter[str], ops: list[str]) -> GTest:
    """G-test on the pooled counts; operators neither source used are left out."""
    used = [o for o in ops if llm[o] + reference[o] > 0]
    table = np.array([[llm[o] for o in used], [reference[o] for o in used]], dtype=float)
    n_llm, n_ref = int(table[0].sum()), int(table[1].sum())
    if len(used) < 2 or n_llm == 0 or n_ref == 0:
        return GTest(0.0, 0, 1.0, n_llm, n_ref)
    g, p, dof, _ = stats.chi2_contingency(table, lambda_="log-likelihood", correction=False)
    return GTest(float(g), int(dof), float(p), n_llm, n_ref)


@dataclass(frozen=True)
class Anomaly:
    """How far the LLM's share of an operator is from the reference's, in standard
    errors (positive: the LLM over-proposes it)."""

    op: str
    llm: float
    reference: float
    z: float


def anomalies(
    llm: Mapping[str, Counter[str]],
    reference: Mapping[str, Counter[str]],
    ops: list[str],
    *,
    seed: int = 0,
    n: int = BOOTSTRAP,
) -> list[Anomaly]:
    """Per operator: (LLM share − reference share) / bootstrap SE of that difference,
    resampling the datasets both sources have suggestions on."""
    names = [
        d for d in llm if d in reference and sum(llm[d].values()) and sum(reference[d].values())
    ]
    a = share_matrix({d: llm[d] for d in names}, ops)
    b = share_matrix({d: reference[d] for d in names}, ops)
    if not names:
        return [Anomaly(o, math.nan, math.nan, math.nan) for o in ops]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(names), size=(n, len(names)))
    diff = a[idx].mean(axis=1) - b[idx].mean(axis=1)
    se = diff.std(axis=0, ddof=1)
    out = []
    for i, o in enumerate(ops):
        d = float(a[:, i].mean() - b[:, i].mean())
        z = d / se[i] if se[i] > 0 else (0.0 if d == 0 else math.copysign(math.inf, d))
        out.append(Anomaly(o, float(a[:, i].mean()), float(b[:, i].mean()), float(z)))
    return out


def complexity_shares(counts: Mapping[str, Counter[str]], **kw: int) -> dict[str, Share]:
    """The mean share of simple, complex and other operators, with intervals."""
    grouped: dict[str, Counter[str]] = {}
    for d, counter in counts.items():  # several operators map to one class: sum them
        merged: Counter[str] = Counter()
        for o, c in counter.items():
            merged[complexity(o)] += c
        grouped[d] = merged
    return {s.op: s for s in shares(grouped, ["simple", "complex", "other"], **kw)}


def entropy(counter: Counter[str]) -> float:
    """Shannon entropy (bits) of an operator mix: 0 for one operator only."""
    total = sum(counter.values())
    if not total:
        return 0.0
    p = np.array([c / total for c in counter.values() if c], dtype=float)
    return float(-(p * np.log2(p)).sum())


def pooled(counts: Iterable[Counter[str]]) -> Counter[str]:
    out: Counter[str] = Counter()
    for c in counts:
        out.update(c)
    return out


# -- the menu's order ---------------------------------------------------------------------


def menu_positions(ops: list[str], order: list[str]) -> list[float]:
    """Where each suggested operator stood in the menu shown, from 0 (first) to 1
    (last); operators not on the menu are left out. The menu is shuffled per seed, so
    without a position effect the mean is ½ whatever operators the LLM prefers."""
    if len(order) < 2:
        return []
    return [order.index(o) / (len(order) - 1) for o in ops if o in order]


def copies_menu(ops: list[str], order: list[str], k: int = 3) -> bool:
    """Whether an answer of at least ``k`` operators is the menu's first ones, in order
    (a model that lists the menu rather than choosing from it)."""
    return len(ops) >= k and ops == order[: len(ops)]


def mean_over_datasets(
    values: Mapping[str, list[float]], *, seed: int = 0, n: int = BOOTSTRAP
) -> Share:
    """The mean over datasets of each dataset's mean value, with a 95% bootstrap
    interval over datasets (datasets without values are left out)."""
    m = np.array([np.mean(v) for v in values.values() if len(v)], dtype=float)
    if not len(m):
        return Share("", math.nan, math.nan, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    boot = m[rng.integers(0, len(m), size=(n, len(m)))].mean(axis=1)
    low, high = np.percentile(boot, [2.5, 97.5])
    return Share("", float(m.mean()), float(low), float(high), float(boot.std(ddof=1)))
