"""Usage ledger and run-level budget for LLM calls."""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import asdict, dataclass, field

from mlpilot.errors import ConfigError
from mlpilot.llm.base import BudgetExceeded, Completion


@dataclass(frozen=True)
class Budget:
    """Limits on a run's LLM use. ``None`` means no limit on that axis.

    Once any limit is reached, further calls raise :class:`BudgetExceeded`
    (an :class:`LLMUnavailable`), so agents fall back to their non-LLM path.
    """

    max_tokens: int | None = None
    max_cost_usd: float | None = None
    max_llm_seconds: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_tokens", "max_cost_usd", "max_llm_seconds"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"Budget.{name} must be >= 0 or None, but got {value!r}")


@dataclass
class RoleUsage:
    """Totals for one agent role."""

    calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    failures: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Ledger:
    """Counts tokens, cost and latency per role, and enforces a :class:`Budget`.

    Thread-safe: parallel workers may record into one ledger.
    """

    budget: Budget = field(default_factory=Budget)
    by_role: dict[str, RoleUsage] = field(default_factory=lambda: defaultdict(RoleUsage))
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def record(self, role: str, completion: Completion) -> None:
        with self._lock:
            usage = self.by_role[role]
            usage.calls += 1
            usage.cache_hits += int(completion.cached)
            usage.prompt_tokens += completion.usage.prompt_tokens
            usage.completion_tokens += completion.usage.completion_tokens
            usage.cost_usd += completion.cost_usd
            usage.latency_s += completion.latency_s

    def record_failure(self, role: str, latency_s: float) -> None:
        with self._lock:
            usage = self.by_role[role]
            usage.failures += 1
            usage.latency_s += latency_s

    def total(self) -> RoleUsage:
        out = RoleUsage()
        with self._lock:
            for u in self.by_role.values():
                for name, value in asdict(u).items():
                    setattr(out, name, getattr(out, name) + value)
        return out

    def exhausted(self) -> str | None:
        """Returns why the budget is spent, or None while some is left."""
        t, b = self.total(), self.budget
        if b.max_tokens is not None and t.total_tokens >= b.max_tokens:
            return f"token budget spent: {t.total_tokens} of {b.max_tokens} tokens used"
        if b.max_cost_usd is not None and t.cost_usd >= b.max_cost_usd:
            return f"cost budget spent: ${t.cost_usd:.4f} of ${b.max_cost_usd:.4f} used"
        if b.max_llm_seconds is not None and t.latency_s >= b.max_llm_seconds:
            return f"LLM time budget spent: {t.latency_s:.1f} s of {b.max_llm_seconds:.1f} s used"
        return None

    def check(self) -> None:
        """Raises :class:`BudgetExceeded` if the budget is spent."""
        reason = self.exhausted()
        if reason is not None:
            raise BudgetExceeded(reason)

    def as_rows(self) -> list[dict[str, object]]:
        """One row per role plus a total row, for reports and tables."""
        with self._lock:
            items = sorted(self.by_role.items())
        rows: list[dict[str, object]] = [{"role": r, **asdict(u)} for r, u in items]
        rows.append({"role": "total", **asdict(self.total())})
        return rows
