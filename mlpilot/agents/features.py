"""The feature-engineering agent: the LLM proposes features from what the columns
mean, the sandbox measures them, and a noise gate decides.

Each round the LLM sees the request, the dataset's description, every column (kind,
missing share, distinct values, samples, simple statistics), the target's summary
(never its value per row), the operator vocabulary of :mod:`mlpilot.tools.featurize`
and the history of kept and rejected proposals with their measured gains, and is told
which operator families it has not tried. It answers with typed features over that
vocabulary, under constrained decoding where the backend has it: the operator and
both columns are enums, which is what a 1.5B model can do reliably.

Every proposal is checked on the host before anything runs (unknown operator or
column, a column of the wrong kind) and after its values are computed on the
training rows (empty, constant, infinite, mostly divided by zero, a copy of a column,
tracking the row order, or predicting the target near perfectly alone); what fails
is recorded as invalid with the reason, which the next round's prompt repeats. The
valid part of the block is measured by repeated, paired CV of a fast model in the
sandbox (:mod:`mlpilot.agents.feature_eval`) and kept only if its mean gain exceeds
its corrected standard error. An LLM error or an answer that stays invalid counts
as a round; a slow LLM ends the step at its deadline with what was kept.

Typed features are mlpilot's own code, so the delivered model computes them on the
host (:class:`mlpilot.tools.featurize.FeatureBuilder`). The step's progress is saved
after every round, so a killed run resumes from the last finished round.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field, create_model

from mlpilot import prompts
from mlpilot.agents import feature_eval
from mlpilot.agents.feature_code import check_code, summarize
from mlpilot.agents.feature_eval import (
    Evaluator,
    Gain,
    check_spec,
    check_values,
    column_kinds,
    suggests_leak,
)
from mlpilot.agents.rundir import RunDir
from mlpilot.agents.state import FeatureRecord, FeatureSummary
from mlpilot.llm import LLM, LLMError, LLMTimeout, StructuredOutputError, structured
from mlpilot.task import TaskSpec
from mlpilot.tools.featurize import FAMILIES, OPS, FeatureBuilder, formula, operand

log = logging.getLogger(__name__)

ROUNDS = 10  # CAAFE's number of iterations
BLOCK = 4  # most features one round may propose
MAX_COLUMNS = 40  # most columns shown to the LLM
SAMPLES = 5  # sample values shown per column
HISTORY = 24  # most earlier proposals shown
PAIRS = 6  # most not-yet-combined column pairs named per round
# the arithmetic operators the data may choose between for a pair the model named
SIBLINGS = ("add", "subtract", "multiply", "divide")
PREFER_MARGIN = 0.05  # how much stronger alone a sibling must be to replace the model's

MIN_ROUND_S = 8.0  # no new round with less time than this left
SINGLE_Z = 2.0  # a feature kept alone from a failed block: gain > this many SEs
ROLE = "features"


def answer_model(
    columns: list[str], n: int, *, code: bool = False, ops_named: list[str] | None = None
) -> type[BaseModel]:
    """The answer's schema for this data: the operator and the columns are enums, so
    constrained decoding can only name what exists. With ``code``, the answer may
    instead (or also) hold free feature code (:mod:`mlpilot.agents.feature_code`).
    ``ops_named``: the operator names to offer (default: all of :data:`OPS`)."""
    ops = Literal[tuple(ops_named or OPS)]  # type: ignore[valid-type]
    cols = Literal[tuple(columns)]  # type: ignore[valid-type]
    idea = create_model(  # the reason first: the model names the quantity, then the operator
        "Feature",
        reason=(str, Field(..., min_length=8, max_length=200)),
        op=(ops, ...),
        a=(cols, ...),
        b=(cols | None, None),
    )
    if not code:
        return create_model(
            "FeatureBlock", features=(list[idea], Field(min_length=1, max_length=n))
        )
    return create_model(
        "FeatureBlock",
        features=(list[idea], Field(default_factory=list, max_length=n)),
        code=(str | None, None),
    )


# a pairing round's operators: the arithmetic and the group-by ones (a number grouped
# by the other column's values), so forcing new pairs does not force simple operators
PAIR_OPS = tuple(
    name for name, op in OPS.items() if op.binary and op.family in ("arithmetic", "groupby")
)


def pair_model(pairs: list[str], n: int) -> type[BaseModel]:
    """A pairing round's answer: each feature names one of ``pairs`` (the column pairs
    no proposal has combined yet) and an arithmetic operator, both enums. Small models
    pair the columns that look alike and repeat themselves; a round whose answer can
    only be a new pair covers the pairs that describe one thing together."""
    idea = create_model(
        "PairFeature",
        reason=(str, Field(..., min_length=8, max_length=200)),
        pair=(Literal[tuple(pairs)], ...),  # type: ignore[valid-type]
        op=(Literal[PAIR_OPS], ...),  # type: ignore[valid-type]
    )
    return create_model(
        "PairBlock", features=(list[idea], Field(min_length=1, max_length=min(n, len(pairs))))
    )


def applicable_families(kinds: dict[str, set[str]]) -> list[str]:
    """The operator families this data has columns for."""
    have = set().union(*kinds.values()) if kinds else set()
    numbers = sum("number" in k for k in kinds.values())
    out = []
    for family in FAMILIES:
        needs = {
            "unary": numbers >= 1,
            "arithmetic": numbers >= 2,
            "categorical": len(kinds) >= 1,
            "groupby": numbers >= 1 and len(kinds) >= 2,
            "date": "date" in have,
            "text": "text" in have,
        }[family]
        if needs:
            out.append(family)
    return out


def column_lines(task: TaskSpec, kinds: dict[str, set[str]]) -> list[str]:
    """One line per column for the prompt (the first ``MAX_COLUMNS``)."""
    lines = []
    for col in list(task.feature_columns)[:MAX_COLUMNS]:
        s = task.train[col]
        kind = next(k for k in ("text", "date", "number", "any") if k in kinds[col])
        kind = "category" if kind == "any" else kind
        missing = float(s.isna().mean())
        samples = [_short(v) for v in s.dropna().unique()[:SAMPLES]]
        line = f"{col}: {kind}, {missing:.0%} missing, {s.nunique()} distinct, e.g. {samples}"
        if kind == "number":
            x = pd.to_numeric(s, errors="coerce")
            line += f"; min {x.min():.4g}, median {x.median():.4g}, max {x.max():.4g}"
        lines.append(line)
    return lines


def name_words(column: str) -> set[str]:
    """The words of a column name: ``left_weight`` and ``LeftWeight`` give left, weight."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", column)
    return {w.lower() for w in re.split(r"[^A-Za-z0-9]+", spaced) if len(w) > 1}


