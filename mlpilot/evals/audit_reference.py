"""What the data rewards: a search over the audit's operators on each dataset, and
the accuracy of no new features, the LLM's and the reference's.

The candidates are every operator of :data:`mlpilot.tools.featurize.OPS` on the
dataset's columns, within caps: the unary operators on each number column, the
arithmetic ones on each pair of number columns, frequency encoding and pairs of
categories, and the group-by aggregations of the strongest number columns over each
grouping column (a category, or a number with few distinct values). Features are
computed by :class:`~mlpilot.tools.featurize.FeatureBuilder`, so group statistics
are learnt on training rows and applied row by row (the paper's reference code
computed them on whatever batch it was given). A candidate the agent's checks would
refuse (constant, infinite, a copy, the answer itself) is left out.

The ranking job (:mod:`mlpilot.tools.reference_job`) runs in the sandbox: one
gradient-boosting model on the columns plus all candidates, each candidate's
permutation importance on held-out rows. The reference's suggestions are the
``n`` candidates with the largest positive importance. The accuracy job is the
feature agent's repeated, paired cross-validation (:class:`Evaluator`).
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlpilot.agents import feature_eval
from mlpilot.agents.feature_eval import Evaluator, check_values, column_kinds
from mlpilot.agents.trials import job_outputs, parquet_bytes
from mlpilot.sandbox import Job, Limits, SandboxError, make_sandbox
from mlpilot.task import TaskSpec
from mlpilot.tools import cv_job, featurize
from mlpilot.tools.data import plain_numbers
from mlpilot.tools.featurize import OPS, FeatureBuilder, formula

if TYPE_CHECKING:
    from mlpilot.evals.audit import AuditSettings

JOB = Path(cv_job.__file__).with_name("reference_job.py")
OPENFE_JOB = Path(cv_job.__file__).with_name("openfe_job.py")
MAX_NUMBERS = 8  # number columns whose unary and pairwise candidates are built
MAX_GROUP_VALUES = 4  # number columns aggregated by group
MAX_KEYS = 5  # grouping columns
MAX_KEY_VALUES = 50  # a grouping column has at most this many distinct values
MAX_ROWS = 4000  # rows the ranking job uses (a seeded sample of larger data)


def grouping_columns(task: TaskSpec, kinds: dict[str, set[str]]) -> list[str]:
    """Columns to group by: categories, and numbers with at most 10 distinct values,
    with 2 to ``MAX_KEY_VALUES`` values; the first ``MAX_KEYS``."""
    out = []
    for c in task.feature_columns:
        if c in task.text_columns or "date" in kinds[c]:
            continue
        distinct = task.train[c].nunique()
        few = "number" not in kinds[c] or distinct <= 10
        if few and 2 <= distinct <= MAX_KEY_VALUES:
            out.append(c)
    return out[:MAX_KEYS]


def strongest_numbers(task: TaskSpec, kinds: dict[str, set[str]], k: int) -> list[str]:
    """The ``k`` number columns strongest alone (all of them if there are fewer)."""
    numbers = [c for c in task.feature_columns if "number" in kinds[c]]
    if len(numbers) <= k:
        return numbers
    strength = {}
    for c in numbers:
        s = pd.to_numeric(task.train[c], errors="coerce").astype(float)
        strength[c] = feature_eval.strength_alone(s, task) or 0.0
    return sorted(numbers, key=lambda c: -strength[c])[:k]


def candidates(task: TaskSpec) -> list[dict[str, Any]]:
    """Every candidate feature on this data (specs), before the checks."""
    kinds = column_kinds(task)
    numbers = strongest_numbers(task, kinds, MAX_NUMBERS)
    keys = grouping_columns(task, kinds)
    out: list[dict[str, Any]] = []
    for name, op in OPS.items():
        if op.family == "unary":
            out += [{"op": name, "a": a} for a in numbers]
        elif op.family == "arithmetic":
            out += [{"op": name, "a": a, "b": b} for a, b in itertools.combinations(numbers, 2)]
        elif name == "frequency":
            out += [{"op": name, "a": a} for a in keys]
        elif name == "combine":
            out += [{"op": name, "a": a, "b": b} for a, b in itertools.combinations(keys, 2)]
        elif name == "group_count":
            out += [{"op": name, "a": a} for a in keys]
        elif op.family == "groupby":
            out += [
                {"op": name, "a": v, "b": k}
                for v in numbers[:MAX_GROUP_VALUES]
                for k in keys
                if v != k
            ]
        elif op.family in ("date", "text"):
            need = op.family
            out += [{"op": name, "a": a} for a in task.feature_columns if need in kinds[a]]
    return out


def usable(task: TaskSpec, specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The candidates whose values pass the feature agent's checks on the rows."""
    X = task.X
    kept = []
    for spec in specs:
        name = formula(spec)
        try:
            values = FeatureBuilder([spec]).fit(X).transform(X)[name].to_numpy()
        except (TypeError, ValueError, KeyError):
            continue
        if values.dtype != object:
            values = values.astype(float)
        if check_values(name, values, spec, task, X) is None:
            kept.append(spec)
    return kept


