"""Sub-networks of a BERT encoder and the search spaces over them, without torch.

A sub-network (:class:`SubNet`) keeps, per encoder layer, whether the layer stays,
its first ``heads[i]`` attention heads and its first ``units[i]`` feed-forward
units. :mod:`mlpilot.tools.pruning` runs them; this module only describes and
counts them, so settings and reports need no torch. Standalone (sandbox jobs get
it handed in next to ``pruning.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class EncoderShape:
    """The full encoder's dimensions."""

    layers: int
    heads: int
    head_size: int
    hidden: int
    units: int

    @classmethod
    def of(cls, config: Any) -> EncoderShape:
        """From a ``transformers.BertConfig`` (or anything with its attribute names)."""
        return cls(
            layers=config.num_hidden_layers,
            heads=config.num_attention_heads,
            head_size=config.hidden_size // config.num_attention_heads,
            hidden=config.hidden_size,
            units=config.intermediate_size,
        )


@dataclass(frozen=True)
class SubNet:
    """Which parts of the encoder a sub-network keeps.

    Attributes:
        layers: per layer, whether it stays.
        heads: per layer, how many attention heads stay (the first ones), >= 1.
        units: per layer, how many feed-forward units stay (the first ones), >= 1.
    """

    layers: tuple[bool, ...]
    heads: tuple[int, ...]
    units: tuple[int, ...]

    def __post_init__(self) -> None:
        n = len(self.layers)
        if len(self.heads) != n or len(self.units) != n:
            raise ValueError(
                f"a SubNet needs one entry per layer, but got {n} layers, "
                f"{len(self.heads)} head counts and {len(self.units)} unit counts"
            )
        if not any(self.layers):
            raise ValueError("a SubNet must keep at least one layer")
        if min(self.heads) < 1 or min(self.units) < 1:
            raise ValueError(
                f"a kept layer keeps >= 1 head and >= 1 unit, but got heads={self.heads}, "
                f"units={self.units}"
            )

    @classmethod
    def full(cls, shape: EncoderShape) -> SubNet:
        return cls(
            (True,) * shape.layers, (shape.heads,) * shape.layers, (shape.units,) * shape.layers
        )

    def check(self, shape: EncoderShape) -> None:
        """Raise ValueError unless this sub-network fits inside ``shape``."""
        if len(self.layers) != shape.layers:
            raise ValueError(
                f"the encoder has {shape.layers} layers, the SubNet {len(self.layers)}"
            )
        if max(self.heads) > shape.heads or max(self.units) > shape.units:
            raise ValueError(
                f"a layer has {shape.heads} heads and {shape.units} units, but the SubNet asks "
                f"for heads={self.heads}, units={self.units}"
            )

    @property
    def kept(self) -> list[int]:
        return [i for i, keep in enumerate(self.layers) if keep]

    def to_dict(self) -> dict[str, list]:
        return {"layers": list(self.layers), "heads": list(self.heads), "units": list(self.units)}

    @classmethod
    def from_dict(cls, data: dict[str, Sequence]) -> SubNet:
        return cls(
            tuple(bool(v) for v in data["layers"]),
            tuple(int(v) for v in data["heads"]),
            tuple(int(v) for v in data["units"]),
        )

    def describe(self) -> str:
        """A short human-readable form: ``4 layers, heads 12/8/8/6, units 1536/768/...``."""
        kept = self.kept
        heads = "/".join(str(self.heads[i]) for i in kept)
        units = "/".join(str(self.units[i]) for i in kept)
        return f"{len(kept)} layers, heads {heads}, units {units}"


SPACES = ("layer", "small", "medium")
UNIT_STEP = 64  # feed-forward units are kept in blocks of 64 (1536 = 24 blocks in MiniLM)


def space_ranges(space: str, shape: EncoderShape) -> dict[str, tuple[int, int]]:
    """The integer parameters of a search space and their inclusive ranges.

    - ``layer``: one on/off bit per layer (``layer_i``), heads and units whole;
    - ``small``: the first ``layers`` layers, each with the same first ``heads``
      heads and ``units`` blocks of :data:`UNIT_STEP` units;
    - ``medium``: the first ``layers`` layers, with heads and unit blocks per layer.
    """
    blocks = max(1, shape.units // UNIT_STEP)
    if space == "layer":
        return {f"layer_{i}": (0, 1) for i in range(shape.layers)}
    if space == "small":
        return {"layers": (1, shape.layers), "heads": (1, shape.heads), "units": (1, blocks)}
    if space == "medium":
        ranges = {"layers": (1, shape.layers)}
        for i in range(shape.layers):
            ranges[f"heads_{i}"] = (1, shape.heads)
            ranges[f"units_{i}"] = (1, blocks)
        return ranges
    raise ValueError(f"the search space must be one of {', '.join(SPACES)}, but got {space!r}")


def from_params(space: str, shape: EncoderShape, params: dict[str, int]) -> SubNet:
    """The sub-network a search space's parameters describe. In ``layer``, turning
    every layer off keeps the first (a sub-network keeps at least one)."""
    n = shape.layers

    def units(block: int) -> int:
        return min(shape.units, int(block) * UNIT_STEP)

    if space == "layer":
        bits = [bool(params[f"layer_{i}"]) for i in range(n)]
        if not any(bits):
            bits[0] = True
        return SubNet(tuple(bits), (shape.heads,) * n, (shape.units,) * n)
    k = int(params["layers"])
    layers = tuple(i < k for i in range(n))
    if space == "small":
        return SubNet(layers, (int(params["heads"]),) * n, (units(params["units"]),) * n)
    if space == "medium":
        return SubNet(
            layers,
            tuple(int(params[f"heads_{i}"]) for i in range(n)),
            tuple(units(params[f"units_{i}"]) for i in range(n)),
        )
    raise ValueError(f"the search space must be one of {', '.join(SPACES)}, but got {space!r}")


def smallest(space: str, shape: EncoderShape) -> SubNet:
    return from_params(space, shape, {k: low for k, (low, _) in space_ranges(space, shape).items()})


def sample(space: str, shape: EncoderShape, rng: Any) -> SubNet:
    """A uniformly drawn sub-network of the space (``rng``: a ``random.Random``)."""
    ranges = space_ranges(space, shape)
    return from_params(space, shape, {k: rng.randint(lo, hi) for k, (lo, hi) in ranges.items()})


def encoder_params(shape: EncoderShape, subnet: SubNet) -> int:
    """Parameters of the sub-network's encoder layers (embeddings and head not counted)."""
    h, d = shape.hidden, shape.head_size
    total = 0
    for i in subnet.kept:
        width = subnet.heads[i] * d
        units = subnet.units[i]
        total += 3 * (h * width + width)  # query, key, value
        total += width * h + h  # attention output projection
        total += h * units + units  # intermediate
        total += units * h + h  # output projection
        total += 2 * 2 * h  # two layer norms
    return total


def shape_of_arch(arch: dict[str, Any]) -> EncoderShape:
    """The full encoder's shape from a saved classifier's architecture record
    (its per-layer lists give the layer count of the model as saved)."""
    config = arch["config"]
    heads = int(config["num_attention_heads"])
    return EncoderShape(
        layers=len(arch["heads"]),
        heads=heads,
        head_size=int(config["hidden_size"]) // heads,
        hidden=int(config["hidden_size"]),
        units=int(config["intermediate_size"]),
    )
