"""The chat behind ``mlpilot chat``: each user turn becomes one typed action.

An LLM picks the action (:class:`~mlpilot.prompts.chat_actions.ChatAction`, under
constrained decoding) with the chat's state in its prompt; a deterministic parser
gives the same kind of action when no LLM is configured or none answers in time,
and checks what the LLM's answer claims (a budget the user wrote in numbers, a
column that exists). Actions: start a run, re-run a variation of the last run,
compare two runs, explain a run, predict a file, show a plot, profile a data file,
list past runs.

Answers quote only what a run directory holds: its ``run.json``, its checkpointed
state (trials, checks, final model), its LLM usage and its model. The conversation's
state is checkpointed with LangGraph (SQLite, in the runs directory) after every
turn, so a chat started again with ``resume`` carries on where it stopped.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field, ValidationError

from mlpilot import prompts
from mlpilot.api import Pilot, RunResult
from mlpilot.errors import MlpilotError
from mlpilot.llm import LLM, LLMError, StructuredOutputError, structured
from mlpilot.prompts.chat_actions import ACTIONS, PLOTS, TOPICS, ChatAction
from mlpilot.task import TaskSpec, _target_candidates, target_from_request
from mlpilot.tools.data import read_table
from mlpilot.tools.metrics import metric_from_request

_PATH = re.compile(r"(?P<path>[\w./~-]+\.(?:csv|tsv|txt|parquet|pq))\b", re.IGNORECASE)
_NUMBER_WORDS = {
    "a": 1.0, "an": 1.0, "one": 1.0, "two": 2.0, "three": 3.0, "four": 4.0, "five": 5.0,
    "six": 6.0, "seven": 7.0, "eight": 8.0, "nine": 9.0, "ten": 10.0, "twenty": 20.0,
    "thirty": 30.0, "forty": 40.0, "fifty": 50.0, "sixty": 60.0, "ninety": 90.0,
    "half a": 0.5, "half an": 0.5,
}  # fmt: skip
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(
    r"(?P<n>\d+(?:\.\d+)?|half an?|an?|one|two|three|four|five|six|seven|eight|nine|ten|"
    r"twenty|thirty|forty|fifty|sixty|ninety)[\s-]*"
    r"(?P<unit>seconds?|secs?|s|minutes?|mins?|m|hours?|hrs?|h)\b",
    re.IGNORECASE,
)
_QUIT = {"quit", "exit", "bye", "q", "goodbye"}
MAX_TURNS = 20  # turns kept in the checkpointed state
CHAT_DB = "chat.db"


def parse_seconds(text: str) -> float | None:
    """A time budget written in words or numbers: "30 seconds", "5 min", "90s",
    "a minute", "half an hour", "two minutes". None when the text names none."""
    for m in _DURATION.finditer(text):
        raw, unit = m.group("n").lower(), m.group("unit").lower()
        if unit in ("s", "m", "h") and raw in _NUMBER_WORDS:
            continue  # "a m", "one s": not a duration
        value = float(raw) if raw[0].isdigit() else _NUMBER_WORDS[raw]
        return value * _UNIT_S[unit[0]]
    return None


def find_columns(text: str, columns: list[str]) -> list[str]:
    """The known columns a "without/drop/exclude ..." phrase names, in the text's order."""
    found: list[tuple[int, str]] = []
    cue = re.compile(
        r"\b(?:without|drop(?:ping)?|exclud(?:e|ing)|leave out|leaving out|ignor(?:e|ing)|"
        r"remove|removing|minus)\b(?P<rest>.*)",
        re.IGNORECASE,
    )
    for match in cue.finditer(text):
        rest = match.group("rest")
        for col in sorted(columns, key=len, reverse=True):
            pattern = rf"(?<![\w]){re.escape(col)}(?![\w])"
            hit = re.search(pattern, rest, re.IGNORECASE)
            if hit and col not in (c for _, c in found):
                found.append((match.start("rest") + hit.start(), col))
    return [c for _, c in sorted(found)]


