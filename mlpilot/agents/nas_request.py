"""What a pruning request asks for, read from the user's words.

"make this text classifier smaller, keep accuracy within 1 point" asks for the
NAS pruning step with a tolerance of one accuracy point; "half the size",
"3x smaller" or "30% of the parameters" set a size target; "under 5 ms per
example" sets a latency target (and makes latency the objective next to the
error). The reading is deterministic: the numbers in a constraint are the user's,
and a model does not get to paraphrase them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_TOLERANCE = 0.01  # one accuracy point, when the request names none

# Whole words in the forms a request uses, so that a column named in the request
# ("predict compressive_strength", "predict latency") is not read as a pruning ask.
_ASK = re.compile(
    r"\b(?:prun(?:e|es|ed|ing)|smaller|shrink(?:s|ing)?|compress(?:es|ed|ing|ion)?|"
    r"slim(?:mer|med|ming)?|distil(?:l|ls|led|ling|lation)?|fewer\s+param(?:eter)?s|"
    r"(?:lower|less|reduce[sd]?)\s+(?:the\s+)?latency|latency\s+(?:under|below|of\s+at\s+most)|"
    r"faster\s+(?:model|classifier|inference)|(?:model|classifier|it)\s+faster|"
    r"speed\s+up\s+(?:the\s+)?(?:model|classifier|inference))\b",
    re.IGNORECASE,
)
_NUMBER = r"(\d+(?:\.\d+)?)"
_TOLERANCE = [
    re.compile(rf"within\s+{_NUMBER}\s*(?:accuracy\s+)?(?:%|percent|points?|pp|pts?)", re.I),
    re.compile(
        rf"(?:lose|losing|loss\s+of|drop\s+of|drops?)\s+(?:at\s+most\s+|no\s+more\s+than\s+|"
        rf"less\s+than\s+|under\s+|up\s+to\s+)?{_NUMBER}\s*(?:%|percent|points?|pp|pts?)",
        re.I,
    ),
    re.compile(
        rf"(?:at\s+most|no\s+more\s+than|up\s+to)\s+{_NUMBER}\s*(?:%|percent|points?|pp|pts?)"
        r"\s+(?:of\s+)?(?:accuracy\s+)?(?:loss|drop|lower|worse)",
        re.I,
    ),
]
_SAME_ACCURACY = re.compile(
    r"\b(?:same|no\s+loss\s+(?:of|in)|without\s+losing|keep\w*\s+(?:the\s+)?)\s*accuracy\b", re.I
)
_FRACTION_WORDS = {"half": 0.5, "a third": 1 / 3, "a quarter": 0.25, "a fourth": 0.25}
_TIMES = re.compile(rf"{_NUMBER}\s*(?:x|×|times)\s+smaller", re.I)
_PERCENT_SIZE = re.compile(
    rf"{_NUMBER}\s*%\s+(?:of\s+)?(?:the\s+)?(?:its\s+)?(?:original\s+)?"
    r"(?:size|param\w*|weights)",
    re.I,
)
_PERCENT_SMALLER = re.compile(rf"{_NUMBER}\s*%\s+(?:smaller|fewer\s+param\w*|less)", re.I)
_LATENCY = re.compile(
    rf"(?:under|below|less\s+than|at\s+most|within|<=?)\s*{_NUMBER}\s*(?:ms|milliseconds?)", re.I
)


@dataclass(frozen=True)
class PruningAsk:
    """A pruning request's constraint.

    Attributes:
        tolerance: accuracy the pruned model may lose (0.01: one point).
        max_params: encoder parameters as a fraction of the full encoder's, at most.
        max_latency_ms: CPU milliseconds per example, at most.
        objective: ``latency`` when the request is about speed, else ``params``.
        said: the constraint in words, for the plan's notes.
    """

    tolerance: float = DEFAULT_TOLERANCE
    max_params: float | None = None
    max_latency_ms: float | None = None
    objective: str = "params"
    said: str = ""


def asks_for_pruning(request: str) -> bool:
    """Whether the request asks for a smaller or faster model."""
    return bool(_ASK.search(request or ""))


def read_pruning_request(request: str) -> PruningAsk:
    """The constraint a pruning request states (defaults where it states none)."""
    text = request or ""
    tolerance = None
    for pattern in _TOLERANCE:
        m = pattern.search(text)
        if m:
            tolerance = float(m.group(1)) / 100.0
            break
    if tolerance is None and _SAME_ACCURACY.search(text) and not re.search(r"\bwithin\b", text):
        tolerance = 0.0 if re.search(r"\bsame\s+accuracy|no\s+loss", text, re.I) else None
    max_params = None
    m = _TIMES.search(text)
    if m and float(m.group(1)) > 1:
        max_params = 1.0 / float(m.group(1))
    for word, value in _FRACTION_WORDS.items():
        if max_params is None and re.search(
            rf"\b{word}\s+(?:the\s+|its\s+)?(?:size|param)", text, re.I
        ):
            max_params = value
    m = _PERCENT_SIZE.search(text)
    if max_params is None and m:
        max_params = float(m.group(1)) / 100.0
    m = _PERCENT_SMALLER.search(text)
    if max_params is None and m:
        max_params = 1.0 - float(m.group(1)) / 100.0
    latency = None
    m = _LATENCY.search(text)
    if m:
        latency = float(m.group(1))
    speed = latency is not None or bool(re.search(r"\b(?:faster|latency|speed\s+up)\b", text, re.I))
    tol = DEFAULT_TOLERANCE if tolerance is None else tolerance
    parts = [f"accuracy within {tol * 100:g} point{'s' if tol != 0.01 else ''}"]
    if tolerance is None:
        parts[0] += " (the default)"
    if max_params is not None:
        parts.append(f"encoder parameters <= {max_params:.0%}")
    if latency is not None:
        parts.append(f"CPU latency <= {latency:g} ms per example")
    return PruningAsk(
        tolerance=tol,
        max_params=None if max_params is None else min(1.0, max(0.0, max_params)) or None,
        max_latency_ms=latency,
        objective="latency" if speed and max_params is None else "params",
        said=", ".join(parts),
    )