def training_frame(task: TaskSpec, seed: int) -> pd.DataFrame:
    """The training rows a reference job sees: a seeded sample of at most
    ``MAX_ROWS``, with plain numbers."""
    train = task.train
    if len(train) > MAX_ROWS:
        train = train.sample(MAX_ROWS, random_state=seed)
    return plain_numbers(train.reset_index(drop=True), skip=[task.target])


def rank(
    task: TaskSpec, specs: list[dict[str, Any]], sandbox: Any, *, seed: int = 0
) -> dict[str, tuple[float, float]]:
    """Each column's permutation importance (mean, sd) from the ranking job."""
    frame = training_frame(task, seed)
    config = {
        "problem_type": task.problem_type,
        "target": task.target,
        "seed": seed,
        "candidates": specs,
        "repeats": 3,
    }
    files: dict[str, bytes | Path] = {
        "config.json": json.dumps(config, default=str),
        "train.parquet": parquet_bytes(frame),
        "cv_job.py": Path(cv_job.__file__).read_bytes(),
        "featurize.py": Path(featurize.__file__).read_bytes(),
    }
    run = sandbox.run(Job(code=JOB.read_text(), files=files), limits=Limits(timeout_s=600))
    if not run.ok:
        raise SandboxError(f"the reference search failed: {run.summary()}"[:600])
    art = job_outputs(run, ("importance.json",))
    raw = json.loads(art["importance.json"])
    return {k: (float(v[0]), float(v[1])) for k, v in raw.items()}


def openfe(task: TaskSpec, n: int, sandbox: Any, *, seed: int = 0) -> dict[str, Any]:
    """OpenFE's ``n`` best features on the training rows (at most ``MAX_ROWS``), read
    into the audit's operator classes by :mod:`mlpilot.tools.openfe_job`."""
    frame = training_frame(task, seed)
    kinds = column_kinds(task)
    categorical = [c for c in task.feature_columns if "number" not in kinds[c]]
    config = {
        "problem_type": task.problem_type,
        "target": task.target,
        "seed": seed,
        "n": n,
        "categorical": categorical,
    }
    files: dict[str, bytes | Path] = {
        "config.json": json.dumps(config, default=str),
        "train.parquet": parquet_bytes(frame),
    }
    job = Job(code=OPENFE_JOB.read_text(), files=files)
    run = sandbox.run(job, limits=Limits(timeout_s=900))
    if not run.ok:
        raise SandboxError(f"OpenFE failed: {run.summary()}"[:600])
    return json.loads(job_outputs(run, ("openfe.json",))["openfe.json"])


def reference_features(
    importance: dict[str, tuple[float, float]], specs: list[dict[str, Any]], n: int
) -> list[dict[str, Any]]:
    """The ``n`` candidates with the largest positive importance, best first."""
    scored = [(importance.get(formula(s), (0.0, 0.0)), s) for s in specs]
    scored = [(imp, s) for imp, s in scored if imp[0] > 0]
    scored.sort(key=lambda item: -item[0][0])
    return [
        {**s, "formula": formula(s), "importance": imp[0], "sd": imp[1]} for imp, s in scored[:n]
    ]


def llm_blocks(task: TaskSpec, suggestions: list[dict[str, Any]], n: int) -> list[dict]:
    """The valid, checked typed suggestions of one answer as a feature block."""
    specs = []
    seen = set()
    for f in suggestions:
        if not f.get("valid") or f["op"] not in OPS:
            continue
        spec = {"op": f["op"], "a": f["a"], **({"b": f["b"]} if OPS[f["op"]].binary else {})}
        if formula(spec) in seen:
            continue
        seen.add(formula(spec))
        specs.append(spec)
    return usable(task, specs)[:n]


def run(
    settings: AuditSettings,
    out: Path,
    *,
    sandbox: str = "local-warm",
    on_progress: Callable[[str], None] = lambda _: None,
) -> None:
    """The reference and the accuracy of each condition, one dataset at a time,
    appended to ``reference.jsonl`` (resumable). For a dataset already done, the
    answers not scored yet (an LLM added to a finished audit) are scored in a
    top-up record that :func:`merged` folds into the first."""
    from mlpilot.evals.audit import append_jsonl, audit_task, load_dataset, read_jsonl, select

    path = out / "reference.jsonl"
    done = {r["dataset"]: r for r in merged(read_jsonl(path))}
    answers = read_jsonl(out / "suggestions.jsonl")
    box = make_sandbox(sandbox)
    try:
        for ds in select(settings.datasets):
            before = done.get(ds.name)
            if before is not None:
                scored = (before.get("scores") or {}).get("mean")
                missing = [a for a in answers if a["dataset"] == ds.name]
                missing = [a for a in missing if scored is not None and _scored(a)]
                missing = [a for a in missing if _label(a) not in scored]  # type: ignore[operator]
                if not settings.accuracy or not missing:
                    continue
                t0 = time.perf_counter()
                task = audit_task(ds, load_dataset(ds)[0])
                scores = accuracy(task, None, missing, settings, box)
                append_jsonl(
                    path,
                    {
                        "dataset": ds.name,
                        "top_up": True,
                        "scores": scores,
                        "seconds": round(time.perf_counter() - t0, 1),
                    },
                )
                on_progress(f"accuracy {ds.name}: {len(missing)} more answers scored")
                continue
            t0 = time.perf_counter()
            frame, _ = load_dataset(ds)
            task = audit_task(ds, frame)
            record: dict[str, Any] = {"dataset": ds.name, "problem_type": task.problem_type}
            specs = usable(task, candidates(task))
            record["candidates"] = len(specs)
            importance = rank(task, specs, box) if specs else {}
            top = reference_features(importance, specs, settings.n_features)
            record["features"] = top
            if settings.accuracy:
                record["scores"] = accuracy(task, top, answers, settings, box)
            record["seconds"] = round(time.perf_counter() - t0, 1)
            append_jsonl(path, record)
            ops = ", ".join(f["op"] for f in top)
            on_progress(f"reference {ds.name}: {len(specs)} candidates; top: {ops}")
    finally:
        box.close()


