"""Free pandas feature code, read into the operator classes of the typed vocabulary.

The audit asks an LLM for features three ways; in the free-code form the answer is
Python, and to compare its operator mix with the typed answers each new column is
read back into the classes of :data:`mlpilot.tools.featurize.OPS` (plus ``other``)
by walking the code's syntax tree; nothing is executed. ``a + b`` is ``add``,
``np.log(a)`` is ``log``, ``df.groupby(k)[v].transform("mean")`` is
``group_mean``, ``a.astype(str) + "_" + b.astype(str)`` is ``combine``,
``a.map(a.value_counts())`` is ``frequency``; what has no class (``np.exp``, a
lambda, ``np.where``) is ``other``.

A feature is a column the code assigns (``df["x"] = ...``, ``df.loc[:, "x"] = ...``,
``df.assign(x=...)``, or a key of a dict handed to ``pd.DataFrame``/returned) inside
``transform`` when the code defines one, and that computes something (a copy or a
rename of a column is not a feature). Names
assigned earlier are followed, so ``r = df.a / df.b; df["lr"] = np.log(r)`` is one
feature whose operators are ``log`` then ``divide``. The first (outermost) operator
is the feature's class; all of them are kept.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

OTHER = "other"

_UNARY_CALLS = {
    "log": "log",
    "log1p": "log",
    "log2": "log",
    "log10": "log",
    "sqrt": "sqrt",
    "cbrt": "sqrt",
    "abs": "abs",
    "absolute": "abs",
    "fabs": "abs",
    "square": "square",
    "reciprocal": "reciprocal",
    "round": "bin",
    "floor": "bin",
    "ceil": "bin",
    "rint": "bin",
    "digitize": "bin",
    "cut": "bin",
    "qcut": "bin",
}
_BINARY_CALLS = {
    "minimum": "min",
    "fmin": "min",
    "maximum": "max",
    "fmax": "max",
    "add": "add",
    "subtract": "subtract",
    "sub": "subtract",
    "multiply": "multiply",
    "mul": "multiply",
    "divide": "divide",
    "div": "divide",
    "true_divide": "divide",
    "truediv": "divide",
}
_GROUP_AGGS = {
    "mean": "group_mean",
    "average": "group_mean",
    "median": "group_median",
    "min": "group_min",
    "max": "group_max",
    "std": "group_std",
    "var": "group_std",
    "count": "group_count",
    "size": "group_count",
    "nunique": "group_count",
    "rank": "group_rank",
}
_DATE_PARTS = {
    "year": "year",
    "month": "month",
    "day": "day",
    "dayofweek": "weekday",
    "weekday": "weekday",
    "day_of_week": "weekday",
    "hour": "hour",
    "dayofyear": "month",
    "quarter": "month",
}


# calls that convert or tidy a column without computing anything of their own
_TRANSPARENT = frozenset(
    {
        "astype",
        "fillna",
        "copy",
        "to_numpy",
        "values",
        "clip",
        "Series",
        "DataFrame",
        "to_datetime",
        "to_numeric",
        "float",
        "int",
        "asarray",
        "array",
        "reset_index",
    }
)


# operators whose construct is read as a whole (not descended into)
_WHOLE = frozenset(
    {OTHER, "combine", "frequency", "text_length", "word_count", *_DATE_PARTS.values()}
)


@dataclass
class CodeFeature:
    """One column the code adds: its name, its class and every operator in it."""

    name: str
    op: str
    ops: list[str] = field(default_factory=list)


def classify_code(code: str) -> list[CodeFeature] | None:
    """The features ``code`` adds, in order; None when the code does not parse."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None
    # only the transform function when there is one: example usage after it is not
    # a feature
    body = next(
        (n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "transform"), tree
    )
    reader = _Reader()
    if isinstance(body, ast.FunctionDef):
        for node in body.body:
            reader.visit(node)
    else:
        reader.visit(body)
    # a column copied or renamed computes nothing: not a feature
    return [CodeFeature(name, ops[0], ops) for name, ops in reader.features if ops]


