"""The run's pruning step and its verification: the graph nodes around the NAS agent.

``nas_prune_node`` runs :class:`mlpilot.agents.nas.NasAgent` on the task's text
column and training rows (never the holdout), with the constraint the planner
read from the request. ``nas_finalize_node`` then measures the shipped model on
the host: its holdout score, the full fine-tuned model's on the same rows, its
parameters against what the search claimed, its file size and CPU latency; the
report's numbers are these.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from langgraph.runtime import Runtime

from mlpilot.agents.context import RunContext
from mlpilot.agents.state import FinalModel, NasSummary, RunState, SandboxInfo
from mlpilot.agents.verifier import Check, check_budget
from mlpilot.tools.metrics import predictions_for
from mlpilot.tools.model import PilotModel
from mlpilot.tools.text_embed import max_tokens
from mlpilot.tools.text_model import PrunedTextClassifier

NAS_DIR = "nas"  # the agent's folder inside the run directory
BUDGET_MARGIN_S = 15.0


def nas_settings(ctx: RunContext, step: Any, texts: list[str]) -> Any:
    from mlpilot.agents.nas import NasSettings

    fixed: dict[str, Any] = {"max_length": max_tokens(texts), "seed": ctx.task.seed}
    for name in ("tolerance", "max_params", "max_latency_ms", "objective"):
        value = getattr(step, name)
        if value is not None:
            fixed[name] = value
    if ctx.nas:
        fixed.update(ctx.nas)
    left = max(30.0, ctx.remaining() - 20.0)  # the host's measurements and the report
    return NasSettings.for_budget(left, len(texts), **fixed)


def nas_prune_node(state: RunState, runtime: Runtime[RunContext]) -> RunState:
    from mlpilot.agents.nas import NasAgent, NasStore

    ctx = runtime.context
    plan, step_index = state["plan"], state.get("step", 0)
    step = plan.steps[step_index]
    column = step.text_column or ctx.task.text_columns[0]
    texts = ctx.task.train[column].tolist()
    settings = nas_settings(ctx, step, texts)

    def progress(phase: str, details: dict[str, Any]) -> None:
        ctx.emit("nas", phase=phase, **details)

    agent = NasAgent(
        ctx.sandbox,
        NasStore(ctx.run.path / NAS_DIR),
        texts,
        ctx.task.y.tolist(),
        settings,
        progress=progress,
    )
    result = agent.run()

    def row(c: Any) -> dict[str, Any]:
        return dataclasses.asdict(c)

    summary = NasSummary(
        text_column=column,
        device=result.device,
        model_dir=str(result.model_dir),
        full=row(result.full),
        chosen=row(result.chosen),
        why=result.why,
        candidates=[row(c) for c in result.candidates],
        baselines={k: [row(c) for c in v] for k, v in result.baselines.items()},
        hypervolume=result.hypervolume,
        reference_point={k: list(v) for k, v in result.reference_point.items()},
        seconds=result.seconds,
        settings=dataclasses.asdict(settings),
        sandbox=agent.last_sandbox,
    )
    ratio = result.chosen.params_ratio
    return {
        "nas": summary,
        "step": step_index + 1,
        "events": [
            f"pruned: {len(result.candidates)} sub-networks searched on {result.device}; "
            f"chose one with {ratio:.0%} of the encoder ({result.why})"
        ],
    }


def _holdout(ctx: RunContext, model: PilotModel) -> float:
    """The model's holdout score, computed by the task (whose labels stay private)."""
    task = ctx.task
    raw = model.predict_proba(task.holdout.features)
    return float(task.score_holdout(predictions_for(task.metric, raw, list(model.classes_))))


def nas_finalize_node(state: RunState, runtime: Runtime[RunContext]) -> RunState:
    """The host's verification of the pruned model and the delivered model."""
    from mlpilot.tools.pruning import TextPredictor, param_counts

    ctx = runtime.context
    task = ctx.task
    nas = state["nas"]
    assert nas is not None
    settings = nas.settings
    column = nas.text_column
    pruned_dir = Path(nas.model_dir)
    full_dir = pruned_dir.parent / "finetune"
    checks: list[Check] = []
    measured: dict[str, Any] = {}
    models: dict[str, PilotModel] = {}
    latency_texts = task.holdout.features[column].astype(str).tolist()[:32]
    for name, folder in (("pruned", pruned_dir), ("fine-tuned", full_dir)):
        estimator = PrunedTextClassifier.from_folder(folder, column, settings["max_length"])
        model = PilotModel.wrap(estimator, [column], task.target, task.problem_type)
        models[name] = model
        predictor = TextPredictor(folder, max_length=settings["max_length"]).load()
        start = time.monotonic()
        score = _holdout(ctx, model)
        measured[name] = {
            "holdout": score,
            "params": param_counts(predictor.model),
            "file_mb": round((folder / "model.safetensors").stat().st_size / 1e6, 3),
            "latency_ms": predictor.latency_ms(latency_texts),
            "seconds": round(time.monotonic() - start, 2),
        }
    claimed = int(nas.chosen["params"])
    counted = measured["pruned"]["params"]["encoder"]
    checks.append(
        Check(
            "pruned model's size",
            counted == claimed,
            f"the saved model's encoder has {counted:,} parameters; the search claimed "
            f"{claimed:,} for the chosen sub-network",
        )
    )
    greater = task.metric.greater_is_better
    loss = measured["fine-tuned"]["holdout"] - measured["pruned"]["holdout"]
    loss = loss if greater else -loss
    tolerance = float(settings["tolerance"])
    metric = task.metric.display
    checks.append(
        Check(
            "pruned model on the holdout",
            loss <= tolerance + 1e-12,
            f"{metric} {measured['pruned']['holdout']:.4f} against the fine-tuned model's "
            f"{measured['fine-tuned']['holdout']:.4f} on {len(task.holdout.features)} holdout rows "
            f"(a loss of {loss * 100:+.1f} points; the tolerance is {tolerance * 100:g})",
        )
    )
    checks.append(check_budget(ctx.elapsed(), ctx.time_budget_s, BUDGET_MARGIN_S))
    delivered = models["pruned"]
    ctx.run.save_model(delivered)
    chosen = nas.chosen
    final = FinalModel(
        ok=checks[0].ok,
        label="nas-pruned",
        cv_score=None,
        holdout_score=measured["pruned"]["holdout"],
        description=(
            f"MiniLM-L6 fine-tuned on {column!r} and pruned to {chosen['params_ratio']:.0%} of "
            f"its encoder ({counted:,} parameters)"
            if chosen["params_ratio"] < 1.0
            else f"MiniLM-L6 fine-tuned on {column!r}, not pruned: no smaller sub-network "
            "was within the tolerance, so the super-network's full model is delivered"
        ),
        refit="train",
        rows=len(task.train),
        refit_note=(
            "the pruned model learned from the training rows less the validation split "
            "that chose it, none of the holdout; the holdout score describes it"
        ),
        sandbox=SandboxInfo(**nas.sandbox)
        if nas.sandbox
        else SandboxInfo(backend=ctx.sandbox.name),
    )
    nas = nas.model_copy(update={"host": measured})
    return {
        "nas": nas,
        "final": final,
        "trials": [],
        "checks": checks,
        "verified": [],
        "reruns": [],
        "events": [
            f"final model: {final.description}; holdout {metric} "
            f"{measured['pruned']['holdout']:.4f} (fine-tuned: "
            f"{measured['fine-tuned']['holdout']:.4f})"
        ],
    }
