"""Pareto fronts, hypervolume and the pruning search spaces on hand-made inputs."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from mlpilot.tools import pareto
from mlpilot.tools.subnets import (
    EncoderShape,
    SubNet,
    encoder_params,
    from_params,
    sample,
    smallest,
    space_ranges,
)

MINILM = EncoderShape(layers=6, heads=12, head_size=32, hidden=384, units=1536)


def test_pareto_mask_on_hand_made_points() -> None:
    points = [(0.1, 0.9), (0.2, 0.5), (0.3, 0.5), (0.2, 0.6), (0.5, 0.1), (0.1, 0.9), (0.6, 0.2)]
    # (0.3, 0.5) and (0.2, 0.6) are dominated by (0.2, 0.5); (0.6, 0.2) by (0.5, 0.1);
    # the second (0.1, 0.9) is a copy of the first
    assert pareto.pareto_mask(points).tolist() == [True, True, False, False, True, False, False]
    assert pareto.front(points).tolist() == [[0.1, 0.9], [0.2, 0.5], [0.5, 0.1]]


def test_hypervolume_is_the_union_of_boxes() -> None:
    assert pareto.hypervolume_2d([(1, 3), (2, 1)], (4, 4)) == pytest.approx(7.0)
    # a dominated point adds nothing, a point beyond the reference adds nothing
    assert pareto.hypervolume_2d([(1, 3), (2, 1), (3, 3), (5, 0), (0, 5)], (4, 4)) == pytest.approx(
        7.0
    )
    assert pareto.hypervolume_2d([], (1, 1)) == 0.0
    assert pareto.hypervolume_2d([(0.0, 0.0)], (1, 1)) == pytest.approx(1.0)


def test_hypervolume_matches_a_grid_count() -> None:
    rng = np.random.default_rng(3)
    points = rng.uniform(0, 1, size=(12, 2))
    grid = (np.arange(400) + 0.5) / 400
    gx, gy = np.meshgrid(grid, grid)
    cells = np.stack([gx.ravel(), gy.ravel()], axis=1)
    dominated = np.zeros(len(cells), dtype=bool)
    for p in points:
        dominated |= np.all(cells >= p, axis=1)
    assert pareto.hypervolume_2d(points, (1, 1)) == pytest.approx(dominated.mean(), abs=5e-3)


def test_more_points_never_lower_the_hypervolume() -> None:
    rng = np.random.default_rng(0)
    points = rng.uniform(0, 1, size=(20, 2))
    volumes = [pareto.hypervolume_2d(points[:n], (1, 1)) for n in range(1, 21)]
    assert all(b >= a for a, b in itertools.pairwise(volumes))


def test_bad_points_are_refused() -> None:
    with pytest.raises(ValueError, match="finite"):
        pareto.pareto_mask([(0.1, float("nan"))])
    with pytest.raises(ValueError, match="two objectives"):
        pareto.hypervolume_2d([(1, 2, 3)], (4, 4, 4))


def test_encoder_params_by_hand() -> None:
    full = SubNet.full(MINILM)
    # MiniLM-L6: 6 layers x 1,774,464 (q/k/v 443,520, output 147,840, FFN 1,181,568,
    # layer norms 1,536)
    assert encoder_params(MINILM, full) == 6 * 1_774_464
    one = SubNet((True,) + (False,) * 5, (1,) * 6, (1,) * 6)
    # one head of 32 dims: q/k/v 3 * (384 * 32 + 32), output 32 * 384 + 384; one unit:
    # 384 + 1 in, 384 + 384 out (bias); two layer norms 4 * 384
    assert encoder_params(MINILM, one) == 3 * (384 * 32 + 32) + 32 * 384 + 384 + 385 + 768 + 1536


@pytest.mark.parametrize("space", ["layer", "small", "medium"])
def test_spaces_cover_their_ranges(space: str) -> None:
    ranges = space_ranges(space, MINILM)
    top = from_params(space, MINILM, {k: hi for k, (_, hi) in ranges.items()})
    assert top == SubNet.full(MINILM)
    low = smallest(space, MINILM)
    assert encoder_params(MINILM, low) < encoder_params(MINILM, top)
    rng = random.Random(0)
    for _ in range(50):
        net = sample(space, MINILM, rng)
        net.check(MINILM)
        assert SubNet.from_dict(net.to_dict()) == net


def test_layer_space_keeps_a_layer_and_small_keeps_the_first() -> None:
    off = from_params("layer", MINILM, {f"layer_{i}": 0 for i in range(6)})
    assert off.kept == [0]
    net = from_params("small", MINILM, {"layers": 3, "heads": 4, "units": 2})
    assert net.kept == [0, 1, 2] and net.heads[0] == 4 and net.units[0] == 128
    assert net.describe() == "3 layers, heads 4/4/4, units 128/128/128"


def test_subnet_rules_say_what_came() -> None:
    with pytest.raises(ValueError, match="at least one layer"):
        SubNet((False, False), (1, 1), (1, 1))
    with pytest.raises(ValueError, match="one entry per layer"):
        SubNet((True,), (1, 1), (1,))
    with pytest.raises(ValueError, match=">= 1 head"):
        SubNet((True,), (0,), (4,))
    with pytest.raises(ValueError, match="12 heads"):
        SubNet((True,) * 6, (13,) * 6, (1,) * 6).check(MINILM)
    with pytest.raises(ValueError, match="search space must be one of"):
        space_ranges("large", MINILM)