def classify_expression(source: str) -> list[str]:
    """The operators of one expression, outermost first (``["other"]`` for none)."""
    expr = ast.parse(source, mode="eval").body
    return _Reader().ops(expr) or [OTHER]


class _Reader(ast.NodeVisitor):
    """Collects assigned columns, and the names bound on the way (to follow them)."""

    def __init__(self) -> None:
        self.features: list[tuple[str, list[str]]] = []  # a column and its operators
        self.names: dict[str, ast.expr] = {}  # what a name was last bound to
        self.known: dict[str, list[str]] = {}  # the operators of names and columns so far

    # -- what the code assigns ---------------------------------------------------------

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        if node.name != "fit":  # fit returns the learnt state, not columns
            self.generic_visit(node)

    def visit_Assign(self, node: ast.Assign) -> None:
        for target in node.targets:
            self._assign(target, node.value)
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        target = node.target
        combined = ast.BinOp(left=_copy_load(target), op=node.op, right=node.value)
        self._assign(target, combined)

    def visit_Return(self, node: ast.Return) -> None:
        if node.value is not None:
            self._columns_of(node.value)
        self.generic_visit(node)

    def _assign(self, target: ast.expr, value: ast.expr) -> None:
        column = _column_key(target)
        if column is not None:
            self._feature(column, value)
            return
        if isinstance(target, ast.Name):
            if not self._columns_of(value):
                self.known[target.id] = self.ops(value)
                previous = self.names.get(target.id)
                self.names[target.id] = (
                    _Inline(target.id, previous).visit(_copy_load(value)) if previous else value
                )
        elif isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple):
            for t, v in zip(target.elts, value.elts, strict=False):
                self._assign(t, v)

    def _columns_of(self, value: ast.expr) -> bool:
        """Features in ``df.assign(x=...)``, ``pd.DataFrame({...})`` or a dict."""
        if isinstance(value, ast.Call) and _attr(value.func) == "assign":
            for kw in value.keywords:
                if kw.arg is not None:
                    self._feature(kw.arg, kw.value)
            return bool(value.keywords)
        if isinstance(value, ast.Call) and _attr(value.func) == "DataFrame" and value.args:
            return self._columns_of(value.args[0])
        if isinstance(value, ast.Dict):
            found = False
            for key, item in zip(value.keys, value.values, strict=True):
                if isinstance(key, ast.Constant) and isinstance(key.value, str):
                    self._feature(key.value, item)
                    found = True
            return found
        return False

    def _feature(self, column: str, value: ast.expr) -> None:
        ops = self.ops(value)  # now: a later ``df["x"] += 1`` sees this one
        self.features.append((column, ops))
        self.known[f"[{column}]"] = ops

    # -- what an expression computes ---------------------------------------------------

    def ops(self, node: ast.expr, depth: int = 0) -> list[str]:
        """Operators in ``node``, outermost first, following names bound earlier."""
        if depth > 40:
            return []
        if isinstance(node, ast.Name):
            return list(self.known.get(node.id, []))
        column = _column_key(node)
        if column is not None and f"[{column}]" in self.known:
            return list(self.known[f"[{column}]"])
        here = self._op(node)
        inner = [self.ops(child, depth + 1) for child in self._operands(node, here)]
        return ([here] if here else []) + [op for ops in inner for op in ops]

    def _operands(self, node: ast.expr, here: str | None) -> list[ast.expr]:
        if here in _WHOLE or (here or "").startswith("group_"):
            return []  # the whole construct is one operator
        if isinstance(node, ast.BinOp):
            return [node.left, node.right]
        if isinstance(node, ast.UnaryOp):
            return [node.operand]
        if isinstance(node, ast.Call):
            base = [node.func.value] if isinstance(node.func, ast.Attribute) else []
            return base + list(node.args) + [k.value for k in node.keywords]
        if isinstance(node, ast.Attribute):
            return [node.value]
        if isinstance(node, ast.Subscript):
            return [node.value]
        return [c for c in ast.iter_child_nodes(node) if isinstance(c, ast.expr)]

    def _op(self, node: ast.expr) -> str | None:
        if isinstance(node, ast.BinOp):
            return self._binop(node)
        if isinstance(node, ast.Call):
            return self._call(node)
        if isinstance(node, ast.Attribute):
            if node.attr in _DATE_PARTS and _attr(node.value) == "dt":
                return _DATE_PARTS[node.attr]
            return None
        if isinstance(node, ast.Lambda | ast.IfExp | ast.Compare | ast.BoolOp):
            return OTHER
        return None

    def _binop(self, node: ast.BinOp) -> str:
        op = node.op
        if isinstance(op, ast.Add):
            return "combine" if self._stringy(node.left) or self._stringy(node.right) else "add"
        if isinstance(op, ast.Sub):
            return "subtract"
        if isinstance(op, ast.Mult):
            return "square" if ast.dump(node.left) == ast.dump(node.right) else "multiply"
        if isinstance(op, ast.Div | ast.FloorDiv):
            one = isinstance(node.left, ast.Constant) and node.left.value == 1
            return "reciprocal" if one else "divide"
        if isinstance(op, ast.Pow) and isinstance(node.right, ast.Constant):
            power = node.right.value
            return {2: "square", 0.5: "sqrt", -1: "reciprocal"}.get(power, OTHER)  # type: ignore[arg-type]
        return OTHER

    def _call(self, node: ast.Call) -> str | None:
        name = _attr(node.func)
        if name is None:
            return OTHER
        group = self._group_op(node)
        if group is not None:
            return group
        if name == "map" and node.args and self._counts(node.args[0]):
            return "frequency"
        if name in ("len", "count") and _attr_chain(node.func)[-2:-1] == ["str"]:
            accessor = node.func.value  # type: ignore[attr-defined]  # the .str
            split = isinstance(accessor.value, ast.Call) and _attr(accessor.value.func) == "split"
            return "word_count" if split or name == "count" else "text_length"
        if name == "len" and self._is_split(node):
            return "word_count"
        if name == "cat" and _attr_chain(node.func)[-2:-1] == ["str"]:
            return "combine"
        if name in ("min", "max") and self._row_wise(node):
            return name
        if name in _BINARY_CALLS and (len(node.args) >= 2 or isinstance(node.func, ast.Attribute)):
            if name in ("min", "max"):
                return None
            return _BINARY_CALLS[name]
        if name in ("pow", "power") and len(node.args) >= 1:
            power = node.args[-1]
            if isinstance(power, ast.Constant):
                return {2: "square", 0.5: "sqrt", -1: "reciprocal"}.get(power.value, OTHER)  # type: ignore[arg-type]
            return OTHER
        if name in _UNARY_CALLS:
            return _UNARY_CALLS[name]
        if name in _TRANSPARENT:
            return None
        return OTHER

    def _group_op(self, node: ast.Call) -> str | None:
        """``groupby(k)[v].transform(agg)``, ``groupby(k)[v].rank()``, and a map of a
        grouped aggregate back onto the key (``df.k.map(df.groupby(k)[v].mean())``)."""
        name = _attr(node.func)
        if name == "map" and node.args:
            inner = node.args[0]
            if isinstance(inner, ast.Call) and self._grouped(inner.func):
                agg = _attr(inner.func)
                return _GROUP_AGGS.get(agg or "", OTHER)
            return None
        if not self._grouped(node.func):
            return None
        if name == "transform" and node.args:
            arg = node.args[0]
            agg = arg.value if isinstance(arg, ast.Constant) else _attr(arg)
            return _GROUP_AGGS.get(str(agg), OTHER)
        if name in _GROUP_AGGS:
            return _GROUP_AGGS[name]
        return OTHER if name in ("apply", "agg", "aggregate") else None

    def _grouped(self, func: ast.expr) -> bool:
        """Whether a method is called on something grouped (``...groupby(...)...``)."""
        node = func.value if isinstance(func, ast.Attribute) else None
        for _ in range(100):  # a name bound to itself cannot loop forever
            if node is None:
                return False
            if isinstance(node, ast.Call):
                if _attr(node.func) == "groupby":
                    return True
                node = node.func.value if isinstance(node.func, ast.Attribute) else None
            elif isinstance(node, ast.Subscript | ast.Attribute):
                node = node.value
            elif isinstance(node, ast.Name) and node.id in self.names:
                node = self.names[node.id]
            else:
                return False
        return False

    def _counts(self, node: ast.expr, depth: int = 0) -> bool:
        """A ``value_counts()`` (possibly normalised, or divided by a length)."""
        if depth > 20:
            return False
        if isinstance(node, ast.Name) and node.id in self.names:
            return self._counts(self.names[node.id], depth + 1)
        if isinstance(node, ast.Call):
            if _attr(node.func) == "value_counts":
                return True
            return isinstance(node.func, ast.Attribute) and self._counts(node.func.value, depth + 1)
        if isinstance(node, ast.BinOp):
            return self._counts(node.left, depth + 1)
        return False

    def _stringy(self, node: ast.expr, depth: int = 0) -> bool:
        """Whether an operand of ``+`` is text: a string, ``astype(str)``, ``str(...)``."""
        if depth > 20:
            return False
        if isinstance(node, ast.Constant):
            return isinstance(node.value, str)
        if isinstance(node, ast.Name):
            bound = self.names.get(node.id)
            return bound is not None and self._stringy(bound, depth + 1)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return self._stringy(node.left, depth + 1) or self._stringy(node.right, depth + 1)
        if isinstance(node, ast.Call):
            name = _attr(node.func)
            if name == "astype" and node.args:
                arg = node.args[0]
                return (isinstance(arg, ast.Name) and arg.id == "str") or (
                    isinstance(arg, ast.Constant) and arg.value in ("str", "string")
                )
            return name == "str"
        return False

    @staticmethod
    def _row_wise(node: ast.Call) -> bool:
        """``df[[a, b]].min(axis=1)``: a row-wise minimum over columns."""
        return any(
            kw.arg == "axis"
            and isinstance(kw.value, ast.Constant)
            and kw.value.value in (1, "columns")
            for kw in node.keywords
        )

    @staticmethod
    def _is_split(node: ast.Call) -> bool:
        return bool(node.args) and any(
            isinstance(n, ast.Call) and _attr(n.func) == "split" for n in ast.walk(node.args[0])
        )


