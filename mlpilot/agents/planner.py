"""Natural language -> a typed Plan, grounded in shipped recipes and past runs.

The planner shows the LLM the data profile and the most similar recipes and
past runs (retrieval, as in AutoML-Agent), and asks for a plan through
constrained decoding. An invalid plan is re-asked; if the LLM is unavailable,
over budget or still invalid, a deterministic default plan is used and the
plan says why.
"""

from __future__ import annotations

import json
import math
import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from mlpilot import prompts
from mlpilot.errors import ConfigError
from mlpilot.llm import LLM, LLMError, LLMTimeout, StructuredOutputError, structured
from mlpilot.task import TaskSpec
from mlpilot.tools.profile import DataProfile, prompt_context
from mlpilot.tools.search_spaces import (
    DEFAULT_FAMILIES,
    FAMILY_NOTES,
    SPACES,
    affordable,
    available,
)
from mlpilot.tools.text_embed import column_tokens

# each kind is a node of the run's graph
StepKind = Literal["features", "hpo", "ensemble", "nas_prune"]
Family = Literal[
    "hist_gradient_boosting",
    "lightgbm",
    "random_forest",
    "extra_trees",
    "linear",
    "minilm",
    "knn",
    "svm",
    "mlp",
]
RELEVANT = 4.0  # a recipe scoring below this does not fit the task (problem type + modality)


class Step(BaseModel):
    """One step of a plan: engineer features (``features``, with its ``share`` of the
    time budget), tune ``families`` (``hpo``), ensemble the trials so far, or prune
    a fine-tuned transformer text classifier (``nas_prune``, with the request's
    constraint: accuracy ``tolerance``, size or latency target, and objective)."""

    kind: StepKind
    families: list[Family] = Field(default_factory=list, max_length=7)
    share: float | None = Field(None, gt=0, lt=1)
    text_column: str | None = None
    tolerance: float | None = Field(None, ge=0, lt=1)
    max_params: float | None = Field(None, gt=0, le=1)
    max_latency_ms: float | None = Field(None, gt=0)
    objective: Literal["params", "latency"] | None = None


class Plan(BaseModel):
    """What the run will do, in order, and with which budgets."""

    steps: list[Step] = Field(min_length=1, max_length=8)
    # a pruning plan tunes no family: its model is the transformer it prunes
    families: list[Family] = Field(default_factory=list, max_length=7)
    metric: str
    time_budget_s: float = Field(gt=0)
    max_trials: int = Field(ge=1)
    source: str = "default"
    notes: str = ""


RATIONALE_CHARS = 160
# What the planner's prompt says of each family: only what tells them apart (the
# prompt is read at ~65 tokens/s by the embedded model on two cores).
PLAN_NOTES = {
    "hist_gradient_boosting": "boosted trees (scikit-learn)",
    "lightgbm": "boosted trees, early stopping, native categoricals",
    "random_forest": "",
    "extra_trees": "",
    "linear": "logistic or ridge regression",
    "minilm": "sentence embeddings of the text + logistic regression",
    "knn": "",
    "svm": "RBF kernel; slow above 10k rows",
    "mlp": "small neural network",
}
MIN_FAMILIES = 3  # a plan tunes at least this many families (ensembles need variety)


class PlanDraft(BaseModel):
    """What the LLM decides; budgets and metric stay with the user's request.

    Ensembling is not the LLM's to drop: it is cheap and kept only when it beats the
    best single model out of fold. The best-matching recipe's lead family is always
    tuned (first on text data, else after the LLM's choices), and a draft with fewer
    than ``MIN_FAMILIES`` families is topped up from that recipe.
    """

    families: list[Family] = Field(min_length=1, max_length=5)
    # Short: on two cores each token of the plan costs ~50 ms of the budget. The schema
    # bounds it for constrained decoding; a longer answer is cut, not re-asked.
    rationale: str = Field("", json_schema_extra={"maxLength": RATIONALE_CHARS})

    @field_validator("rationale")
    @classmethod
    def _cut(cls, text: str) -> str:
        text = text.strip()
        if len(text) < RATIONALE_CHARS:
            return text
        cut = text[:RATIONALE_CHARS].rsplit(" ", 1)[0].rstrip(",;:")  # at a word's end
        return cut + "…"


