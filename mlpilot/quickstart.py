"""The main job on embedded defaults: a bundled dataset, the embedded model
proposing a model, sandboxed cross-validation, and host-verified scores.

The LLM's proposal is trained next to a default configuration; both run in
the sandbox and return predictions, and the scores shown are the ones the
host recomputed from those predictions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, Field

from mlpilot import prompts
from mlpilot.agents.trials import TrialRunner
from mlpilot.llm import LLM, LLMError, LLMUnavailable, StructuredOutputError, structured
from mlpilot.sandbox import Limits, Sandbox
from mlpilot.task import TaskSpec
from mlpilot.tools.profile import PROBLEM_WORDS, profile_frame

Family = Literal["random_forest", "extra_trees", "hist_gradient_boosting", "logistic_regression"]
FAMILIES: tuple[str, ...] = Family.__args__  # type: ignore[attr-defined]


class QuickProposal(BaseModel):
    """One model family with its hyperparameters, as the LLM proposes it."""

    family: Family
    n_estimators: int = Field(200, ge=10, le=500)
    max_depth: int | None = Field(None, ge=1, le=32)
    learning_rate: float = Field(0.1, ge=0.001, le=1.0)
    C: float = Field(1.0, ge=0.001, le=1000.0)
    rationale: str = Field("", max_length=300)

    def params(self) -> dict[str, Any]:
        return self.model_dump(exclude={"family", "rationale"})


DEFAULT_PROPOSAL = QuickProposal(
    family="random_forest", n_estimators=200, rationale="default configuration (no LLM)"
)

BUNDLED: dict[str, tuple[str, str]] = {
    # name: (scikit-learn loader, request)
    "breast_cancer": ("load_breast_cancer", "predict target (malignant or benign), optimise AUC"),
    "wine": ("load_wine", "predict the wine class target, optimise accuracy"),
    "diabetes": ("load_diabetes", "predict target (disease progression), minimise RMSE"),
}


def bundled_dataset(name: str) -> tuple[pd.DataFrame, str]:
    """A dataset bundled with scikit-learn, as (frame, request)."""
    from mlpilot.errors import ConfigError

    if name not in BUNDLED:
        raise ConfigError(f"unknown bundled dataset {name!r}; known: {', '.join(BUNDLED)}")
    import sklearn.datasets

    loader, request = BUNDLED[name]
    frame = getattr(sklearn.datasets, loader)(as_frame=True).frame
    return frame, request


@dataclass
class CandidateResult:
    """One trained configuration and its host-verified scores."""

    label: str
    family: str
    params: dict[str, Any]
    cv_score: float | None = None
    holdout_score: float | None = None
    seconds: float = 0.0
    verified: bool = False
    note: str = ""


@dataclass
class QuickstartResult:
    task: TaskSpec
    llm_model: str | None
    llm_note: str
    proposal: QuickProposal
    candidates: list[CandidateResult] = field(default_factory=list)
    usage: list[dict[str, object]] = field(default_factory=list)
    sandbox: str = ""
    network_isolated: bool = False


def propose(llm: LLM | None, task: TaskSpec) -> tuple[QuickProposal, str]:
    """Asks the LLM for a configuration; falls back to the default and says why."""
    if llm is None:
        return DEFAULT_PROPOSAL, "no LLM configured: default configuration used"
    profile = profile_frame(
        task.X, task.y, text_columns=task.text_columns, classification=task.is_classification
    )
    messages = [
        {"role": "system", "content": prompts.render("quickstart_system")},
        {
            "role": "user",
            "content": prompts.render(
                "quickstart_proposal",
                task=task,
                profile=profile,
                problem=PROBLEM_WORDS[task.problem_type],
                families=FAMILIES,
            ),
        },
    ]
    try:
        proposal = structured(
            llm, messages, QuickProposal, role="quickstart", temperature=0.0, max_tokens=300, seed=0
        )
    except (LLMUnavailable, StructuredOutputError, LLMError) as e:
        return DEFAULT_PROPOSAL, f"LLM unavailable ({e}); default configuration used"
    return proposal, f"proposed by {llm.model}"


def run_quickstart(
    llm: LLM | None, sandbox: Sandbox, *, dataset: str = "breast_cancer", seed: int = 0
) -> QuickstartResult:
    """Runs the main job: propose, train in the sandbox, verify on the host."""
    frame, request = bundled_dataset(dataset)
    task = TaskSpec.from_data(frame, request=request, seed=seed, name=dataset)
    proposal, note = propose(llm, task)
    result = QuickstartResult(
        task=task,
        llm_model=llm.model if llm else None,
        llm_note=note,
        proposal=proposal,
        sandbox=sandbox.name,
    )
    runs = [
        (
            "LLM" if llm and "proposed" in note else "fallback",
            proposal.family,
            proposal.params(),
        )
    ]
    default = DEFAULT_PROPOSAL
    if (proposal.family, proposal.params()) != (default.family, default.params()):
        runs.append(("default", default.family, default.params()))
    runner = TrialRunner(sandbox, task, limits=Limits(timeout_s=600))
    for label, family, params in runs:
        outcome = runner.run(family, params)
        result.candidates.append(
            CandidateResult(
                label=label,
                family=family,
                params=params,
                cv_score=outcome.cv_score,
                holdout_score=outcome.holdout_score,
                seconds=outcome.seconds,
                verified=outcome.ok and outcome.verified,
                note=outcome.reason,
            )
        )
    result.network_isolated = runner.last_network_isolated
    if llm is not None:
        result.usage = llm.ledger.as_rows()
    return result
