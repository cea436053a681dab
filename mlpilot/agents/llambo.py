"""The LLM's two jobs in LLAMBO-style optimisation, for any search space.

* :func:`propose` with ``kind="warmstart"``: from a data-aware prompt, N diverse
  initial configurations;
* :func:`propose` with ``kind="sample"``: shown the history as examples, N
  configurations aimed at the target score s* = best + alpha * (best - worst).

Answers are typed from the space (constrained decoding where the backend allows),
then every proposal is checked against the space again; invalid ones are counted
and dropped. Used by the HPO agent (one model family of a run) and by the HPO
benchmarks (Bayesmark's spaces).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field, create_model

from mlpilot import prompts
from mlpilot.llm import LLM, LLMError, LLMUnavailable, StructuredOutputError, structured
from mlpilot.tools.search_spaces import (
    FAMILY_NOTES,
    Param,
    describe_params,
    space,
    validate_params,
)

Kind = Literal["warmstart", "sample"]


@dataclass
class ProposalStats:
    """What happened to the LLM's proposals."""

    proposed: int = 0
    enqueued: int = 0
    invalid: int = 0
    duplicates: int = 0
    llm_errors: list[str] = field(default_factory=list)
    unavailable: bool = False


@dataclass(frozen=True)
class Model:
    """What is being tuned, as the prompt names it."""

    name: str
    note: str
    params: tuple[Param, ...]

    @classmethod
    def family(cls, family: str) -> Model:
        """One of mlpilot's model families."""
        return cls(family, FAMILY_NOTES[family], space(family))

    def describe(self) -> str:
        return describe_params(self.params)

    def validate(self, config: dict[str, Any]) -> dict[str, Any]:
        """The configuration coerced to the space's types; ValueError if it does not fit."""
        return validate_params(self.params, config)


def config_model(model: Model, n: int) -> type[BaseModel]:
    """A pydantic model for ``n`` configurations, typed from the space, so that
    constrained decoding already respects types and choices. Ranges are in the schema
    as hints but not enforced here: one value out of range drops that configuration
    (see :func:`propose`), not the whole answer, which would cost a re-ask."""
    fields: dict[str, Any] = {p.name: _field(p) for p in model.params}
    one = create_model(f"{_camel(model.name)}Config", **fields)
    return create_model(
        f"{_camel(model.name)}Proposals",
        configs=(list[one], Field(min_length=1, max_length=n)),  # type: ignore[valid-type]
    )


def _field(p: Param) -> tuple[Any, Any]:
    if p.kind == "categorical":
        return (Literal[tuple(p.choices)], ...)  # type: ignore[valid-type]
    typ = int if p.kind == "int" else float
    return (typ, Field(json_schema_extra={"minimum": p.low, "maximum": p.high}))


def _camel(name: str) -> str:
    return "".join(part.title() for part in name.replace("-", "_").split("_"))


def answer_format(model: Model, n: int) -> str:
    """The answer's shape with placeholders, not values: a small model copies example
    values into its answers (all five "warm-start" points became the example's with one
    value changed), and a schema gets echoed; the placeholders fix only the format."""
    fields = []
    for p in model.params:
        if p.kind == "categorical":
            fields.append(f'"{p.name}": <one of {", ".join(json.dumps(c) for c in p.choices)}>')
        else:
            fields.append(f'"{p.name}": <{"integer" if p.kind == "int" else "number"}>')
    one = "{" + ", ".join(fields) + "}"
    return '{"configs": [' + one + ", ... " + f"{n} objects in all" + "]}"


def target_score(scores: Sequence[float], greater_is_better: bool, alpha: float) -> float:
    """LLAMBO's s* = best + alpha * (best - worst), in the metric's own direction."""
    best = max(scores) if greater_is_better else min(scores)
    worst = min(scores) if greater_is_better else max(scores)
    return best + alpha * (best - worst)


def proposal_max_tokens(model: Model, n: int) -> int:
    """The answer's token cap: ``n`` configurations of the model's parameters."""
    return 80 + 60 * n * len(model.params)


def proposal_messages(
    model: Model,
    context: dict[str, Any],
    *,
    kind: Kind,
    n: int,
    history: Sequence[tuple[dict[str, Any], float]] = (),
    greater_is_better: bool = True,
    alpha: float = 0.1,
) -> list[dict[str, str]]:
    """The prompt asking for ``n`` configurations of ``model`` (see :func:`propose`)."""
    common = {
        **context,
        "family": model.name,
        "family_note": model.note,
        "space": model.describe(),
        "n": n,
        "answer_format": answer_format(model, n),
    }
    if kind == "warmstart":
        user = prompts.render("hpo_warmstart", **common)
    else:
        rows = [{"config": json.dumps(c), "score": f"{s:.4f}"} for c, s in history]
        target = target_score([s for _, s in history], greater_is_better, alpha)
        user = prompts.render("hpo_sample", history=rows, target=f"{target:.4f}", **common)
    return [
        {"role": "system", "content": prompts.render("system")},
        {"role": "user", "content": user},
    ]


