"""How a stacked or neural ensemble combines its members' predictions: numpy only, so
a delivered model predicts without torch or scikit-learn's meta-models. The fitting
is in :mod:`mlpilot.agents.stacking`.

A combiner's parameters are a dict of numpy arrays (and floats):

* stacking: ``coef`` (classes or 1, features) and ``intercept``; the features are the
  members' log-probabilities (classification) or values (regression), member by
  member. One row of ``coef`` for two classes is a logistic model of the second.
* neural: ``w1, b1, w2, b2, w3, b3`` and ``center, scale`` (see :func:`neural_weights`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

EPS = 1e-6


def stack(preds: Sequence[np.ndarray]) -> np.ndarray:
    """Member predictions as one (n, M, k) array (k = 1 for values)."""
    arrays = [np.asarray(p, dtype=float) for p in preds]
    return np.stack([a[:, None] if a.ndim == 1 else a for a in arrays], axis=1)


def stack_features(P: np.ndarray, classification: bool) -> np.ndarray:
    if classification:
        return np.log(np.clip(P, EPS, 1.0)).reshape(len(P), -1)
    return P.reshape(len(P), -1)


def apply_stacking(meta: dict[str, Any], P: np.ndarray, classification: bool) -> np.ndarray:
    X = stack_features(P, classification)
    z = X @ np.asarray(meta["coef"], dtype=float).T + np.asarray(meta["intercept"], dtype=float)
    if not classification:
        return z[:, 0] if z.ndim == 2 else z
    if z.shape[1] == 1:  # two classes: a logistic model of the second
        p = 1.0 / (1.0 + np.exp(-z[:, 0]))
        return np.column_stack([1 - p, p])
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def neural_weights(nw: dict[str, Any], P: np.ndarray) -> np.ndarray:
    """Per-row member weights (n, M). Each class's vector of member predictions goes
    through one small network shared across classes (``w1``, ``w2``, ReLU); its
    outputs are averaged over classes and mapped to a score per member (``w3``); a
    softmax over the members gives the row's weights. Values are standardised first."""
    Z = (P - float(nw["center"])) / float(nw["scale"])
    Z = np.transpose(Z, (0, 2, 1))  # (n, k, M)
    h = np.maximum(Z @ nw["w1"] + nw["b1"], 0.0)
    h = np.maximum(h @ nw["w2"] + nw["b2"], 0.0).mean(axis=1)
    s = h @ nw["w3"] + nw["b3"]
    s = s - s.max(axis=1, keepdims=True)
    e = np.exp(s)
    return e / e.sum(axis=1, keepdims=True)


def apply_neural(nw: dict[str, Any], P: np.ndarray, classification: bool) -> np.ndarray:
    out = np.einsum("nm,nmk->nk", neural_weights(nw, P), P)
    return out if classification else out[:, 0]


def apply(method: str, params: dict[str, Any], P: np.ndarray, classification: bool) -> np.ndarray:
    if method == "stacking":
        return apply_stacking(params, P, classification)
    if method == "neural":
        return apply_neural(params, P, classification)
    raise ValueError(f"no combiner {method!r} (stacking or neural)")


def as_lists(params: dict[str, Any]) -> dict[str, Any]:
    """JSON-ready parameters (for the run's state)."""
    return {k: np.asarray(v).tolist() if not isinstance(v, float) else v for k, v in params.items()}


def as_arrays(params: dict[str, Any]) -> dict[str, Any]:
    return {k: np.asarray(v, dtype=float) if isinstance(v, list) else v for k, v in params.items()}