class ChatState(BaseModel):
    """What the conversation knows; checkpointed after every turn."""

    turns: list[tuple[str, str]] = Field(default_factory=list)  # (user, reply), latest last
    request: str = ""
    data: str | None = None
    target: str | None = None
    budget: float | None = None
    metric: str | None = None
    drop: list[str] = Field(default_factory=list)
    columns: list[str] = Field(default_factory=list)
    awaiting: str | None = None  # "data" or "target" while a question is open
    runs: list[str] = Field(default_factory=list)  # run directories started here, in order
    done: bool = False


def parse_action(text: str, state: ChatState) -> ChatAction:
    """The deterministic reading of one user turn."""
    t = text.strip()
    low = t.lower()
    path = _PATH.search(t)
    seconds = parse_seconds(t)
    columns = state.columns
    drop = find_columns(t, columns) if columns else []
    has_run = bool(state.runs)
    fields: dict[str, Any] = {
        "seconds": seconds,
        "metric": _metric_name(t),
        "drop": drop,
    }
    if low in _QUIT:
        return ChatAction(action="quit")
    if re.search(r"\b(help|what can you do)\b", low):
        return ChatAction(action="help")
    if re.search(r"\b(past|previous|earlier|my|all|list(?: the)?) runs\b|\blist runs\b", low):
        return ChatAction(action="runs")
    if re.search(r"\bcompar", low):
        names = re.findall(r"\b\d{8}-\d{6}[\w-]*", t)
        if has_run and (drop or seconds or fields["metric"]) and "again" not in low:
            pass  # "without X and compare": a re-run first (compared after it)
        else:
            return ChatAction(action="compare", runs=names)
    if re.search(r"\b(plot|chart|graph|curve|matrix)\b", low):
        return ChatAction(action="plot", plot=_plot_named(low))
    if re.search(r"\b(profile|describe|summari[sz]e|what(?:'s| is) in)\b", low) and not re.search(
        r"\b(tune|train|fit)\b", low
    ):
        return ChatAction(action="profile", data=path.group("path") if path else None)
    predicting = re.search(r"\bpredict(?:ions?)?\b.*\b(on|for|of)\b", low)
    if has_run and path and predicting and not re.search(r"\b(tune|train|fit|model for)\b", low):
        out = re.search(r"\b(?:to|into|as)\s+(\S+\.csv)\b", t, re.IGNORECASE)
        return ChatAction(action="predict", data=path.group("path"), out=out and out.group(1))
    if path or (re.search(r"\b(tune|train|fit|build|model for)\b", low) and not has_run):
        return ChatAction(action="run", data=path.group("path") if path else None, **fields)
    if has_run and (
        drop
        or seconds
        or fields["metric"]
        or re.search(r"\b(again|re-?run|try it|instead|retry|once more)\b", low)
    ):
        return ChatAction(action="rerun", **fields)
    if re.search(r"\b(tune|train|fit)\b", low):
        return ChatAction(action="run", **fields)
    topic = _topic(low)
    if topic is not None or has_run:
        return ChatAction(action="explain", topic=topic)
    return ChatAction(action="help")


def _plot_named(low: str) -> str | None:
    rules = (
        ("roc", r"\broc\b"),
        ("pr", r"precision|\bpr\b"),
        ("confusion", r"confusion"),
        ("residuals", r"residual"),
        ("pred-actual", r"actual"),
        ("params", r"param"),
        ("features", r"feature|importan"),
        ("ensemble", r"ensemble|weight"),
        ("llm", r"\bllm\b"),
        ("history", r"history|progress|trials"),
    )
    return next((name for name, pattern in rules if re.search(pattern, low)), None)


def _metric_name(text: str) -> str | None:
    """The known metric a text names ("optimise recall", "AUC"), if any."""
    metric = metric_from_request(text)
    return metric.name if metric else None


