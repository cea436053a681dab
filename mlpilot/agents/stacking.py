"""Ensembling beyond greedy selection, and the nested choice among the methods.

Four ways to combine the best trials' out-of-fold predictions:

* **single**: the best member alone;
* **greedy**: Caruana's selection with replacement (:mod:`mlpilot.agents.ensemble`);
* **stacking**: a regularised linear meta-model on the members' predictions
  (multinomial logistic regression on their log-probabilities; ridge on their
  values, its penalty chosen by leave-one-out);
* **neural**: the regularized neural ensembler of Arango et al. (arXiv 2410.04520):
  a small network maps the members' predictions of a row to per-row member weights
  (model averaging), one network shared across classes, with members dropped at
  random while it trains (rate 0.3) so that it cannot lean on a single one. It is
  trained with torch when torch is installed; its forward pass is numpy, so a
  delivered model predicts without torch.

The choice is nested: the training rows are split into folds, each method is fit on
the out-of-fold predictions of the other folds and scored on the held-out fold, and
the method with the best nested score wins, kept only if it beats greedy's nested
score (otherwise greedy, which is simpler, stays). All four nested scores are
reported. The combiners are fit on the host from arrays of numbers (no job code).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlpilot.agents.ensemble import Member, best_member, greedy_ensemble
from mlpilot.tools import combiners
from mlpilot.tools.combiners import EPS
from mlpilot.tools.metrics import Metric, predictions_for

METHODS = ("single", "greedy", "stacking", "neural")
NESTED_FOLDS = 5
Params = dict[str, Any]


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except Exception:  # not installed, or a broken install: no neural ensembler
        return False
    return True


# -- fitting the combiners on (n, M, k) member predictions ------------------------------------


def class_index(y: np.ndarray, classes: Sequence[Any] | None) -> np.ndarray:
    """Labels as positions in ``classes`` (the probability columns' order)."""
    index = {str(c): i for i, c in enumerate(classes or sorted(set(y.tolist()), key=str))}
    return np.array([index[str(v)] for v in y], dtype=int)


def fit_stacking(
    P: np.ndarray,
    y: np.ndarray,
    classification: bool,
    *,
    classes: Sequence[Any] | None = None,
    seed: int = 0,
) -> Params:
    """The linear meta-model's parameters (see :mod:`mlpilot.tools.combiners`)."""
    from sklearn.linear_model import LogisticRegression, RidgeCV

    X = combiners.stack_features(P, classification)
    if classification:
        target = class_index(np.asarray(y), classes)
        model = LogisticRegression(C=1.0, max_iter=2000, random_state=seed).fit(X, target)
    else:
        model = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(X, y)
    coef = np.atleast_2d(np.asarray(model.coef_, dtype=float))
    intercept = np.atleast_1d(np.asarray(model.intercept_, dtype=float))
    if classification:
        k = P.shape[2]
        present = [int(c) for c in model.classes_]
        if len(present) < k:  # a class absent from these rows: it gets no probability
            full = np.zeros((k, coef.shape[1]))
            bias = np.full(k, -30.0)
            if len(present) == 1:
                bias[present[0]] = 0.0
            elif coef.shape[0] == 1:  # a logistic model of present[1] against present[0]
                full[present[1]], bias[present[1]] = coef[0], intercept[0]
                bias[present[0]] = 0.0
            else:
                full[present], bias[present] = coef, intercept
            coef, intercept = full, bias
    return {"coef": coef, "intercept": intercept}


def fit_neural(
    P: np.ndarray,
    y: np.ndarray,
    classification: bool,
    *,
    classes: Sequence[Any] | None = None,
    hidden: int = 32,
    dropout: float = 0.3,
    epochs: int = 300,
    seed: int = 0,
) -> Params:
    """Trains the neural ensembler (full batch, Adam) on out-of-fold predictions:
    negative log-likelihood for classes, squared error for values. Members are dropped
    per row with probability ``dropout`` (at least one stays), their weights renormalised
    over the rest."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add contention
    try:
        return _train_neural(P, y, classification, classes, hidden, dropout, epochs, seed)
    finally:
        torch.set_num_threads(threads)


def _train_neural(
    P: np.ndarray,
    y: np.ndarray,
    classification: bool,
    classes: Sequence[Any] | None,
    hidden: int,
    dropout: float,
    epochs: int,
    seed: int,
) -> Params:
    import torch

    torch.manual_seed(seed)
    n, M, _ = P.shape
    center, scale = (0.0, 1.0)
    if not classification:
        center, scale = float(np.mean(P)), float(np.std(P) or 1.0)
    Z = torch.tensor(np.transpose((P - center) / scale, (0, 2, 1)), dtype=torch.float32)
    Pt = torch.tensor(P, dtype=torch.float32)
    if classification:
        target = torch.tensor(class_index(np.asarray(y), classes), dtype=torch.long)
    else:
        target = torch.tensor(np.asarray(y, dtype=float), dtype=torch.float32)
    l1, l2, l3 = (
        torch.nn.Linear(M, hidden),
        torch.nn.Linear(hidden, hidden),
        torch.nn.Linear(hidden, M),
    )
    torch.nn.init.zeros_(l3.weight)  # starts as the plain average of the members
    torch.nn.init.zeros_(l3.bias)
    params = [*l1.parameters(), *l2.parameters(), *l3.parameters()]
    opt = torch.optim.Adam(params, lr=1e-2, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        h = torch.relu(l2(torch.relu(l1(Z)))).mean(dim=1)
        s = l3(h)
        keep = torch.rand((n, M), generator=gen) >= dropout
        keep[torch.arange(n), torch.randint(0, M, (n,), generator=gen)] = True  # one stays
        s = s.masked_fill(~keep, -1e9)
        w = torch.softmax(s, dim=1)
        out = torch.einsum("nm,nmk->nk", w, Pt)
        if classification:
            loss = torch.nn.functional.nll_loss(torch.log(out.clamp_min(EPS)), target)
        else:
            loss = torch.mean((out[:, 0] - target) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def arr(t: Any) -> np.ndarray:
        return t.detach().numpy().astype(float)

    return {
        "w1": arr(l1.weight.T),
        "b1": arr(l1.bias),
        "w2": arr(l2.weight.T),
        "b2": arr(l2.bias),
        "w3": arr(l3.weight.T),
        "b3": arr(l3.bias),
        "center": center,
        "scale": scale,
    }


# -- the nested choice ------------------------------------------------------------------------


@dataclass
class Choice:
    """What the nested comparison found and the combiner fit on all rows.

    Attributes:
        method: the chosen method (one of :data:`METHODS`).
        nested: each method's nested out-of-fold score (None: not run).
        weights: member name -> weight (single and greedy).
        params: the combiner's parameters (stacking and neural).
        note: why a method did not run.
    """

    method: str
    nested: dict[str, float | None]
    weights: dict[str, float] = field(default_factory=dict)
    params: Params = field(default_factory=dict)
    note: str = ""


def _fit(
    method: str,
    members: Sequence[Member],
    rows: np.ndarray,
    y: np.ndarray,
    metric: Metric,
    classes: Sequence[Any] | None,
    classification: bool,
    seed: int,
) -> tuple[dict[str, float], Params]:
    sub = [Member(m.name, m.oof[rows], m.holdout_pred) for m in members]
    if method == "single":
        best, _ = best_member(sub, y[rows], metric, classes=classes)
        return {sub[best].name: 1.0}, {}
    if method == "greedy":
        result = greedy_ensemble(sub, y[rows], metric, classes=classes)
        if not result.kept:
            return {result.best_single_name: 1.0}, {}
        return result.normalized_weights(), {}
    P = combiners.stack([m.oof for m in sub])
    if method == "stacking":
        return {}, fit_stacking(P, y[rows], classification, classes=classes, seed=seed)
    return {}, fit_neural(P, y[rows], classification, classes=classes, seed=seed)


def combine(
    method: str,
    names: Sequence[str],
    preds: Sequence[np.ndarray],
    weights: dict[str, float],
    params: Params,
    classification: bool,
) -> np.ndarray:
    """The method's combination of ``preds`` (one array per member, ``names``' order)."""
    if method in ("single", "greedy"):
        total = sum(weights.values())
        parts = [
            np.asarray(p, dtype=float) * weights.get(name, 0.0) / total
            for name, p in zip(names, preds, strict=True)
        ]
        return np.sum(parts, axis=0)
    return combiners.apply(method, params, combiners.stack(preds), classification)


# The least time left, in seconds, for which a combiner is started at all: its first
# fold runs before its cost is known (the neural ensembler's, torch's import included,
# took 2-3 s on 455 rows and 12 members on 2 cores).
START_S = {"stacking": 1.0, "neural": 6.0}


def choose(
    members: Sequence[Member],
    y: np.ndarray,
    metric: Metric,
    *,
    classes: Sequence[Any] | None = None,
    classification: bool,
    methods: Sequence[str] = METHODS,
    folds: int = NESTED_FOLDS,
    seed: int = 0,
    deadline: float | None = None,
) -> Choice:
    """Compares the methods by nested cross-validation over the out-of-fold
    predictions and fits the winner on all rows (see the module's docstring). A
    method whose remaining fits would pass ``deadline`` (``time.monotonic()``), judged
    from its first fold, is left out with a note."""
    from sklearn.model_selection import KFold, StratifiedKFold

    y = np.asarray(y)
    notes = []
    methods = list(methods)
    if "neural" in methods and not torch_available():
        methods.remove("neural")
        notes.append("the neural ensembler needs torch (not installed)")
    splitter = (
        StratifiedKFold(folds, shuffle=True, random_state=seed)
        if classification
        else KFold(folds, shuffle=True, random_state=seed)
    )
    parts = list(splitter.split(np.zeros(len(y)), y if classification else None))
    names = [m.name for m in members]
    nested: dict[str, float | None] = {m: None for m in METHODS}
    for method in methods:
        left = math.inf if deadline is None else deadline - time.monotonic()
        if method in START_S and left < START_S[method]:  # the others are quick
            notes.append(f"no time for {method} ({max(0.0, left):.0f} s left for ensembling)")
            continue
        out = np.zeros_like(members[0].oof, dtype=float)
        for i, (inner, outer) in enumerate(parts):
            t0 = time.monotonic()
            weights, params = _fit(method, members, inner, y, metric, classes, classification, seed)
            preds = [m.oof[outer] for m in members]
            out[outer] = combine(method, names, preds, weights, params, classification)
            took = time.monotonic() - t0
            late = deadline is not None and time.monotonic() + folds * took > deadline
            if i == 0 and late and method in ("stacking", "neural"):  # the others are quick
                notes.append(f"no time for {method} (about {(folds + 1) * took:.0f} s of fits)")
                break
        else:
            nested[method] = float(metric(y, predictions_for(metric, out, classes)))
    scored = {m: s for m, s in nested.items() if s is not None}
    if not scored:  # nothing ran in time: the best member alone
        weights, params = _fit(
            "single", members, np.arange(len(y)), y, metric, classes, classification, seed
        )
        return Choice("single", nested, weights, params, "; ".join(notes))
    best = max(scored, key=lambda m: metric.sign() * scored[m])
    greedy_score = scored.get("greedy")
    if best in ("stacking", "neural") and greedy_score is not None:
        margin = 1e-9 * max(1.0, abs(greedy_score))
        if metric.sign() * (scored[best] - greedy_score) <= margin:
            best = "greedy"  # simpler, and no worse
    if best == "single" and greedy_score is not None and greedy_score == scored["single"]:
        best = "greedy"  # the same model; greedy may still find a blend on all rows
    every = np.arange(len(y))
    weights, params = _fit(best, members, every, y, metric, classes, classification, seed)
    return Choice(best, nested, weights, params, "; ".join(notes))