def merged(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per dataset: a top-up's scores join the first record's (labels it
    already has are kept as they were), in the order the datasets were done."""
    first: dict[str, dict[str, Any]] = {}
    for r in records:
        if not r.get("top_up"):
            first.setdefault(r["dataset"], json.loads(json.dumps(r)))
            continue
        base = first.get(r["dataset"])
        more = r.get("scores") or {}
        if base is None or "mean" not in (base.get("scores") or {}) or "mean" not in more:
            continue
        for part in ("mean", "gain"):
            for label, value in more.get(part, {}).items():
                base["scores"][part].setdefault(label, value)
    return list(first.values())


def _scored(answer: dict[str, Any]) -> bool:
    """Whether the accuracy check runs this answer (free code is only read)."""
    return answer["condition"] in ("typed", "blind", "agent", "agent-plain")


def _label(answer: dict[str, Any]) -> str:
    return f"{answer['llm']}|{answer['condition']}|{answer['seed']}"


def run_openfe(
    settings: AuditSettings,
    out: Path,
    *,
    sandbox: str = "local-warm",
    on_progress: Callable[[str], None] = lambda _: None,
) -> None:
    """OpenFE's features per dataset, appended to ``openfe.jsonl`` (resumable); a
    dataset OpenFE fails on is recorded with the error."""
    from mlpilot.evals.audit import append_jsonl, audit_task, load_dataset, read_jsonl, select

    path = out / "openfe.jsonl"
    done = {r["dataset"] for r in read_jsonl(path)}
    box = make_sandbox(sandbox)
    try:
        for ds in select(settings.datasets):
            if ds.name in done:
                continue
            frame, _ = load_dataset(ds)
            task = audit_task(ds, frame)
            t0 = time.perf_counter()
            try:
                found = openfe(task, settings.n_features, box)
            except SandboxError as e:
                record = {"dataset": ds.name, "features": [], "error": str(e)[:600]}
            else:
                record = {"dataset": ds.name, **found}
            record["seconds"] = round(time.perf_counter() - t0, 1)
            append_jsonl(path, record)
            ops = ", ".join(f["op"] for f in record["features"]) or record.get("error", "")
            on_progress(f"OpenFE {ds.name}: {ops}")
    finally:
        box.close()


def accuracy(
    task: TaskSpec,
    reference: list[dict[str, Any]] | None,
    answers: list[dict[str, Any]],
    settings: AuditSettings,
    box: Any,
) -> dict[str, Any]:
    """Mean repeated-CV score with no new features, the reference's (unless None),
    each LLM's typed and blind answers per seed (their valid suggestions), and the
    agent's kept features (measured on the rows it chose them on: optimistic for both
    agent conditions alike)."""
    variants: list[dict[str, Any]] = [{"features": []}]
    labels = ["none"]
    if reference is not None:
        variants.append({"features": [_spec(f) for f in reference]})
        labels.append("reference")
    for r in answers:
        if r["dataset"] != task.name or not _scored(r):
            continue  # free code is read for its operators, not run
        if r["condition"] in ("typed", "blind"):
            block = llm_blocks(task, r["features"], settings.n_features)
        else:
            block = [_spec(f) for f in r.get("kept") or []]  # what the agent kept
        variants.append({"features": block})
        labels.append(_label(r))
    scores = Evaluator(box, task, "hist_gradient_boosting", Limits(timeout_s=600)).run(variants)
    if isinstance(scores, str):
        return {"error": scores}
    means = {label: float(np.mean(s)) for label, s in zip(labels, scores, strict=True)}
    gains = {
        label: feature_eval.paired_gain(task.metric, scores[0], s)
        for label, s in zip(labels[1:], scores[1:], strict=True)
    }
    return {
        "metric": task.metric.name,
        "mean": means,
        "gain": {k: [g.mean, g.se] for k, g in gains.items()},
    }


def _spec(f: dict[str, Any]) -> dict[str, Any]:
    return {k: f[k] for k in ("op", "a", "b") if k in f}