def _topic(low: str) -> str | None:
    rules = (
        ("leakage", r"leak"),
        ("llm", r"\bllm\b|language model|warm.?start|propos"),
        ("cost", r"cost|token|spend|spent|price|usage|how long"),
        ("features", r"feature|important|matter|driv"),
        ("leaderboard", r"leaderboard|top|models|trials"),
        ("checks", r"verif|check|trust"),
        ("report", r"report|where"),
        ("winner", r"\bwhy\b|win|best|explain|chose|choice"),
    )
    return next((topic for topic, pattern in rules if re.search(pattern, low)), None)


def chat_llm(spec: str | None = None, api_base: str | None = None) -> LLM | None:
    """The LLM that picks the chat's actions (the runs' own LLM is the pilot's); None
    when none can be made (the parser alone then reads the turns)."""
    from mlpilot.llm import LLMUnavailable, make_llm

    try:
        return make_llm(spec, api_base=api_base)
    except LLMUnavailable:
        return None


class _Graph(TypedDict, total=False):
    line: str
    reply: str
    chat: dict[str, Any]


class ChatSession:
    """One conversation. ``say`` takes a user line and returns mlpilot's reply.

    Args:
        pilot: runs the requests.
        default_budget: seconds per run unless the request names a time.
        run: how a run is started (replaceable for a progress display).
        llm: picks each turn's action; None: the deterministic parser alone.
        llm_timeout: seconds the LLM may take per turn before the parser decides.
        store: where the conversation is checkpointed (default: the runs directory's
            ``chat.db``); None with ``checkpoint=False``.
        resume: carry on the conversation checkpointed in ``store``.
        name: the conversation's name in the store.
    """

    def __init__(
        self,
        pilot: Pilot,
        default_budget: float = 120.0,
        run: Callable[..., RunResult] | None = None,
        *,
        llm: LLM | None = None,
        llm_timeout: float = 30.0,
        store: Path | None = None,
        checkpoint: bool = True,
        resume: bool = False,
        name: str = "chat",
    ) -> None:
        self.pilot = pilot
        self.default_budget = default_budget
        self.runner = run
        self.llm = llm
        self.llm_timeout = llm_timeout
        self.result: RunResult | None = None
        self.last_action: ChatAction | None = None
        self.chosen_by = ""  # "llm" or "parser": who picked the last action
        self.state = ChatState()
        self._graph: Any = None
        self._conn: sqlite3.Connection | None = None
        self._config = {"configurable": {"thread_id": name}}
        if checkpoint:
            self._open(store or Path(pilot.runs_dir) / CHAT_DB, resume)

    # -- checkpointing --------------------------------------------------------------

    def _open(self, store: Path, resume: bool) -> None:
        from langgraph.checkpoint.sqlite import SqliteSaver
        from langgraph.graph import END, START, StateGraph

        store.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(store, check_same_thread=False)
        g = StateGraph(_Graph)
        g.add_node("turn", self._node)
        g.add_edge(START, "turn")
        g.add_edge("turn", END)
        self._graph = g.compile(checkpointer=SqliteSaver(self._conn))
        saved = self._graph.get_state(self._config).values
        if resume and saved.get("chat"):
            self.state = ChatState.model_validate(saved["chat"])
            self.state.done = False
        elif saved:  # a new conversation under a used name starts empty
            self._graph.update_state(self._config, {"chat": ChatState().model_dump()})

    def _node(self, state: _Graph) -> _Graph:
        reply = self._turn(state["line"])
        return {"reply": reply, "chat": self.state.model_dump()}

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @property
    def done(self) -> bool:
        return self.state.done

    @property
    def budget(self) -> float | None:
        return self.state.budget

    # -- a turn ---------------------------------------------------------------------

    def say(self, line: str) -> str:
        text = line.strip()
        if not text:
            return ""
        if self._graph is None:
            return self._turn(text)
        out = self._graph.invoke({"line": text}, self._config)
        return str(out.get("reply", ""))

    def _turn(self, text: str) -> str:
        s = self.state
        if s.awaiting == "data" and text.lower() not in _QUIT:
            reply = self._answer_data(text)
        elif s.awaiting == "target" and text.lower() not in _QUIT:
            reply = self._answer_target(text)
        else:
            action = self.choose(text)
            self.last_action = action
            reply = self.act(action, text)
        s.turns = [*s.turns, (text, reply)][-MAX_TURNS:]
        return reply

    def choose(self, text: str) -> ChatAction:
        """The turn's action: the LLM's, checked against the parser's reading, or the
        parser's alone when no LLM answers in time or its answer does not hold."""
        parsed = parse_action(text, self.state)
        self.chosen_by = "parser"
        if self.llm is None or not self.llm.available:
            return parsed
        try:
            answer = structured(
                self.llm,
                [
                    {"role": "system", "content": prompts.render("system")},
                    {"role": "user", "content": self._prompt(text)},
                ],
                ChatAction,
                role="chat",
                max_retries=1,
                temperature=0.0,
                max_tokens=160,
                timeout=self.llm_timeout,
            )
        except (LLMError, StructuredOutputError, ValidationError):
            return parsed
        checked = self._check(answer, parsed)
        if checked is None:
            return parsed
        self.chosen_by = "llm"
        return checked

    def _prompt(self, text: str) -> str:
        s = self.state
        facts = []
        if s.runs:
            facts.append(f"last run: {Path(s.runs[-1]).name}")
        if s.data:
            facts.append(f"data: {s.data}; target: {s.target or 'not chosen'}")
        if s.budget:
            facts.append(f"time budget: {s.budget:g} s")
        if s.drop:
            facts.append(f"dropped columns: {', '.join(s.drop)}")
        if s.columns:
            shown = ", ".join(s.columns[:40]) + (" ..." if len(s.columns) > 40 else "")
            facts.append(f"columns: {shown}")
        return prompts.render(
            "chat", actions=ACTIONS, topics=list(TOPICS), plots=list(PLOTS), state=facts, text=text
        )

    def _check(self, answer: ChatAction, parsed: ChatAction) -> ChatAction | None:
        """The LLM's action with what the text says for certain put right: a budget
        written in the text, a metric it names, columns that exist; None when it asks
        for something that cannot be (a re-run with no run, a file that is not there)."""
        s = self.state
        # a budget only when the text states one (a model may invent or misconvert it);
        # a metric only when it is one mlpilot knows
        fix: dict[str, Any] = {"seconds": parsed.seconds}
        fix["metric"] = parsed.metric or _metric_name(answer.metric or "")
        if s.columns:
            known = {c.lower(): c for c in s.columns}
            fix["drop"] = list(
                dict.fromkeys([known[c.lower()] for c in answer.drop if c.lower() in known])
                | dict.fromkeys(parsed.drop)
            )
            if answer.target is not None:
                fix["target"] = known.get(answer.target.lower())
        if answer.data is not None and parsed.data is not None:
            fix["data"] = parsed.data  # the path exactly as written
        if answer.action == "explain" and parsed.action == "explain" and parsed.topic:
            fix["topic"] = parsed.topic  # "what did it cost?" names its topic in words
        action = answer.model_copy(update=fix)
        if action.action == "compare" and parsed.action != "compare" and not action.runs:
            # a comparison the text does not ask for: a small model, shown the last turn
            # was a comparison, compared again for "what did it cost?"
            return None
        if action.action in ("rerun", "compare", "explain", "predict", "plot") and not s.runs:
            return None if parsed.action != action.action else action
        wants_file = action.action in ("run", "predict", "profile") and action.data is not None
        if wants_file and not Path(str(action.data)).expanduser().exists():
            return None
        return action

    # -- actions ----------------------------------------------------------------------

    def act(self, action: ChatAction, text: str = "") -> str:
        handler = getattr(self, f"_do_{action.action}")
        try:
            return str(handler(action, text))
        except MlpilotError as e:
            return f"I could not do that: {e}"

    def _do_quit(self, action: ChatAction, text: str) -> str:
        self.state.done = True
        return "Bye."

    def _do_help(self, action: ChatAction, text: str) -> str:
        lines = [f"- {name}: {meaning}" for name, meaning in ACTIONS.items() if name != "help"]
        return (
            "I can:\n" + "\n".join(lines) + "\nFor example: 'tune a model for data.csv, "
            "predict churn, 30 seconds', then 'now without the tenure column and compare'."
        )

    def _do_run(self, action: ChatAction, text: str) -> str:
        s = self.state
        s.request = text or s.request
        s.data, s.target, s.columns, s.drop = None, None, [], list(action.drop)
        s.metric = action.metric
        s.budget = action.seconds or s.budget
        if action.data is None:
            s.awaiting = "data"
            return "Which data file should I use? (a CSV, TSV or Parquet path)"
        return self._answer_data(action.data, target=action.target)

    def _answer_data(self, text: str, target: str | None = None) -> str:
        s = self.state
        path = Path(text.strip().strip("'\"")).expanduser()
        try:
            header = read_table(path)
        except MlpilotError as e:
            s.awaiting = "data"
            return f"{e}. Which data file should I use?"
        s.data = str(path)
        s.columns = [str(c) for c in header.columns]
        s.drop = [c for c in s.drop if c in s.columns] or find_columns(s.request, s.columns)
        s.target = target if target in s.columns else target_from_request(s.request, s.columns)
        if s.target is None:
            s.awaiting = "target"
            likely = _target_candidates(header)
            rest = [c for c in s.columns if c not in likely]
            shown = ", ".join(rest[:20]) + (" ..." if len(rest) > 20 else "")
            return (
                f"Which column should I predict? Likely: {', '.join(likely)}. "
                f"Other columns: {shown}"
            )
        return self._start()

    def _answer_target(self, text: str) -> str:
        s = self.state
        name = text.strip().strip("'\"`")
        found = next((c for c in s.columns if c.lower() == name.lower()), None)
        if found is None:
            found = target_from_request(text, s.columns)
        if found is None:
            return f"There is no column {name!r}. Which column should I predict?"
        s.target = found
        return self._start()

    def _start(self) -> str:
        s = self.state
        s.awaiting = None
        budget = s.budget or self.default_budget
        s.budget = budget
        runner = self.runner or self.pilot.run
        kwargs: dict[str, Any] = {"target": s.target, "time_budget": budget}
        if s.drop:
            kwargs["drop"] = tuple(s.drop)
        if s.metric:
            kwargs["metric"] = s.metric
        try:
            self.result = runner(s.request, Path(s.data or ""), **kwargs)
        except MlpilotError as e:
            return f"I could not run that: {e}"
        s.runs = [*s.runs, str(self.result.run_dir)]
        r = self.result
        if r.model is None:
            return (
                f"The run finished without a verified model; the report says why: {r.report_path}"
            )
        best = r.leaderboard.iloc[0] if len(r.leaderboard) else None
        lead = (
            f" Best single model: {best['family']} (CV {best['cv_score']:.4f})."
            if best is not None
            else ""
        )
        dropped = f" Without {', '.join(s.drop)}." if s.drop else ""
        n = len(r.leaderboard)
        return (
            f"Done ({budget:g} s budget). Holdout {r.metric_display} {r.holdout_score:.4f} "
            f"(CV {r.cv_score:.4f}), {n} verified trial{'s' if n != 1 else ''}.{lead}{dropped} "
            f"Report: {r.report_path}. Ask why it won, what the LLM did, which features "
            "mattered, what it cost — or for a variation ('without column X')."
        )

    def _do_rerun(self, action: ChatAction, text: str) -> str:
        s = self.state
        if not s.runs or s.data is None:
            return "There is no run to vary yet: start one with a data file."
        before = s.runs[-1]
        s.drop = list(dict.fromkeys([*s.drop, *action.drop]))
        if action.seconds:
            s.budget = action.seconds
        if action.metric:
            s.metric = action.metric
        s.request = s.request if not action.metric else f"{s.request}, optimise {action.metric}"
        reply = self._start()
        if len(s.runs) >= 2 and s.runs[-1] != before:
            reply += "\n" + self._compare_dirs(Path(before), Path(s.runs[-1]))
        return reply

    def _do_compare(self, action: ChatAction, text: str) -> str:
        from mlpilot.runs import find_run

        s = self.state
        if action.runs and len(action.runs) >= 2:
            a, b = (find_run(Path(self.pilot.runs_dir), n).path for n in action.runs[:2])
        elif len(s.runs) >= 2:
            a, b = Path(s.runs[-2]), Path(s.runs[-1])
        else:
            return "Comparing needs two runs: vary the last one first ('without column X')."
        return self._compare_dirs(a, b)

    def _compare_dirs(self, a: Path, b: Path) -> str:
        from mlpilot.agents.rundir import RunDir
        from mlpilot.runs import RunInfo, compare

        ia, ib = RunInfo(a, RunDir(a).meta()), RunInfo(b, RunDir(b).meta())
        rows = compare(ia, ib)
        lines = [f"{a.name} vs {b.name}:"]
        changed = [f"{label}: {left} → {right}" for label, left, right, diff in rows if diff]
        lines += changed or ["the two runs have the same settings and outcome"]
        for path in (a, b):
            top = self._importance(path, top=3)
            if top:
                lines.append(f"features that mattered in {path.name}: {top}")
        return "\n".join(lines)

    def _do_explain(self, action: ChatAction, text: str) -> str:
        view = self._view()
        if view is None:
            return "There is no run yet: give me a data file and what to predict."
        topic = action.topic or "winner"
        return {
            "winner": view.winner,
            "llm": view.llm,
            "leakage": view.leakage,
            "features": lambda: self._importance_text(view.path),
            "cost": view.cost,
            "leaderboard": view.leaderboard,
            "checks": view.checks,
            "report": view.report,
        }[topic]()

    def _do_predict(self, action: ChatAction, text: str) -> str:
        view = self._view()
        if view is None:
            return "There is no model yet: start a run first."
        if action.data is None:
            return "Which file should I predict? ('predict on new.csv')"
        source = Path(action.data).expanduser()
        loaded = Pilot.load(view.path)
        frame = read_table(source)
        proba = loaded.model.problem_type != "regression"
        table = loaded.prediction_table(frame, proba=proba)
        out = Path(action.out) if action.out else source.with_name(source.stem + ".predictions.csv")
        table.to_csv(out, index=False)
        what = "class probabilities (a column per class)" if proba else "predicted values"
        return f"Wrote {len(table)} rows of {what} to {out}."

    def _do_plot(self, action: ChatAction, text: str) -> str:
        view = self._view()
        if view is None:
            return "There is no run to plot yet."
        found = sorted(view.path.glob("plot-*.png"))
        if not found:
            return f"This run has no plots; its report is {view.path / 'report.md'}."
        wanted = [p for p in found if p.stem == f"plot-{action.plot}"]
        if action.plot and not wanted:
            return f"This run has no {PLOTS[action.plot]} plot; it has: " + ", ".join(
                _plot_title(p) for p in found
            )
        return "\n".join(f"{_plot_title(p)}: {p}" for p in wanted or found)

    def _do_profile(self, action: ChatAction, text: str) -> str:
        source = action.data or self.state.data
        if source is None:
            return "Which data file should I describe?"
        frame = read_table(Path(source).expanduser())
        return profile_text(frame, self.state.target if source == self.state.data else None)

    def _do_runs(self, action: ChatAction, text: str) -> str:
        from mlpilot.runs import list_runs

        root = Path(self.pilot.runs_dir)
        found = list_runs(root) if root.is_dir() else []
        if not found:
            return f"No runs in {root} yet."
        lines = [
            f"{r.name}: {r.meta.status}, {Path(r.meta.data).name} → {r.meta.target}, "
            f"holdout {_num(r.meta.holdout_score)}"
            for r in found[-10:]
        ]
        return "\n".join(lines)

    # -- reading runs -------------------------------------------------------------------

    def _view(self) -> RunView | None:
        return RunView(Path(self.state.runs[-1])) if self.state.runs else None

    def _importance(self, path: Path, top: int) -> str:
        pairs = permutation_importance(path)
        return ", ".join(f"{c} ({d:+.4f})" for d, c in pairs[:top])

    def _importance_text(self, path: Path, top: int = 8) -> str:
        pairs = permutation_importance(path)
        view = RunView(path)
        lines = [f"{col}: {drop:+.4f}" for drop, col in pairs[:top]]
        return (
            f"Drop in holdout {view.metric_display} when each feature is shuffled "
            "(bigger = mattered more):\n" + "\n".join(lines)
        )