class _Inline(ast.NodeTransformer):
    """``c = c / n``: the new ``c`` with the old one written in, so it never names itself."""

    def __init__(self, name: str, previous: ast.expr) -> None:
        self.name, self.previous = name, previous

    def visit_Name(self, node: ast.Name) -> ast.expr:
        return self.previous if node.id == self.name else node


def _attr(func: ast.expr) -> str | None:
    """The called name: ``np.log`` → ``log``, ``len`` → ``len``."""
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return None


def _attr_chain(node: ast.expr) -> list[str]:
    """``df.a.str.len`` → ``["df", "a", "str", "len"]`` (calls and subscripts skipped)."""
    out: list[str] = []
    while True:
        if isinstance(node, ast.Attribute):
            out.append(node.attr)
            node = node.value
        elif isinstance(node, ast.Call | ast.Subscript):
            node = node.func if isinstance(node, ast.Call) else node.value
        elif isinstance(node, ast.Name):
            out.append(node.id)
            break
        else:
            break
    return out[::-1]


def _column_key(target: ast.expr) -> str | None:
    """The column name in ``df["x"]``/``df.loc[:, "x"]``/``df.x`` (as a target)."""
    if isinstance(target, ast.Subscript):
        key = target.slice
        if isinstance(key, ast.Tuple) and len(key.elts) == 2:
            key = key.elts[1]
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            return key.value
        if isinstance(key, ast.JoinedStr):
            return ast.unparse(key)
    return None


def _copy_load(node: ast.expr) -> ast.expr:
    copied = ast.parse(ast.unparse(node), mode="eval").body
    return copied
