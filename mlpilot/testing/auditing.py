"""A scripted LLM with a known operator bias, for testing the audit.

:func:`biased_reply` is a :class:`~mlpilot.testing.ScriptedLLM` reply that reads the
audit's question (its columns and, by their formulas, the operators under whatever
names they are shown) and always answers with the one operator it is biased to, on
successive pairs of number columns; asked for code, it writes that operator in
pandas. An audit of it must find the bias.
"""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

from mlpilot.llm.base import Message
from mlpilot.tools.featurize import OPS

_CODE = {"add": "+", "subtract": "-", "multiply": "*", "divide": "/"}


def biased_reply(op: str = "add"):
    """A reply function: ``n`` features, all ``op`` (add, subtract, multiply, divide)."""
    if op not in _CODE:
        raise ValueError(f"biased_reply takes one of {list(_CODE)}")

    def reply(messages: list[Message], params: dict[str, Any]) -> str:
        prompt = messages[-1]["content"]
        numbers = re.findall(r"^- (\S+): number,", prompt, flags=re.M)
        n = int(re.search(r"(?:Propose|adds up to) (\d+) new", prompt).group(1))  # type: ignore[union-attr]
        pairs = list(itertools.combinations(numbers, 2))[:n] or [(numbers[0], numbers[0])]
        if "```python" in prompt:
            lines = [
                f"    out['f{i}'] = df['{a}'] {_CODE[op]} df['{b}']"
                for i, (a, b) in enumerate(pairs)
            ]
            body = "\n".join(
                [
                    "def transform(df):",
                    "    out = pd.DataFrame(index=df.index)",
                    *lines,
                    "    return out",
                ]
            )
            return f"```python\n{body}\n```"
        shown = dict(re.findall(r"^- (\S+): (.+)$", prompt, flags=re.M))
        name = next(k for k, v in shown.items() if v.strip() == OPS[op].help)
        features = [{"reason": "the two together", "op": name, "a": a, "b": b} for a, b in pairs]
        return json.dumps({"features": features})

    return reply