def propose(
    llm: LLM,
    model: Model,
    context: dict[str, Any],
    *,
    kind: Kind,
    n: int,
    history: Sequence[tuple[dict[str, Any], float]] = (),
    greater_is_better: bool = True,
    alpha: float = 0.1,
    seed: int = 0,
    timeout: float | None = None,
    stats: ProposalStats | None = None,
) -> list[dict[str, Any]]:
    """Asks the LLM for ``n`` configurations of ``model``; returns the valid ones.

    ``context`` holds the shared dataset block's variables (problem, modality, metric,
    direction, profile). ``history`` is (configuration, score) pairs, best first. LLM
    failures are recorded in ``stats`` and give an empty list.
    """
    stats = stats if stats is not None else ProposalStats()
    messages = proposal_messages(
        model,
        context,
        kind=kind,
        n=n,
        history=history,
        greater_is_better=greater_is_better,
        alpha=alpha,
    )
    try:
        answer = structured(
            llm,
            messages,
            config_model(model, n),
            role=f"hpo-{kind}",
            temperature=0.0 if kind == "warmstart" else 0.7,
            max_tokens=proposal_max_tokens(model, n),
            seed=seed,
            timeout=timeout,
        )
    except (LLMError, StructuredOutputError) as e:
        stats.llm_errors.append(f"{kind}: {type(e).__name__}: {str(e)[:200]}")
        stats.unavailable = stats.unavailable or isinstance(e, LLMUnavailable)
        return []
    configs = []
    for raw in answer.configs:  # type: ignore[attr-defined]
        stats.proposed += 1
        try:
            configs.append(model.validate(raw.model_dump()))
        except ValueError:
            stats.invalid += 1
    return configs


def warmstarts_model(models: Sequence[Model], n: int) -> type[BaseModel]:
    """The answer of :func:`propose_warmstarts`: ``n`` configurations per model, one
    field per model in the given order (constrained decoding writes them in it)."""
    fields: dict[str, Any] = {
        m.name: (
            config_model(m, n).model_fields["configs"].annotation,
            Field(min_length=1, max_length=n),
        )
        for m in models
    }
    return create_model("WarmStarts", **fields)


def warmstarts_format(models: Sequence[Model], n: int) -> str:
    """The combined answer's shape, with placeholders as in :func:`answer_format`. (A
    shape naming only the lists, its keys left to constrained decoding, read 15% fewer
    prompt tokens but was no faster, and a value fell out of range.)"""
    parts = [
        f'"{m.name}": ' + answer_format(m, n).removeprefix('{"configs": ').removesuffix("}")
        for m in models
    ]
    return "{" + ", ".join(parts) + "}"


def warmstarts_messages(
    models: Sequence[Model], context: dict[str, Any], *, n: int
) -> list[dict[str, str]]:
    """The prompt asking for ``n`` warm-start configurations of every model at once."""
    described = [{"name": m.name, "note": m.note, "space": m.describe()} for m in models]
    user = prompts.render(
        "hpo_warmstart_all",
        **context,
        models=described,
        n=n,
        answer_format=warmstarts_format(models, n),
    )
    return [
        {"role": "system", "content": prompts.render("system")},
        {"role": "user", "content": user},
    ]


