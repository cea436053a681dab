"""The LLM layer: one client protocol, litellm for every provider, an embedded
local default model, structured output with re-asking, a usage ledger with a
budget, and an on-disk response cache."""

from mlpilot.llm.base import (
    BudgetExceeded,
    Completion,
    LLMCallError,
    LLMClient,
    LLMError,
    LLMTimeout,
    LLMUnavailable,
    Message,
    StructuredOutputError,
    Usage,
)
from mlpilot.llm.cache import ResponseCache
from mlpilot.llm.client import LLM, make_llm
from mlpilot.llm.ledger import Budget, Ledger, RoleUsage
from mlpilot.llm.structured import structured

__all__ = [
    "LLM",
    "Budget",
    "BudgetExceeded",
    "Completion",
    "LLMCallError",
    "LLMClient",
    "LLMError",
    "LLMTimeout",
    "LLMUnavailable",
    "Ledger",
    "Message",
    "ResponseCache",
    "RoleUsage",
    "StructuredOutputError",
    "Usage",
    "make_llm",
    "structured",
]