class RunView:
    """A run directory read back for answers: only what the run verified and recorded."""

    def __init__(self, path: Path) -> None:
        from mlpilot.agents.graph import saved_state
        from mlpilot.agents.rundir import RunDir
        from mlpilot.tools.metrics import get_metric

        self.path = path
        self.meta = RunDir(path).meta()
        self.state = saved_state(path)
        self.metric_display = get_metric(self.meta.metric).display

    def _final(self) -> Any:
        return self.state.get("final")

    def winner(self) -> str:
        final = self._final()
        if final is None or not final.ok:
            return f"No verified model came out of {self.path.name}; see {self.report()}"
        plan = self.state.get("plan")
        why = f" The plan ({plan.source}): {plan.notes}" if plan is not None and plan.notes else ""
        board = self._verified()
        runners = "; ".join(f"{r.family} ({r.source}) CV {r.cv_score:.4f}" for r in board[1:3])
        return (
            f"The delivered model is {final.description}: CV {final.cv_score:.4f}, holdout "
            f"{self.metric_display} {final.holdout_score:.4f} (recomputed on the host)."
            + (f" Next best verified trials: {runners}." if runners else "")
            + why
        )

    def _verified(self) -> list[Any]:
        keys = set(self.state.get("verified", []))
        return [r for r in self.state.get("trials", []) if r.finished and r.key in keys]

    def leaderboard(self) -> str:
        rows = self._verified()[:5]
        if not rows:
            return "No verified trials."
        return "\n".join(
            f"{i + 1}. {r.family} ({r.source}): CV {r.cv_score:.4f}" for i, r in enumerate(rows)
        )

    def llm(self) -> str:
        plan = self.state.get("plan")
        if self.meta.no_llm:
            return "This run used no LLM: the default plan and plain TPE."
        lines = []
        if plan is not None:
            lines.append(f"plan: {plan.source}" + (f"; {plan.notes}" if plan.notes else ""))
        for family, info in (self.state.get("hpo") or {}).items():
            if info.llm:
                lines.append(
                    f"{family}: proposed {info.llm['proposed']} configurations, "
                    f"{info.llm['enqueued']} tried ({info.llm['invalid']} invalid)"
                )
        board = self._verified()
        by_llm = [i for i, r in enumerate(board) if r.source.startswith("llm")]
        if board:
            if by_llm:
                best = board[by_llm[0]]
                lines.append(
                    f"its best proposal ranks {by_llm[0] + 1} of {len(board)} verified trials "
                    f"({best.family}, CV {best.cv_score:.4f}; the best is CV "
                    f"{board[0].cv_score:.4f})"
                )
            else:
                lines.append("none of its proposals is among the verified trials")
        return "\n".join(lines) or "The LLM did not take part in this run."

    def leakage(self) -> str:
        found = [c for c in self.state.get("checks", []) if c.name == "leakage"]
        if not found:
            return "No leakage check was recorded."
        c = found[0]
        return ("No leak flagged: " if c.ok else "Leakage flags: ") + c.detail

    def checks(self) -> str:
        lines = []
        for c in self.state.get("checks", []):
            verdict = "ok" if c.ok else ("FAILED" if c.severity == "error" else "doubt")
            lines.append(f"{c.name}: {verdict} — {c.detail}")
        return "\n".join(lines) or "No checks were recorded."

    def cost(self) -> str:
        usage = read_usage(self.path)
        spent = f"The run took {self.meta.spent_s:.1f} s of its {self.meta.time_budget:g} s budget."
        if self.meta.no_llm or not usage:
            return spent + " No LLM was used, so it cost nothing in tokens."
        total = usage[-1]
        if not total.get("calls"):
            return spent + " The LLM was not called."
        return (
            f"{spent} The LLM answered {total['calls']} calls: {total['prompt_tokens']} tokens "
            f"in, {total['completion_tokens']} out, {float(total['latency_s']):.1f} s of "
            f"generation, ${float(total['cost_usd']):.4f}."
        )

    def report(self) -> str:
        return f"The report is {self.path / 'report.md'} (and report.html beside it)."