def propose_warmstarts(
    llm: LLM,
    models: Sequence[Model],
    context: dict[str, Any],
    *,
    n: int,
    stats: dict[str, ProposalStats],
    seed: int = 0,
    timeout: float | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Asks for every model's warm start in one request: the shared dataset block and
    the instructions are read once, and a local model answers it with the cores to
    itself before the first trial (see :class:`mlpilot.agents.hpo.HpoAgent`).

    Returns each model's valid configurations. If the answer is cut off at
    ``timeout``, the models whose lists were complete by then keep them; the others
    get none, with the reason in their ``stats`` (one per model name)."""
    for m in models:
        stats.setdefault(m.name, ProposalStats())
    shape = warmstarts_model(models, n)
    cut: list[str] = []
    try:
        answer: dict[str, Any] = structured(
            llm,
            warmstarts_messages(models, context, n=n),
            shape,
            role="hpo-warmstart",
            temperature=0.0,
            max_tokens=sum(proposal_max_tokens(m, n) for m in models),
            seed=seed,
            timeout=timeout,
        ).model_dump()
    except (LLMError, StructuredOutputError) as e:
        answer = complete_members(getattr(e, "partial", ""), shape)
        cut = [m.name for m in models if m.name not in answer]
        for name in cut:
            stats[name].llm_errors.append(f"warmstart: {type(e).__name__}: {str(e)[:200]}")
            stats[name].unavailable = stats[name].unavailable or isinstance(e, LLMUnavailable)
    out: dict[str, list[dict[str, Any]]] = {}
    for m in models:
        configs = []
        for raw in answer.get(m.name) or ():
            stats[m.name].proposed += 1
            try:
                configs.append(m.validate(raw))
            except ValueError:
                stats[m.name].invalid += 1
        out[m.name] = configs
    return out


def complete_members(partial: str, shape: type[BaseModel]) -> dict[str, Any]:
    """The members of a JSON object cut off mid-answer that were complete and valid
    before the cut: ``{"a": [...], "b": [..`` gives ``{"a": [...]}``."""
    partial = partial.strip()
    for end in range(len(partial), 0, -1):
        if partial[end - 1] != "]":
            continue
        try:
            data = json.loads(partial[:end] + "}")
        except ValueError:
            continue
        if not isinstance(data, dict):
            continue
        kept = {}
        for name, value in data.items():
            field = shape.model_fields.get(name)
            if field is None:
                continue
            one = create_model("One", v=(field.annotation, ...))
            try:
                kept[name] = one.model_validate({"v": value}).model_dump()["v"]
            except ValueError:
                continue
        return kept
    return {}


def make_sampler(kind: str, seed: int, n_startup_trials: int = 5) -> Any:
    """The Optuna sampler every mlpilot search uses: ``tpe`` (the HPO agent's, and
    the baselines') or ``random``."""
    import optuna

    from mlpilot.errors import ConfigError

    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ConfigError(f"unknown sampler {kind!r}; known: tpe, random")


# user attribute: "default", "portfolio", "llm-warmstart", "llm-sample" or "tpe"
SOURCE_ATTR = "source"


def enqueue(
    study: Any, proposals: Sequence[tuple[str, dict[str, Any]]], stats: ProposalStats
) -> None:
    """Puts each (source, configuration) the study has not seen into it, counting the
    enqueued ones and the repeats in ``stats``."""
    seen = {json.dumps(t.params, sort_keys=True, default=str) for t in study.trials}
    for source, config in proposals:
        key = json.dumps(config, sort_keys=True, default=str)
        if key in seen:
            stats.duplicates += 1
            continue
        seen.add(key)
        study.enqueue_trial(config, user_attrs={SOURCE_ATTR: source}, skip_if_exists=True)
        stats.enqueued += 1


class Proposer:
    """The LLM's part of one search, as one component: when to ask and what to put
    into the Optuna study. First a warm start of ``warmstart`` configurations; then,
    once ``min_history`` trials have finished, ``sample_n`` candidates aimed at the
    target score after every ``sample_every`` finished trials. Every valid, new
    proposal enters the study (``enqueue_trial``); the study's TPE sampler proposes
    the rest and learns from all of them.

    Driven by the HPO agent (answers arrive in a background thread while trials run)
    and by the HPO benchmark's ``llambo`` optimiser (answers are waited for), so the
    optimiser benchmarked is the optimiser shipped.

    Args:
        llm: the LLM.
        model: what is tuned.
        context: the shared dataset block's variables (see :func:`propose`).
        greater_is_better: the metric's direction.
        warmstart, sample_every, sample_n, alpha, history, min_history: the schedule
            (see :class:`mlpilot.agents.hpo.HpoSettings`).
        seed: varies the prompt's example order per request.
    """

    def __init__(
        self,
        llm: LLM,
        model: Model,
        context: dict[str, Any],
        *,
        greater_is_better: bool,
        warmstart: int = 5,
        sample_every: int = 3,
        sample_n: int = 2,
        alpha: float = 0.1,
        history: int = 12,
        min_history: int = 3,
        seed: int = 0,
    ) -> None:
        self.llm = llm
        self.model = model
        self.context = context
        self.greater_is_better = greater_is_better
        self.warmstart_n = warmstart
        self.sample_every = sample_every
        self.sample_n = sample_n
        self.alpha = alpha
        self.history = history
        self.min_history = min_history
        self.seed = seed
        self.stats = ProposalStats()
        self._sampled_at = 0  # finished trials when the last sample was asked for
        self._requests = 0

    def warm_start(self, *, timeout: float | None = None) -> list[dict[str, Any]]:
        """The initial configurations (none when the schedule has no warm start)."""
        if self.warmstart_n <= 0:
            return []
        return self._ask("warmstart", self.warmstart_n, (), timeout)

    def sample_due(self, finished: int) -> bool:
        """Whether candidates are due, ``finished`` trials (the LLM's included) in."""
        return (
            finished >= self.min_history
            and finished - max(self._sampled_at, self.min_history - self.sample_every)
            >= self.sample_every
        )

    def sample(
        self,
        scored: Sequence[tuple[dict[str, Any], float]],
        *,
        finished: int,
        timeout: float | None = None,
    ) -> list[dict[str, Any]]:
        """Candidates from the ``history`` best of ``scored`` (configuration, score)."""
        self._sampled_at = finished
        sign = 1.0 if self.greater_is_better else -1.0
        best = sorted(scored, key=lambda cs: -sign * cs[1])[: self.history]
        return self._ask("sample", self.sample_n, best, timeout)

    def _ask(
        self,
        kind: Kind,
        n: int,
        history: Sequence[tuple[dict[str, Any], float]],
        timeout: float | None,
    ) -> list[dict[str, Any]]:
        self._requests += 1
        return propose(
            self.llm,
            self.model,
            self.context,
            kind=kind,
            n=n,
            history=history,
            greater_is_better=self.greater_is_better,
            alpha=self.alpha,
            seed=self.seed + 1000 * (self._requests - 1),
            timeout=timeout,
            stats=self.stats,
        )