def untried_pairs(
    columns: list[str], kinds: dict[str, set[str]], records: list[FeatureRecord], k: int
) -> list[tuple[str, str]]:
    """Up to ``k`` pairs of number columns that no proposal has combined yet.

    LLMs pair the columns that look alike (both weights, both distances) and miss the
    pairs that describe one thing together (a side's weight and its distance). The
    prompt names pairs not combined yet so later rounds cover the others: pairs whose
    names share more words first (often one object's properties), then the rest, in
    the order of the columns (kept features count as columns; a kept feature is not
    paired with its own inputs).
    """
    used = {frozenset((r.spec.get("a"), r.spec.get("b"))) for r in records if r.spec.get("b")}
    numeric = [c for c in columns[:MAX_COLUMNS] if "number" in kinds.get(c, set())]
    pairs = [
        (a, b)
        for i, a in enumerate(numeric)
        for b in numeric[i + 1 :]
        if frozenset((a, b)) not in used and a not in b and b not in a  # not a kept one's input
    ]
    pairs.sort(key=lambda p: -len(name_words(p[0]) & name_words(p[1])))  # stable
    return pairs[:k]


def name_tokens(column: str) -> list[str]:
    """A column name cut into words and separators, joined back exactly:
    ``left_weight`` gives left, _, weight; ``LeftWeight`` gives Left, Weight."""
    return re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|[0-9]+|[^A-Za-z0-9]+", column)