def read_usage(path: Path) -> list[dict[str, Any]]:
    """The run's LLM usage rows (per role, the total last), as its report step wrote them."""
    try:
        return list(json.loads((path / "llm-usage.json").read_text()))
    except (OSError, ValueError):
        return []


def permutation_importance(path: Path) -> list[tuple[float, str]]:
    """(drop in the holdout score when the column is shuffled, column), largest first,
    computed on the host as the report's feature plot is: the model the holdout scored
    (``model-train.skops`` when the delivered model was refit on every row, since that
    one has seen the holdout) on the run's own holdout rows."""
    from mlpilot.agents.plots import permutation_drops
    from mlpilot.agents.rundir import RunDir, task_of
    from mlpilot.tools import model_io

    run = RunDir(path)
    meta = run.meta()
    scored = run.train_model_path if run.train_model_path.exists() else run.model_path
    model = model_io.load(scored, what=f"the scored model of run {path}")
    task = task_of(meta)
    X = task.holdout.features.reset_index(drop=True)
    y = task.holdout._labels.to_numpy()

    def score(frame: pd.DataFrame) -> float:
        return _score(model, frame, y[frame.index.to_numpy()], task)

    drops = permutation_drops(score, X, task.metric.greater_is_better, seed=task.seed)
    return [(drop, col) for col, drop in drops]