def pruning_plan(
    request: str, task: TaskSpec, *, time_budget_s: float, max_trials: int
) -> Plan | None:
    """The plan of a request to make a text classifier smaller or faster, with the
    constraint read from its words (:mod:`mlpilot.agents.nas_request`); None for any
    other request.

    Raises:
        ConfigError: the request asks for pruning but the data has no text column, or
            the task is not classification.
    """
    from mlpilot.agents.nas_request import asks_for_pruning, read_pruning_request

    if not asks_for_pruning(request):
        return None
    if not task.text_columns:
        raise ConfigError(
            "the request asks for a smaller text classifier, but the data has no text "
            f"column (columns: {', '.join(task.feature_columns[:8])}); pruning works on a "
            "fine-tuned transformer that reads one column of free text"
        )
    if not task.is_classification:
        raise ConfigError(
            f"pruning prunes a text classifier, but the target {task.target!r} is "
            f"{task.problem_type}; give a categorical target"
        )
    ask = read_pruning_request(request)
    column = max(task.text_columns, key=lambda c: task.train[c].astype(str).str.len().mean())
    step = Step(
        kind="nas_prune",
        text_column=column,
        tolerance=ask.tolerance,
        max_params=ask.max_params,
        max_latency_ms=ask.max_latency_ms,
        objective=ask.objective,  # type: ignore[arg-type]
    )
    others = [c for c in task.text_columns if c != column]
    note = f"prune a fine-tuned MiniLM-L6 on {column!r} ({ask.said}; read from the request)"
    if others:
        note += f"; the other text columns ({', '.join(others)}) are not read"
    return Plan(
        steps=[step],
        families=[],
        metric=task.metric.name,
        time_budget_s=time_budget_s,
        max_trials=max_trials,
        source="request",
        notes=note,
    )


FEATURES_SHARE = 0.25  # of the time budget, for a planned feature step
# Below this budget a feature step is planned only when asked for: one round of the
# embedded model (prompt, answer, repeated CV) takes most of a minute on two cores.
MIN_FEATURES_BUDGET_S = 240.0
_ASK_FEATURES = re.compile(
    r"feature engineering|engineer\w*\s+(?:\w+\s+)?features|"
    r"\b(?:better|new|more|find|add|create|derive|extra|good)\s+features",
    re.IGNORECASE,
)
_NO_FEATURES = re.compile(
    r"\b(?:no|without|skip|don'?t)\s+(?:\w+\s+)?features?|without feature engineering",
    re.IGNORECASE,
)
# names that say nothing about what a column means: x1, V12, f_3, col7, feature_12
_OPAQUE_NAME = re.compile(r"^(?:x|v|f|c|col|column|feature|feat|var|att|attr|a)[_\s-]?\d+$", re.I)


def interpretable(columns: list[str]) -> bool:
    """Whether most column names are words (what the LLM can reason about)."""
    if not columns:
        return False
    words = [
        c for c in columns if not _OPAQUE_NAME.match(c.strip()) and re.search(r"[a-z]{3}", c, re.I)
    ]
    return len(words) >= 0.6 * len(columns)


def feature_step(
    request: str,
    task: TaskSpec,
    *,
    description: str,
    has_llm: bool,
    time_budget_s: float,
    choice: bool | None = None,
) -> tuple[Step | None, str]:
    """Whether the run engineers features first, and why (for the plan's notes).

    Planned when the user asks ("find better features", ``choice=True``), or by
    default for tabular data with a description or interpretable column names and a
    budget of at least ``MIN_FEATURES_BUDGET_S``; never without an LLM (it proposes
    the features) or when the user says no (``choice=False``, "no feature engineering").
    """
    asked = choice is True or (choice is None and bool(_ASK_FEATURES.search(request)))
    refused = choice is False or (choice is None and bool(_NO_FEATURES.search(request)))
    if refused:
        return None, "no feature step: the request says so"
    if not has_llm:
        return None, ("no feature step: it needs an LLM" if asked else "")
    step = Step(kind="features", share=FEATURES_SHARE)
    if asked:
        return step, "feature step: asked for"
    if task.modality != "tabular":
        return None, ""
    meaningful = description.strip() != "" or interpretable(list(task.feature_columns))
    if not meaningful:
        return None, "no feature step: the columns have no meaningful names and no description"
    if time_budget_s < MIN_FEATURES_BUDGET_S:
        return None, (
            f"no feature step: {time_budget_s:.0f} s is short for it (planned from "
            f"{MIN_FEATURES_BUDGET_S:.0f} s, or when asked for)"
        )
    return step, "feature step: tabular data with " + (
        "a description" if description.strip() else "meaningful column names"
    )