def mirror(spec: dict, columns: list[str]) -> tuple[dict, str] | None:
    """The same feature on the mirrored columns, and the word swapped: for
    ``left_weight * left_distance`` the right side's ``right_weight * right_distance``
    (left → right); for ``home_goals - home_shots`` the away team's. None when the
    data has no such columns.

    A side of a symmetric thing is one half of its story: a model that names the left
    torque but not the right one gets a block that cannot pass (the scale turns on
    both). A mirror swaps one word that appears in both operands for another word
    that makes both into existing columns; the first such word in column order wins.
    """
    a, b = spec.get("a"), spec.get("b")
    if b is None or a not in columns or b not in columns:
        return None
    ta, tb = name_tokens(a), name_tokens(b)
    for other in columns:
        to = name_tokens(other)
        if other in (a, b) or len(to) != len(ta):
            continue
        diff = [i for i, (x, y) in enumerate(zip(ta, to, strict=True)) if x != y]
        if len(diff) != 1 or not ta[diff[0]][0].isalnum():
            continue
        word, swap = ta[diff[0]], to[diff[0]]
        if word not in tb:
            continue
        b2 = "".join(swap if t == word else t for t in tb)
        if b2 in columns and {other, b2} != {a, b}:
            return {**spec, "a": other, "b": b2}, f"{word} → {swap}"
    return None


COMMUTATIVE = frozenset({"add", "multiply", "min", "max", "combine"})


def same_as(spec: dict) -> str:
    """A key equal for features that compute the same thing: ``a * b`` and ``b * a``."""
    a, b = spec.get("a"), spec.get("b")
    if spec.get("op") in COMMUTATIVE and b is not None and str(b) < str(a):
        a, b = b, a
    return f"{spec.get('op')}|{a}|{b}" if "code" not in spec else f"code|{spec['code']}"


def prefer_operator(spec: dict, task: TaskSpec, X: pd.DataFrame, seen: set[str]) -> dict | None:
    """Another arithmetic operator on the model's two columns, where it is clearly the
    stronger feature alone on the training rows; None to keep the model's choice.

    The model's knowledge is in which columns belong together; its choice of operator
    leans to the simple ones (Küken et al. 2024: addition over everything else), and
    a small model often names the right pair with the wrong operator (a weight divided
    by its distance, where the scale turns on their product). So for ``add``,
    ``subtract``, ``multiply`` and ``divide`` the four are computed, each is checked
    like a proposal, and the strongest alone (2·|AUC − ½|, |Spearman ρ|, or the gain
    in accuracy of its deciles) replaces the model's when it is stronger by at least
    ``PREFER_MARGIN``. The gate then measures the one chosen; the record keeps both.
    """
    if spec["op"] not in SIBLINGS:
        return None
    strength: dict[str, float] = {}
    for op in SIBLINGS:
        candidate = {"op": op, "a": spec["a"], "b": spec["b"]}
        name = formula(candidate)
        if op != spec["op"] and same_as(candidate) in seen:
            continue
        try:
            values = FeatureBuilder([candidate]).fit(X).transform(X)[name].to_numpy(float)
        except (TypeError, ValueError):
            continue
        if check_values(name, values, candidate, task, X) is not None:
            continue
        alone = feature_eval.strength_alone(pd.Series(values, index=task.train.index), task)
        if alone is not None:
            strength[op] = alone
    if spec["op"] not in strength or not strength:
        return None
    best = max(strength, key=strength.__getitem__)
    mine = strength[spec["op"]]
    if best == spec["op"] or strength[best] < mine + PREFER_MARGIN:
        return None
    return {"op": best, "a": spec["a"], "b": spec["b"]}


def kept_lines(X: pd.DataFrame, names: list[str]) -> list[str]:
    """Prompt lines for the kept features, which later proposals may use as columns."""
    lines = []
    for name in names:
        s = X[name]
        line = f"{name}: kept feature, {s.isna().mean():.0%} missing, {s.nunique()} distinct"
        if pd.api.types.is_numeric_dtype(s):
            line += f"; min {s.min():.4g}, median {s.median():.4g}, max {s.max():.4g}"
        lines.append(line)
    return lines


def _short(value: object) -> str:
    """A sample value as the prompt shows it: floats to 4 significant digits."""
    if isinstance(value, float | np.floating):
        return f"{float(value):.4g}"
    return str(value)[:40]


def target_summary(task: TaskSpec) -> str:
    y = task.y
    if task.is_classification:
        counts = y.astype(str).value_counts()
        return "classes " + ", ".join(f"{k}: {v} rows" for k, v in counts.head(10).items())
    x = pd.to_numeric(y, errors="coerce")
    return f"a number, min {x.min():.4g}, median {x.median():.4g}, max {x.max():.4g}"