def profile_text(frame: pd.DataFrame, target: str | None = None) -> str:
    """A data file described in a few lines: size, column kinds, missing values, the
    likely targets, and the target's classes or range when it is known."""
    numeric = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])]
    other = [c for c in frame.columns if c not in numeric]
    missing = frame.isna().mean()
    gaps = ", ".join(
        f"{c} {v:.0%}" for c, v in missing[missing > 0].sort_values()[::-1][:5].items()
    )
    lines = [
        f"{len(frame)} rows, {frame.shape[1]} columns: {len(numeric)} numeric, "
        f"{len(other)} other (text or categories).",
        f"Missing values: {gaps}." if gaps else "No missing values.",
        f"Likely targets: {', '.join(_target_candidates(frame))}.",
    ]
    if target is not None and target in frame.columns:
        y = frame[target]
        if pd.api.types.is_numeric_dtype(y) and y.nunique() > 10:
            lines.append(f"{target}: from {y.min():.4g} to {y.max():.4g}, median {y.median():.4g}.")
        else:
            shares = y.value_counts(normalize=True).head(6)
            lines.append(f"{target}: " + ", ".join(f"{k} {v:.0%}" for k, v in shares.items()))
    return "\n".join(lines)


def _plot_title(path: Path) -> str:
    return path.stem.removeprefix("plot-").replace("-", " ")


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def _score(model: Any, X: pd.DataFrame, y: np.ndarray, task: TaskSpec) -> float:
    from mlpilot.tools.metrics import predictions_for

    raw = model.predict_proba(X) if task.is_classification else model.predict(X)
    classes = list(model.classes_) if task.is_classification else None
    return task.metric(y, predictions_for(task.metric, raw, classes))
