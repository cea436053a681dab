"""Free feature code from capable LLMs: checked on the host, run only in the sandbox.

The contract, stated in the prompt::

    def fit(train):                # the training rows (a DataFrame, no target)
        return {...}               # what transform needs: JSON-like numbers and lists
    def transform(df, state):      # any rows, with the state fit returned
        return pd.DataFrame(...)   # the new columns only, one row per row of df

The host never executes it. A static check refuses, with the reason fed back to the
model, code that does not parse, lacks ``fit``/``transform``, imports anything but
numpy, pandas, math, re and datetime, or names what reads or writes files or
reaches past the language (``open``, ``eval``, ``__import__``, ``read_csv``,
``to_pickle``, dunder attributes). The sandbox is the wall behind that check: the
code runs per CV fold there, within the job's time and memory limits, and the job
refuses output with the wrong number of rows and output that depends on the batch
(the first rows transformed one at a time must equal the same rows in the batch).

Free code measured to help is reported, never delivered: mlpilot's delivered model
runs no LLM-written code, so the model is asked to restate the idea with the typed
operators, which the final model computes itself.
"""

from __future__ import annotations

import ast

ALLOWED_IMPORTS = frozenset({"numpy", "pandas", "math", "re", "datetime"})
FORBIDDEN_NAMES = frozenset(
    {
        "open",
        "exec",
        "eval",
        "compile",
        "__import__",
        "globals",
        "locals",
        "vars",
        "input",
        "breakpoint",
        "getattr",
        "setattr",
        "delattr",
        "memoryview",
        "exit",
        "quit",
    }
)
# DataFrame/Series methods that touch files or the clipboard
FILE_METHODS = ("read_", "to_csv", "to_parquet", "to_pickle", "to_json", "to_excel", "to_sql")
FILE_METHODS_EXTRA = frozenset({"to_feather", "to_hdf", "to_clipboard", "to_html", "to_xml"})
MAX_CODE_CHARS = 4000


def check_code(code: str) -> str | None:
    """Why ``code`` is refused before it runs anywhere, or None."""
    if len(code) > MAX_CODE_CHARS:
        return f"the code is {len(code)} characters long; at most {MAX_CODE_CHARS}"
    try:
        tree = ast.parse(code)
    except SyntaxError as e:
        return f"the code does not parse: {e.msg} (line {e.lineno})"
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    missing = [f for f in ("fit", "transform") if f not in defined]
    if missing:
        return f"the code must define fit(train) and transform(df, state); missing: {missing}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
            )
            for name in names:
                if name.split(".")[0] not in ALLOWED_IMPORTS:
                    return (
                        f"imports {name!r}; only {', '.join(sorted(ALLOWED_IMPORTS))} may be "
                        "imported"
                    )
        elif isinstance(node, ast.Name) and node.id in FORBIDDEN_NAMES:
            return f"uses {node.id!r}, which is not allowed (no files, no eval, no imports)"
        elif isinstance(node, ast.Attribute):
            attr = node.attr
            if attr.startswith("__"):
                return f"uses the attribute {attr!r}, which is not allowed"
            if attr.startswith(FILE_METHODS) or attr in FILE_METHODS_EXTRA:
                return f"calls {attr!r}: feature code may not read or write files"
    return None


def summarize(code: str) -> str:
    """A one-line name for a code proposal (its first comment or first line)."""
    for line in code.splitlines():
        text = line.strip()
        if text.startswith("#"):
            return "code: " + text.lstrip("# ")[:80]
    first = next((line.strip() for line in code.splitlines() if line.strip()), "")
    return "code: " + first[:80]