class FeatureAgent:
    """Runs the feature rounds for one task.

    Args:
        llm: proposes the features.
        evaluator: measures blocks in the sandbox.
        task: the task (its training rows only are used).
        request: the user's words.
        description: what the data is, in the user's words (may be empty).
        run_dir: where progress is saved after every round (None: nowhere).
        rounds: most rounds.
        on_round: called after each round with the summary so far.
        free_code: let the LLM answer with free feature code too (measured in the
            sandbox, never delivered); default: for LLMs that do not run on this
            machine (a 1.5B local model writes the typed form reliably, code less so).
        diversity: from the second round on, name the operator families and the
            column pairs not tried yet (off: the audit's comparison without it).
        build_on_kept: offer the kept features as columns for later proposals
            (``(a * b) - (c * d)``); default: for LLMs that do not run on this
            machine (the 1.5B model, offered them on balance-scale, spent its rounds
            on abs() and deciles of kept features instead of new column pairs).
    """

    def __init__(
        self,
        llm: LLM,
        evaluator: Evaluator,
        task: TaskSpec,
        *,
        request: str = "",
        description: str = "",
        run_dir: RunDir | None = None,
        rounds: int = ROUNDS,
        on_round: Callable[[FeatureSummary], None] | None = None,
        free_code: bool | None = None,
        diversity: bool = True,
        build_on_kept: bool | None = None,
    ) -> None:
        self.llm = llm
        self.evaluator = evaluator
        self.task = task
        self.request = request
        self.description = description
        self.run_dir = run_dir
        self.rounds = rounds
        self.on_round = on_round
        self.free_code = (not llm.runs_locally) if free_code is None else free_code
        self.diversity = diversity
        self.build_on_kept = (not llm.runs_locally) if build_on_kept is None else build_on_kept
        self.kinds = column_kinds(task)

    # -- the loop ----------------------------------------------------------------------

    def run(self, deadline: float) -> FeatureSummary:
        """Rounds until ``rounds`` are done or ``deadline`` (time.monotonic) is near."""
        started = time.monotonic()
        summary = self._resume()
        before = summary.model_copy()
        summary.evaluator = self.evaluator.family
        tokens0 = self._usage()
        base = self._measure([summary.kept], deadline)
        if isinstance(base, str):
            summary.stopped = f"the evaluation without new features failed: {base}"
            return self._save(summary, started, tokens0, before)
        base_scores = base[0]
        summary.base_score = summary.base_score if summary.kept else float(base_scores.mean())
        summary.score = float(base_scores.mean())
        feedback = ""
        while summary.rounds < self.rounds:
            left = deadline - time.monotonic()
            if left < MIN_ROUND_S:
                summary.stopped = "the step's share of the time budget is spent"
                break
            summary.rounds += 1
            n = summary.rounds
            try:
                block = self._ask(summary, feedback, timeout=left)
            except LLMTimeout:
                summary.stopped = "the LLM did not answer within the step's share of the time"
                self._save(summary, started, tokens0, before)
                break
            except StructuredOutputError as e:
                feedback = f"the answer was not valid JSON of the asked form ({e})"[:300]
                summary.notes.append(f"round {n}: {feedback}")
                self._save(summary, started, tokens0, before)
                continue
            except LLMError as e:
                summary.stopped = f"the LLM is unavailable: {type(e).__name__}: {e}"[:300]
                self._save(summary, started, tokens0, before)
                break
            ideas, code = block
            valid, records = self._check(ideas, summary, n)
            feedback = "; ".join(
                f"{r.formula}: {r.why}" for r in records if r.verdict in ("invalid", "refused")
            )
            if valid:
                t0 = time.monotonic()
                measured = self._measure([[*summary.kept, *valid]], deadline)
                if isinstance(measured, str):
                    summary.notes.append(f"round {n}: {measured}")
                    feedback = measured
                    for r in records:
                        if r.verdict == "":
                            r.verdict, r.why = "invalid", measured
                else:
                    gain = feature_eval.paired_gain(self.task.metric, base_scores, measured[0])
                    self._judge(records, gain)
                    if gain.passes:
                        summary.kept.extend(valid)
                        base_scores = measured[0]
                        summary.score = float(base_scores.mean())
                    elif len(valid) > 1 and (
                        deadline - time.monotonic()
                        > (time.monotonic() - t0) * len(valid) + MIN_ROUND_S
                    ):
                        single = self._singles(valid, records, summary, base_scores, deadline)
                        if single is not None:
                            summary.kept.append(single[0])
                            base_scores = single[1]
                            summary.score = float(base_scores.mean())
            if code:
                record = self._try_code(code, summary, base_scores, n, deadline)
                records.append(record)
                if record.verdict != "rejected":
                    feedback = "; ".join(
                        x for x in (feedback, f"{record.formula}: {record.why}") if x
                    )
            summary.records.extend(records)
            self._save(summary, started, tokens0, before)
        else:
            summary.stopped = f"all {self.rounds} rounds done"
        return self._save(summary, started, tokens0, before)

    # -- one round ---------------------------------------------------------------------

    def _augmented(self, kept: list[dict]) -> tuple[pd.DataFrame, dict[str, set[str]]]:
        """The training rows with the kept features as columns, and every column's
        kinds: a later proposal may build on a kept feature (``(a * b) - (c * d)``)."""
        X = self.task.X
        if not kept or not self.build_on_kept:
            return X, self.kinds
        X = FeatureBuilder(kept).fit(X).transform(X)
        kinds = dict(self.kinds)
        for f in kept:
            name = formula(f)
            numeric = pd.api.types.is_numeric_dtype(X[name])
            kinds[name] = {"any", "number"} if numeric else {"any"}
        return X, kinds

    def _ask(
        self, summary: FeatureSummary, feedback: str, *, timeout: float
    ) -> tuple[list[dict], str | None]:
        built = [formula(f) for f in summary.kept][:MAX_COLUMNS] if self.build_on_kept else []
        columns = [*self.task.feature_columns, *built]
        X, kinds = self._augmented(summary.kept)
        model = answer_model(columns, BLOCK, code=self.free_code)
        tried = {r.family for r in summary.records}
        families = applicable_families(self.kinds)
        untried = [f for f in families if f not in tried] if self.diversity else []
        # from the second round on: the pairs no proposal has combined yet; every second
        # round is a pairing round, whose answer can only combine them
        pairs = untried_pairs(columns, kinds, summary.records, PAIRS)
        pairs = pairs if summary.records and self.diversity else []
        labels = {f"{operand(a)} & {operand(b)}": (a, b) for a, b in pairs}
        pairing = bool(labels) and summary.rounds % 2 == 0
        if pairing:
            model = pair_model(list(labels), BLOCK)
        prompt = prompts.render(
            "features",
            problem=self.task.problem_type,
            target=self.task.target,
            target_summary=target_summary(self.task),
            metric=self.task.metric.display,
            request=self.request,
            description=self.description.strip()[:3000],
            n_rows=len(self.task.train),
            columns=column_lines(self.task, self.kinds) + kept_lines(X, built),
            ops=[(f, _op_lines(f)) for f in families],
            history=_history(summary),
            feedback=feedback,
            n=BLOCK,
            untried=untried,
            pairs=list(labels),
            pairing=pairing,
            pair_ops=PAIR_OPS,
            code=self.free_code and not pairing,
        )
        answer = structured(
            self.llm,
            [
                {"role": "system", "content": prompts.render("system")},
                {"role": "user", "content": prompt},
            ],
            model,
            role=ROLE,
            max_retries=1,  # an invalid answer is fed back once; then the round is over
            # the first round is the model's best guess; later ones explore
            temperature=0.0 if not summary.records else 0.7,
            seed=summary.rounds,
            max_tokens=80 * BLOCK + (600 if self.free_code and not pairing else 0),
            timeout=timeout,
        )
        ideas = [f.model_dump() for f in answer.features]  # type: ignore[attr-defined]
        if pairing:
            ideas = [
                {
                    "reason": i["reason"],
                    "op": i["op"],
                    "a": labels[i["pair"]][0],
                    "b": labels[i["pair"]][1],
                }
                for i in ideas
            ]
        code = getattr(answer, "code", None)
        return ideas, (code.strip() or None) if isinstance(code, str) else None

    def _try_code(
        self,
        code: str,
        summary: FeatureSummary,
        base_scores: np.ndarray,
        n: int,
        deadline: float,
    ) -> FeatureRecord:
        """Checks, measures and judges one free-code proposal (never kept: see
        :mod:`mlpilot.agents.feature_code`)."""
        record = FeatureRecord(
            round=n, formula=summarize(code), spec={"code": code}, family="code", verdict=""
        )
        why = check_code(code)
        if why is None:
            variant = {**feature_eval.build_variant(summary.kept, []), "code": code}
            left = max(5.0, deadline - time.monotonic())
            measured = self.evaluator.run([variant], timeout_s=left)
            if isinstance(measured, str):
                why = measured
            else:
                columns = self.evaluator.last_code.get(0, pd.DataFrame())
                why = "the code added no columns" if columns.empty else None
                X = self.evaluator.X
                for col in columns.columns:
                    values = columns[col].to_numpy()
                    if values.dtype != object:
                        values = values.astype(float)
                    sub = _subtask(self.task, self.evaluator.rows)
                    why = why or check_values(col, values, {"op": "code"}, sub, X)
                if why is None:
                    gain = feature_eval.paired_gain(self.task.metric, base_scores, measured[0])
                    record.gain, record.se = gain.mean, gain.se
                    if gain.passes:
                        record.verdict = "helps"
                        record.why = (
                            f"gain {gain.mean:+.4f} ± {gain.se:.4f}, but free code is never "
                            "delivered: restate the idea with the typed operators"
                        )
                    else:
                        record.verdict = "rejected"
                        record.why = f"gain {gain.mean:+.4f} ± {gain.se:.4f}: not above its error"
                    return record
        record.verdict = "refused" if why and suggests_leak(why) else "invalid"
        record.why = why or ""
        return record

    def _check(
        self, block: list[dict], summary: FeatureSummary, n: int
    ) -> tuple[list[dict], list[FeatureRecord]]:
        """The block's valid features (specs) and a record for every proposal (valid
        ones with an empty verdict, to be judged)."""
        seen = {same_as(f) for f in summary.kept} | {same_as(r.spec) for r in summary.records}
        valid: list[dict] = []
        records = []
        X, kinds = self._augmented(summary.kept)  # kept features are columns too
        for idea in block:
            op = OPS.get(str(idea.get("op")))
            spec = {"op": idea.get("op"), "a": idea.get("a")}
            if op is not None and op.binary:
                spec["b"] = idea.get("b")
            why = check_spec(spec, kinds)
            name = formula(spec) if op is not None else str(idea.get("op"))
            if why is None and same_as(spec) in seen:
                why = "already tried"
            if why is None:
                try:
                    values = FeatureBuilder([spec]).fit(X).transform(X)[name].to_numpy()
                except Exception as e:
                    why = f"could not be computed: {type(e).__name__}: {e}"[:200]
                else:
                    if values.dtype != object:
                        values = values.astype(float)
                    why = check_values(name, values, spec, self.task, X)
            proposed = ""
            if why is None:
                better = prefer_operator(spec, self.task, X, seen)
                if better is not None:
                    proposed, spec = name, better
                    name = formula(spec)
            seen.add(same_as(spec))
            records.append(
                FeatureRecord(
                    round=n,
                    formula=name,
                    spec=spec,
                    family=op.family if op is not None else "unknown",
                    reason=str(idea.get("reason") or "")[:200],
                    proposed=proposed,
                    verdict=("refused" if suggests_leak(why) else "invalid") if why else "",
                    why=why or "",
                )
            )
            if why is None:
                valid.append(spec)
        for spec in list(valid):
            twin = mirror(spec, list(self.task.feature_columns))
            if twin is None or same_as(twin[0]) in seen:
                continue
            twin_spec, swap = twin
            name = formula(twin_spec)
            try:
                values = FeatureBuilder([twin_spec]).fit(X).transform(X)[name].to_numpy()
            except Exception:
                continue
            values = values.astype(float) if values.dtype != object else values
            if check_values(name, values, twin_spec, self.task, X) is not None:
                continue
            seen.add(same_as(twin_spec))
            valid.append(twin_spec)
            records.append(
                FeatureRecord(
                    round=n,
                    formula=name,
                    spec=twin_spec,
                    family=OPS[twin_spec["op"]].family,
                    reason=f"the mirror of {formula(spec)} ({swap}), added by mlpilot",
                    verdict="",
                )
            )
        return valid, records

    @staticmethod
    def _judge(records: list[FeatureRecord], gain: Gain) -> None:
        kept = gain.passes
        why = f"block gain {gain.mean:+.4f} ± {gain.se:.4f} " + (
            "> its standard error: kept" if kept else "does not exceed its standard error"
        )
        for r in records:
            if r.verdict == "":
                r.verdict = "kept" if kept else "rejected"
                r.why, r.gain, r.se = why, gain.mean, gain.se

    def _singles(
        self,
        valid: list[dict],
        records: list[FeatureRecord],
        summary: FeatureSummary,
        base_scores: np.ndarray,
        deadline: float,
    ) -> tuple[dict, np.ndarray] | None:
        """After a block failed: each of its features alone. A good feature proposed
        next to poor ones is kept when its own gain exceeds ``SINGLE_Z`` standard
        errors (stricter than a block's one: the best of several is chosen)."""
        measured = self._measure([[*summary.kept, f] for f in valid], deadline)
        if isinstance(measured, str):
            return None
        gains = [feature_eval.paired_gain(self.task.metric, base_scores, m) for m in measured]
        by_name = {r.formula: r for r in records if r.verdict == "rejected"}
        for spec, g in zip(valid, gains, strict=True):
            r = by_name.get(formula(spec))
            if r is not None:
                r.why += f"; alone {g.mean:+.4f} ± {g.se:.4f}"
        best = max(range(len(valid)), key=lambda i: gains[i].mean)
        g = gains[best]
        if not (g.mean > 0 and g.mean > SINGLE_Z * g.se):
            return None
        r = by_name.get(formula(valid[best]))
        if r is not None:
            r.verdict = "kept"
            r.gain, r.se = g.mean, g.se
            r.why += f" > {SINGLE_Z:g} standard errors: kept alone"
        return valid[best], measured[best]

    def _measure(self, blocks: list[list[dict]], deadline: float) -> list[np.ndarray] | str:
        variants = [feature_eval.build_variant(b, []) for b in blocks]
        return self.evaluator.run(variants, timeout_s=max(5.0, deadline - time.monotonic()))

    # -- progress ----------------------------------------------------------------------

    def _resume(self) -> FeatureSummary:
        if self.run_dir is not None:
            saved = self.run_dir.load_features()
            if saved:
                try:
                    return FeatureSummary.model_validate_json(saved)
                except ValueError:
                    log.warning("the saved feature step is unreadable; starting it again")
        return FeatureSummary()

    def _usage(self) -> tuple[int, float]:
        usage = self.llm.ledger.by_role.get(ROLE)
        return (0, 0.0) if usage is None else (usage.total_tokens, usage.cost_usd)

    def _save(
        self,
        summary: FeatureSummary,
        started: float,
        usage0: tuple[int, float],
        before: FeatureSummary,
    ) -> FeatureSummary:
        tokens, cost = self._usage()
        summary.tokens = before.tokens + tokens - usage0[0]
        summary.cost_usd = before.cost_usd + cost - usage0[1]
        summary.seconds = before.seconds + time.monotonic() - started
        if self.run_dir is not None:
            self.run_dir.save_features(summary.model_dump_json())
        if self.on_round is not None:
            self.on_round(summary)
        return summary


