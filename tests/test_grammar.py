"""Compact-JSON grammars: what converts, what does not, and real answers under them."""

from __future__ import annotations

import json
import re

import pytest
from pydantic import BaseModel

from mlpilot.agents import llambo
from mlpilot.agents.features import answer_model
from mlpilot.agents.planner import RATIONALE_CHARS, PlanDraft
from mlpilot.llm import embedded
from mlpilot.llm.embedded import get_engine
from mlpilot.llm.grammar import compact_grammar
from mlpilot.llm.structured import response_format_for
from mlpilot.tools.search_spaces import SPACES


def _answer_models() -> list[type[BaseModel]]:
    models: list[type[BaseModel]] = [PlanDraft]
    models += [llambo.config_model(llambo.Model.family(f), 3) for f in SPACES]
    models += [answer_model(["age", "income", "city"], 3, code=c) for c in (False, True)]
    return models


@pytest.mark.parametrize("model", _answer_models(), ids=lambda m: m.__name__)
def test_every_answer_model_converts_and_allows_no_whitespace(model: type[BaseModel]) -> None:
    grammar = compact_grammar(model.model_json_schema())
    assert grammar is not None
    rules = dict(line.split(" ::= ", 1) for line in grammar.splitlines())
    assert rules["root"].startswith('"{"')
    # no literal holds a space, a newline or a tab, and character classes appear only
    # in the rules of string characters and numbers
    for name, body in rules.items():
        if name == "char":  # a string's characters (its class holds a quote)
            continue
        for literal in re.findall(r'"((?:[^"\\]|\\.)*)"', body):
            assert not re.search(r"\s|\\[nt]", literal), (name, literal)
        if "[" in re.sub(r'"(?:[^"\\]|\\.)*"', "", body):
            assert name in ("integer", "number"), (name, body)


def test_the_grammar_spells_keys_enums_and_bounds_exactly() -> None:
    grammar = compact_grammar(PlanDraft.model_json_schema())
    assert grammar is not None
    assert '"{" "\\"families\\":" ' in grammar
    assert '",\\"rationale\\":"' in grammar
    assert '"\\"lightgbm\\""' in grammar
    assert "{0,4}" in grammar  # at most 5 families: one, then up to four more
    assert f"char{{0,{RATIONALE_CHARS}}}" in grammar


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object"},  # a free dict
        {"type": "object", "properties": {"a": {"type": "string", "pattern": "^x"}}},
        {"type": "object", "properties": {"a": {"allOf": [{"type": "integer"}]}}},
        {"type": "array"},
        {"$ref": "https://example.org/schema"},
        {"type": "object", "properties": {"a": {"$ref": "#/$defs/Missing"}}},
    ],
)
def test_what_it_does_not_cover_falls_back(schema: dict) -> None:
    assert compact_grammar(schema) is None


def test_a_long_rationale_is_cut_at_a_word_not_refused() -> None:
    draft = PlanDraft(families=["linear"], rationale="word " * 100)
    assert len(draft.rationale) <= RATIONALE_CHARS + 1
    assert draft.rationale.endswith("word…")


@pytest.mark.embedded
@pytest.mark.parametrize(
    "model",
    [PlanDraft, llambo.config_model(llambo.Model.family("lightgbm"), 3)],
    ids=["plan", "lightgbm"],
)
def test_the_embedded_model_answers_compact_valid_json(embedded_model, model) -> None:
    prompt = (
        "Answer with JSON only. Fields: "
        + ", ".join(model.model_json_schema()["properties"])
        + ". For a small tabular binary classification task."
    )
    done = get_engine(embedded_model).chat(
        [{"role": "user", "content": prompt}],
        response_format=response_format_for(model),
        max_tokens=300,
        temperature=0.0,
        seed=0,
    )
    model.model_validate_json(done.text)
    assert done.text == json.dumps(json.loads(done.text), separators=(",", ":"), ensure_ascii=False)


@pytest.mark.embedded
def test_a_grammar_llama_cpp_refuses_is_asked_again_with_its_own_conversion(
    embedded_model, monkeypatch
) -> None:
    monkeypatch.setattr(embedded, "_compact", lambda _format: "root ::= (")
    monkeypatch.setattr(embedded, "_REFUSED_GRAMMARS", set())
    done = get_engine(embedded_model).chat(
        [{"role": "user", "content": "Pick model families for a small tabular task."}],
        response_format=response_format_for(PlanDraft),
        max_tokens=120,
        temperature=0.0,
    )
    PlanDraft.model_validate_json(done.text)
    assert "root ::= (" in embedded._REFUSED_GRAMMARS
    assert len(embedded._REFUSED_GRAMMARS) == 1