def with_feature_step(plan: Plan, step: Step | None, note: str) -> Plan:
    """``plan`` with the feature step first (if any) and ``note`` in its notes."""
    steps = [s for s in plan.steps if s.kind != "features"]
    if step is not None:
        steps.insert(0, step)
    notes = "; ".join(n for n in (plan.notes, note) if n)
    return plan.model_copy(update={"steps": steps, "notes": notes})


def load_recipes() -> list[dict[str, Any]]:
    text = resources.files("mlpilot.agents").joinpath("recipes.json").read_text()
    return json.loads(text)


def past_runs(store: Path | None) -> list[dict[str, Any]]:
    """Summaries of finished runs under ``store`` (each run directory's run.json)."""
    if store is None or not store.is_dir():
        return []
    out = []
    for path in sorted(store.glob("*/run.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if data.get("status") == "finished" and data.get("profile"):
            out.append(data)
    return out


def _recipe_score(recipe: dict[str, Any], task: TaskSpec, profile: DataProfile) -> float:
    score = 0.0
    if task.problem_type in recipe.get("problem_types", []):
        score += 2
    if bool(recipe.get("text")) == (task.modality == "text"):
        score += 2
    rows = profile.n_rows
    if rows <= recipe.get("max_rows", math.inf) and rows >= recipe.get("min_rows", 0):
        score += 1
    if "min_categorical_share" in recipe:
        cat_share = profile.n_categorical / max(1, profile.n_features)
        score += 1.5 if cat_share >= recipe["min_categorical_share"] else -3
    return score


def _run_score(run: dict[str, Any], task: TaskSpec, profile: DataProfile) -> float:
    p = run["profile"]
    score = 2.0 if run.get("problem_type") == task.problem_type else 0.0
    score -= abs(math.log10(max(1, p.get("n_rows", 1))) - math.log10(max(1, profile.n_rows)))
    score -= 0.05 * abs(p.get("n_features", 0) - profile.n_features)
    return score


def retrieve(task: TaskSpec, profile: DataProfile, store: Path | None, k: int = 3) -> list[str]:
    """The best-matching recipe and the most similar past runs, as short lines for the
    prompt (at most ``k``).

    Only the closest recipe is shown, and only if it fits the problem type and
    modality: on a small local model every line of the prompt costs budget (the
    planner's prompt is read at ~65 tokens/s on two cores).
    """
    lines: list[tuple[float, str]] = []
    scored = [(_recipe_score(r, task, profile), r) for r in load_recipes()]
    top = max((score for score, _ in scored), default=0.0)
    for score, r in scored:
        if score >= RELEVANT and score == top:
            text = f"recipe '{r['name']}': try {', '.join(r['families'])}. {r['notes']}"
            lines.append((score, text))
    for run in past_runs(store):
        text = (
            f"past run on '{run.get('name')}' ({run['profile'].get('n_rows')} rows, "
            f"{run.get('problem_type')}): best was {run.get('best_family')} with "
            f"{run.get('metric')} {run.get('best_score')}"
        )
        lines.append((_run_score(run, task, profile) + 1.0, text))
    lines.sort(key=lambda item: -item[0])
    return [text for _, text in lines[:k]]


def default_plan(
    task: TaskSpec, profile: DataProfile, *, time_budget_s: float, max_trials: int, reason: str
) -> Plan:
    """The deterministic plan: the best-matching recipe's families, then an ensemble."""
    recipes = load_recipes()
    best = max(recipes, key=lambda r: _recipe_score(r, task, profile))
    usable = usable_families(task, time_budget_s)
    families = [f for f in best["families"] if f in usable][:4] or list(DEFAULT_FAMILIES)
    return _assemble(task, families, True, time_budget_s, max_trials, f"default ({reason})", "")


def usable_families(task: TaskSpec, time_budget_s: float) -> list[str]:
    """The families that can run on this task here: installed, reading what the data
    holds, and affordable in the budget (a minilm trial embeds every text)."""
    rows = len(task.train) + len(task.holdout.features)
    text = bool(task.text_columns)
    tokens = column_tokens(task.train, task.text_columns)
    return [
        f
        for f in SPACES
        if available(f, text=text)
        and affordable(f, rows=rows, time_budget_s=time_budget_s, max_length=tokens)
    ]


def _assemble(
    task: TaskSpec,
    families: list[str],
    ensemble: bool,
    time_budget_s: float,
    max_trials: int,
    source: str,
    notes: str,
) -> Plan:
    steps = [Step(kind="hpo", families=families)]  # type: ignore[arg-type]
    if ensemble:
        steps.append(Step(kind="ensemble"))
    return Plan(
        steps=steps,
        families=families,  # type: ignore[arg-type]
        metric=task.metric.name,
        time_budget_s=time_budget_s,
        max_trials=max_trials,
        source=source,
        notes=notes,
    )


PLAN_MAX_TOKENS = 250  # a plan's answer: a few family names and a short rationale


def plan_messages(
    request: str,
    task: TaskSpec,
    profile: DataProfile,
    *,
    time_budget_s: float,
    store: Path | None = None,
) -> list[dict[str, str]]:
    """The planner's prompt, as the run sends it."""
    user = prompts.render(
        "planner",
        **prompt_context(task, profile),
        request=request,
        time_budget_s=round(time_budget_s),
        families={
            f: PLAN_NOTES.get(f, FAMILY_NOTES[f]) for f in usable_families(task, time_budget_s)
        },
        retrieved=retrieve(task, profile, store),
    )
    return [
        {"role": "system", "content": prompts.render("system")},
        {"role": "user", "content": user},
    ]


def make_plan(
    llm: LLM | None,
    request: str,
    task: TaskSpec,
    profile: DataProfile,
    *,
    time_budget_s: float,
    max_trials: int,
    store: Path | None = None,
    timeout: float | None = None,
) -> Plan:
    """Turns the request into a Plan with the LLM, or falls back to the default plan.

    ``timeout`` bounds the LLM exchange (re-asks included); past it the default plan
    is used."""
    if llm is None:
        return default_plan(
            task, profile, time_budget_s=time_budget_s, max_trials=max_trials, reason="no LLM"
        )
    messages = plan_messages(request, task, profile, time_budget_s=time_budget_s, store=store)
    try:
        draft = structured(
            llm,
            messages,
            PlanDraft,
            role="planner",
            temperature=0.0,
            max_tokens=PLAN_MAX_TOKENS,
            seed=0,
            timeout=timeout,
        )
    except (LLMError, StructuredOutputError) as e:
        return default_plan(
            task,
            profile,
            time_budget_s=time_budget_s,
            max_trials=max_trials,
            reason=(
                f"the LLM did not plan within its {timeout:.0f} s share of the budget"
                if isinstance(e, LLMTimeout)
                else f"LLM unavailable: {type(e).__name__}: {str(e)[:160]}"
            ),
        )
    usable = usable_families(task, time_budget_s)
    asked = list(dict.fromkeys(draft.families))  # keep order, drop repeats
    families = [f for f in asked if f in usable]
    notes = draft.rationale
    if len(families) < len(asked):
        left = ", ".join(f for f in asked if f not in usable)
        notes = f"{notes}; not run here: {left} (not installed, no text, or the budget is short)"
    fallback = default_plan(task, profile, time_budget_s=time_budget_s, max_trials=1, reason="")
    lead = fallback.families[0]  # the best-matching recipe's first family always runs
    if lead not in families:
        # on text it runs first: trees on sparse TF-IDF may not finish one fit in budget
        families.insert(0 if task.modality == "text" else len(families), lead)
    for family in fallback.families:
        if len(families) >= MIN_FAMILIES:
            break
        if family not in families:
            families.append(family)
    return _assemble(
        task,
        families,
        True,
        time_budget_s,
        max_trials,
        f"llm ({llm.model})",
        notes,
    )