def _subtask(task: TaskSpec, rows: np.ndarray) -> TaskSpec:
    """``task`` restricted to the evaluator's sampled training rows (for checks on
    columns the sandbox computed for those rows)."""
    import dataclasses

    if len(rows) == len(task.train):
        return task
    return dataclasses.replace(task, train=task.train.iloc[rows].reset_index(drop=True))


def _op_lines(family: str) -> list[str]:
    """The family's operators as the prompt lists them: ``multiply (a * b)``."""
    return [f"{name} ({op.help})" for name, op in OPS.items() if op.family == family]


def _history(summary: FeatureSummary) -> list[str]:
    lines = []
    for r in summary.records[-HISTORY:]:
        name = f"{r.formula} (proposed as {r.proposed})" if r.proposed else r.formula
        if r.verdict in ("invalid", "refused"):
            lines.append(f"{name}: {r.verdict} ({r.why})")
        else:
            lines.append(f"{name}: {r.verdict}, gain {r.gain:+.4f} ± {r.se:.4f}")
    return lines


def evaluator_family(families: list[str]) -> str:
    """The fast model gains are measured with: linear where the plan leads with it
    (text, or linear-friendly data), else gradient boosting."""
    return "linear" if families and families[0] == "linear" else "hist_gradient_boosting"
