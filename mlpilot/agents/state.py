"""The run's state: typed, checkpointed by LangGraph after every node.

Nodes return partial states; each field has one type, so an agent added later
adds a field, not a dict key that every reader re-validates.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Annotated, Any, TypedDict

from pydantic import BaseModel, Field

from mlpilot.agents.planner import Plan, Step
from mlpilot.agents.verifier import Check


@dataclass(frozen=True)
class TrialRow:
    """One trial of the run as the verifier, ensembler and report see it."""

    key: str  # "family-number"
    family: str
    number: int
    params: dict[str, Any]
    source: str  # "default", "portfolio", "llm-warmstart", "llm-sample" or "tpe"
    seconds: float
    reason: str  # why it failed or was pruned ("" when neither)
    state: str  # Optuna's state name
    cv_score: float | None  # set for finished trials only
    holdout_score: float | None
    started: float  # a timestamp, for the history plot

    @property
    def finished(self) -> bool:
        return self.cv_score is not None


class FamilySummary(BaseModel):
    """What tuning one family gave."""

    trials: int
    failed: int
    pruned: int = 0  # stopped after their first fold
    best: float | None = None
    llm: dict[str, Any] | None = None  # the LLM's proposals (ProposalStats' fields)
    stopped: str | None = None  # why the family got no more trials


class EnsembleSummary(BaseModel):
    """The ensemble step's outcome: the nested comparison of single best, greedy,
    stacking and the neural ensembler, and the combination chosen."""

    kept: bool
    score: float
    best_single: float
    best_single_name: str
    weights: dict[str, float]
    method: str = "greedy"  # single, greedy, stacking or neural
    nested: dict[str, float | None] = Field(default_factory=dict)  # nested OOF scores
    members: list[str] = Field(default_factory=list)  # the combiner's members, in order
    params: dict[str, Any] = Field(default_factory=dict)  # the combiner's, as lists
    note: str = ""
    # greedy's blend when a combiner was chosen (the fallback if it cannot be verified)
    greedy_weights: dict[str, float] = Field(default_factory=dict)
    greedy_score: float | None = None
    # greedy's ensemble won, but too few of its members could be re-run in the time left
    unaffordable: bool = False


class FeatureRecord(BaseModel):
    """One proposed feature and what became of it."""

    round: int
    formula: str  # how it is written, also its column name: "debt / income"
    spec: dict[str, Any]  # {"op", "a", "b"} for mlpilot.tools.featurize, or {"code"}
    family: str  # unary, arithmetic, categorical, groupby, date, text; "code" for free code
    reason: str = ""  # the model's one-line reason
    # the model's own formula where the data chose another arithmetic operator on the
    # same columns (see mlpilot.agents.features.prefer_operator); "" otherwise
    proposed: str = ""
    # "kept", "rejected" (by the noise gate), "invalid" (not computable or not a usable
    # input), "refused" (a possible leak: tracks the row order, or is the answer itself),
    # "helps" (free code that passed the gate: reported, never delivered)
    verdict: str
    why: str = ""  # the gate's numbers, or what made it invalid
    gain: float | None = None  # the block's mean CV gain (positive is better)
    se: float | None = None  # its corrected standard error


class FeatureSummary(BaseModel):
    """The feature step's outcome: what it kept, everything it tried, what it cost."""

    kept: list[dict[str, Any]] = Field(default_factory=list)  # feature specs, in order
    records: list[FeatureRecord] = Field(default_factory=list)
    rounds: int = 0
    evaluator: str = ""  # the fast model gains are measured with
    base_score: float | None = None  # its repeated-CV score without the kept features
    score: float | None = None  # ... and with them
    seconds: float = 0.0
    tokens: int = 0
    cost_usd: float = 0.0
    stopped: str = ""  # why the step ended
    notes: list[str] = Field(default_factory=list)  # errors fed back, in order
    dropped: str = ""  # set when the verifier dropped the kept features, with the reason

    @property
    def features(self) -> dict[str, Any] | None:
        """The feature set the trials and the final model use (None: no features)."""
        if not self.kept or self.dropped:
            return None
        return {"features": [dict(f) for f in self.kept], "drop": []}


class NasSummary(BaseModel):
    """What the pruning step found (every score computed by the host).

    ``candidates`` and ``baselines`` hold the evaluated sub-networks as dicts of
    :class:`mlpilot.agents.nas.Candidate`'s fields; ``full`` and ``chosen`` are two of them.
    """

    text_column: str
    device: str
    model_dir: str
    full: dict[str, Any]
    chosen: dict[str, Any]
    why: str
    candidates: list[dict[str, Any]] = Field(default_factory=list)
    baselines: dict[str, list[dict[str, Any]]] = Field(default_factory=dict)
    hypervolume: dict[str, dict[str, float]] = Field(default_factory=dict)
    reference_point: dict[str, list[float]] = Field(default_factory=dict)
    seconds: dict[str, float] = Field(default_factory=dict)
    settings: dict[str, Any] = Field(default_factory=dict)
    host: dict[str, Any] = Field(default_factory=dict)  # finalize's own measurements
    sandbox: dict[str, Any] = Field(default_factory=dict)  # SandboxInfo's fields, last job


class SandboxInfo(BaseModel):
    """Where the final model's jobs ran."""

    backend: str = ""
    network_isolated: bool = False
    isolation: str = "none"
    gpus: str = "none"


class FinalModel(BaseModel):
    """The delivered model, or why there is none."""

    ok: bool = False
    label: str | None = None  # "ensemble" or a trial key
    weights: dict[str, float] = Field(default_factory=dict)
    cv_score: float | None = None
    holdout_score: float | None = None
    description: str = "no verified model"
    sandbox: SandboxInfo | None = None
    # the rows the delivered model learned from: "all" (training rows and holdout,
    # refit once the holdout was scored) or "train" (the model the holdout scored)
    refit: str = "train"
    rows: int | None = None
    refit_note: str = ""

    @property
    def family(self) -> str | None:
        if not self.ok or self.label is None:
            return None
        if self.label in ("ensemble", "greedy"):
            return "ensemble"
        return self.label.rsplit("-", 1)[0]


class RunState(TypedDict, total=False):
    plan: Plan
    step: int  # the next step of the plan to run
    features: FeatureSummary | None
    hpo: dict[str, FamilySummary]
    ensemble: EnsembleSummary | None
    nas: NasSummary | None
    trials: list[TrialRow]  # every trial, best finished first (set once tuning is over)
    final: FinalModel
    checks: list[Check]
    verified: list[str]  # finished trials' keys, less those a fold-by-fold re-run refuted
    reruns: list[str]  # the final candidates whose fold-by-fold re-run agreed
    events: Annotated[list[str], operator.add]
    status: str


# Types the checkpointer may rebuild from a checkpoint (and no others).
CHECKPOINT_TYPES = [
    (cls.__module__, cls.__name__)
    for cls in (
        Plan,
        Step,
        Check,
        TrialRow,
        FamilySummary,
        EnsembleSummary,
        SandboxInfo,
        FinalModel,
        FeatureRecord,
        FeatureSummary,
        NasSummary,
    )
]

__all__ = [
    "CHECKPOINT_TYPES",
    "EnsembleSummary",
    "FamilySummary",
    "FeatureRecord",
    "FeatureSummary",
    "FinalModel",
    "NasSummary",
    "RunState",
    "SandboxInfo",
    "TrialRow",
]
