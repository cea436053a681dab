"""Pareto fronts and hypervolume for objectives that are all minimised.

The NAS agent's objectives are the validation error and the sub-network's size
(or latency) as a fraction of the full model's. Hypervolume is the area a front
dominates up to a reference point; a point beyond the reference in any objective
adds nothing. Pure numpy; two objectives exactly, which is what the reports plot.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _points(points: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    arr = np.asarray(points, dtype=float)
    if arr.size == 0:
        return arr.reshape(0, 2)
    if arr.ndim != 2:
        raise ValueError(f"points must be a (n, objectives) array, but got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("points must be finite")
    return arr


def pareto_mask(points: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """Boolean mask of the non-dominated points (minimisation in every column).

    A point is dominated when another is no worse in every objective and better in
    one. Of identical points, the first is kept.
    """
    arr = _points(points)
    n = len(arr)
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        others = np.delete(arr, i, axis=0)
        weakly = np.all(others <= arr[i], axis=1)
        strictly = np.any(others < arr[i], axis=1)
        if np.any(weakly & strictly):
            keep[i] = False
    # identical points: keep the first of each group
    for i in range(n):
        if keep[i]:
            same = np.all(arr == arr[i], axis=1)
            same[: i + 1] = False
            keep[same] = False
    return keep


def front(points: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """The non-dominated points, sorted by the first objective."""
    arr = _points(points)
    nd = arr[pareto_mask(arr)]
    return nd[np.lexsort(nd.T[::-1])]


def hypervolume_2d(
    points: Sequence[Sequence[float]] | np.ndarray, reference: Sequence[float]
) -> float:
    """Area dominated by ``points`` and bounded by ``reference`` (both minimised).

    Example: points (1, 3) and (2, 1) with reference (4, 4) dominate the union of
    their boxes, 3 * 1 + 2 * 3 minus the overlap 2 * 1: an area of 7.
    """
    arr = _points(points)
    if arr.shape[1] != 2:
        raise ValueError(f"hypervolume_2d needs two objectives, but got {arr.shape[1]}")
    ref = np.asarray(reference, dtype=float)
    inside = arr[np.all(arr < ref, axis=1)]
    if len(inside) == 0:
        return 0.0
    nd = front(inside)  # ascending in the first objective, so descending in the second
    area = 0.0
    previous_y = ref[1]
    for x, y in nd:
        area += (ref[0] - x) * (previous_y - y)
        previous_y = y
    return float(area)
