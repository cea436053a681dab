"""TaskSpec: what is to be learned, from which data, judged by which metric.

Every bad-input error a user can cause with their data is raised here, as a
:class:`~mlpilot.errors.DataError` that states the rule and the value, before
anything deeper (pandas, scikit-learn) can fail with a traceback.
"""

from __future__ import annotations

import contextlib
import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from mlpilot.errors import ConfigError, DataError
from mlpilot.tools.data import check_duplicate_names, read_table, select_columns
from mlpilot.tools.metrics import (
    Metric,
    ProblemType,
    default_metric,
    get_metric,
    metric_from_request,
)

Modality = Literal["tabular", "text"]

MAX_CLASSES_FOR_INTEGER_TARGET = 20  # an integer target with more levels is a regression
_ID_NAME = re.compile(r"(^|[_\W])(id|uuid|guid|key|index)$|^unnamed: ?\d+$", re.IGNORECASE)
# A counter named like this is a time axis (a trend feature), not a row number.
_TIME_NAME = re.compile(
    r"(^|[_\W])(t|time|date|year|quarter|month|week|day|hour|minute|period|step|epoch|since)s?"
    r"($|[_\W])|since|elapsed",
    re.IGNORECASE,
)
_TEXT_MIN_MEAN_CHARS = 30


@dataclass(frozen=True)
class Holdout:
    """The rows kept back for the final check. Its labels stay in the host process:
    jobs get ``features`` only, and scoring happens through :meth:`TaskSpec.score_holdout`."""

    features: pd.DataFrame
    _labels: pd.Series = field(repr=False)


@dataclass(frozen=True)
class TaskSpec:
    """A supervised learning task, checked and ready for the agents.

    Build it with :meth:`from_data`. ``train`` holds the features and the
    target; the holdout's labels are private to this object.
    """

    name: str
    target: str
    problem_type: ProblemType
    metric: Metric
    modality: Modality
    feature_columns: tuple[str, ...]
    text_columns: tuple[str, ...]
    dropped_columns: dict[str, str]
    warnings: tuple[str, ...]
    classes: tuple[Any, ...] | None
    train: pd.DataFrame
    holdout: Holdout
    seed: int

    @property
    def X(self) -> pd.DataFrame:
        return self.train[list(self.feature_columns)]

    @property
    def y(self) -> pd.Series:
        return self.train[self.target]

    @property
    def is_classification(self) -> bool:
        return self.problem_type != "regression"

    def score_holdout(self, predictions: Any) -> float:
        """Scores predictions for the holdout rows with the task's metric, on the host."""
        preds = np.asarray(predictions)
        n = len(self.holdout.features)
        if preds.shape[0] != n:
            raise DataError(f"expected {n} holdout predictions, but got {preds.shape[0]}")
        if preds.dtype.kind == "f" and np.isnan(preds).any():
            raise DataError("holdout predictions contain NaN")
        return self.metric(self.holdout._labels.to_numpy(), preds)

    def all_rows(self) -> pd.DataFrame:
        """Every row the user gave (training rows, then the holdout's), with the target:
        what the delivered model is refit on once the holdout has been scored. Nothing
        else may read the holdout's labels."""
        holdout = self.holdout.features.assign(**{self.target: self.holdout._labels.to_numpy()})
        both = pd.concat([self.train, holdout[self.train.columns]], ignore_index=True)
        for column, dtype in self.train.dtypes.items():  # keep the training rows' types
            if both[column].dtype == dtype:
                continue
            if isinstance(dtype, pd.CategoricalDtype):
                seen = list(dtype.categories)
                new = [v for v in pd.unique(both[column].dropna()) if v not in set(seen)]
                both[column] = pd.Categorical(both[column], categories=seen + new)
            else:
                with contextlib.suppress(TypeError, ValueError):
                    both[column] = both[column].astype(dtype)
        return both

    def folds(self, k: int) -> np.ndarray:
        """The cross-validation fold (0..k-1) of each training row, decided on the host
        and handed to every job: stratified for classification, seeded by ``seed``."""
        from sklearn.model_selection import KFold, StratifiedKFold

        if k < 2:
            raise ConfigError(f"cross-validation needs at least 2 folds, but got {k}")
        splitter = (
            StratifiedKFold(n_splits=k, shuffle=True, random_state=self.seed)
            if self.is_classification
            else KFold(n_splits=k, shuffle=True, random_state=self.seed)
        )
        fold = np.empty(len(self.train), dtype=np.int64)
        for i, (_, valid) in enumerate(splitter.split(self.X, self.y)):
            fold[valid] = i
        return fold

    def check_features(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Checks that new data has the training columns; returns them in training order.

        Extra columns (the target among them) are ignored.
        """
        return select_columns(frame, list(self.feature_columns))

    def describe(self) -> str:
        """A short human-readable summary."""
        n_hold = len(self.holdout.features)
        parts = [
            f"task {self.name!r}: {self.problem_type} ({self.modality}), target {self.target!r}",
            f"metric {self.metric}",
            f"{len(self.train)} training rows, {n_hold} holdout rows, "
            f"{len(self.feature_columns)} features",
        ]
        if self.dropped_columns:
            parts.append(
                "dropped: " + ", ".join(f"{c} ({r})" for c, r in self.dropped_columns.items())
            )
        return "; ".join(parts)

    @classmethod
    def from_data(
        cls,
        data: pd.DataFrame | str | Path,
        *,
        request: str = "",
        target: str | None = None,
        metric: str | None = None,
        problem_type: ProblemType | None = None,
        holdout_fraction: float = 0.2,
        seed: int = 0,
        name: str | None = None,
        encoding: str = "utf-8",
        drop: Sequence[str] = (),
    ) -> TaskSpec:
        """Loads and checks the data, infers what is not given, and carves the holdout.

        Args:
            data: a DataFrame, or a path to a CSV/TSV/Parquet file.
            request: the user's words; used to find the target ("predict price")
                and the metric ("optimise AUC") when they are not given.
            target: the target column (wins over the request).
            metric: a metric name (wins over the request).
            problem_type: force "binary", "multiclass" or "regression".
            holdout_fraction: share of rows kept back for the final check.
            seed: seeds the holdout split.
            name: a label for reports (default: the file's stem).
            encoding: the text encoding of a CSV/TSV file.
            drop: columns to leave out (a suspected leak, say); each must exist.

        Raises:
            DataError: the data breaks a rule (the message says which, with the value).
            ConfigError: an option is invalid (unknown metric, bad fraction).
        """
        if not 0.0 < holdout_fraction < 0.9:
            raise ConfigError(f"holdout_fraction must be in (0, 0.9), but got {holdout_fraction}")
        if isinstance(data, pd.DataFrame):
            frame = data.copy()
            check_duplicate_names(frame.columns, "the DataFrame")
            label = name or "dataframe"
        elif isinstance(data, (str, Path)):
            frame = read_table(data, encoding=encoding)
            label = name or Path(data).stem
        else:
            raise DataError(
                f"data must be a pandas DataFrame or a file path, but got {type(data).__name__}"
            )
        frame.columns = [str(c) for c in frame.columns]
        if frame.shape[1] == 0:
            raise DataError("the data has no columns")
        if len(frame) == 0:
            raise DataError("the data has a header but no rows")

        target = _resolve_target(frame, target, request)
        missing_target = int(frame[target].isna().sum())
        warnings: list[str] = []
        if missing_target:
            frame = frame[frame[target].notna()].reset_index(drop=True)
            warnings.append(f"dropped {missing_target} row(s) whose target {target!r} is missing")
        if len(frame) == 0:
            raise DataError(
                f"no rows are left after dropping rows with a missing target {target!r}"
            )

        y = frame[target]
        ptype = problem_type or _infer_problem_type(y)
        if ptype not in ("binary", "multiclass", "regression"):
            raise ConfigError(
                f"problem_type must be 'binary', 'multiclass' or 'regression', but got {ptype!r}"
            )
        _check_target(y, target, ptype)

        chosen = (
            get_metric(metric, ptype)
            if metric
            else _metric_for(request, ptype) or default_metric(ptype)
        )

        features = [c for c in frame.columns if c != target]
        dropped: dict[str, str] = {}
        for col in drop:
            if col == target:
                raise DataError(f"cannot drop the target column {target!r}")
            if col not in frame.columns:
                raise DataError(
                    f"cannot drop column {col!r}: no such column{_suggest(col, features)}"
                )
            dropped[col] = "dropped on request"
            warnings.append(f"dropped column {col!r} on request")
        text_columns: list[str] = []
        for col in [c for c in features if c not in dropped]:
            reason, is_text = _inspect_column(frame[col], col)
            if reason:
                dropped[col] = reason
                warnings.append(f"dropped column {col!r}: {reason}")
            elif is_text:
                text_columns.append(col)
        kept = [c for c in features if c not in dropped]
        if not kept:
            raise DataError(
                f"no usable feature columns remain besides the target {target!r}; "
                f"dropped: {', '.join(f'{c} ({r})' for c, r in dropped.items()) or 'none'}"
            )

        classes = tuple(sorted(y.unique().tolist(), key=str)) if ptype != "regression" else None
        stratify = y if ptype != "regression" else None
        n_hold = max(1, round(len(frame) * holdout_fraction))
        if stratify is not None and n_hold < y.nunique():
            n_hold = int(y.nunique())
        if len(frame) - n_hold < 2:
            raise DataError(
                f"too few rows to learn from: {len(frame)} row(s) leave {len(frame) - n_hold} "
                "for training after the holdout; at least 2 are needed"
            )
        train_idx, hold_idx = train_test_split(
            np.arange(len(frame)), test_size=n_hold, random_state=seed, stratify=stratify
        )
        train = frame.iloc[np.sort(train_idx)][[*kept, target]].reset_index(drop=True)
        hold = frame.iloc[np.sort(hold_idx)]
        return cls(
            name=label,
            target=target,
            problem_type=ptype,
            metric=chosen,
            modality="text" if text_columns else "tabular",
            feature_columns=tuple(kept),
            text_columns=tuple(text_columns),
            dropped_columns=dropped,
            warnings=tuple(warnings),
            classes=classes,
            train=train,
            holdout=Holdout(hold[kept].reset_index(drop=True), hold[target].reset_index(drop=True)),
            seed=seed,
        )


def _show(value: Any) -> Any:
    """A numpy scalar as the plain Python value, for readable messages."""
    return value.item() if isinstance(value, np.generic) else value


def _suggest(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=3, cutoff=0.6)
    lowered = [o for o in options if o.lower() == name.lower() and o not in close]
    close = lowered + close
    return f"; did you mean {' or '.join(map(repr, close))}?" if close else ""


_TARGET_PATTERNS = (
    r"\bpredict(?:ing|s)?\s+(?:the\s+)?(?:column\s+)?([`'\"\w .-]+)",
    r"\btarget(?:\s+column)?\s*(?:is|=|:)\s*([`'\"\w .-]+)",
    r"\bforecast(?:ing)?\s+(?:the\s+)?([`'\"\w .-]+)",
    r"\bclassify\s+(?:the\s+)?([`'\"\w .-]+)",
)


_STOP_WORDS = {"from", "using", "with", "given", "based", "on", "and", "for", "by", "in", "of"}


def target_from_request(request: str, columns: list[str]) -> str | None:
    """The column a request names as the thing to predict, if any.

    "predict house price from area" finds a column "house price", else "price"
    (longest phrase first); words after "from", "using", ... name features, not
    the target.
    """
    by_lower = {c.lower(): c for c in columns}
    for pattern in _TARGET_PATTERNS:
        for match in re.finditer(pattern, request, flags=re.IGNORECASE):
            words: list[str] = []
            for word in match.group(1).split():
                if word.lower() in _STOP_WORDS:
                    break
                words.append(word.strip("`'\""))
            for length in range(len(words), 0, -1):
                for start in range(len(words) - length + 1):
                    phrase = " ".join(words[start : start + length]).lower()
                    if phrase in by_lower:
                        return by_lower[phrase]
    quoted = re.findall(r"[`'\"]([^`'\"]+)[`'\"]", request)
    for q in quoted:
        if q.lower() in by_lower and re.search(r"\b(target|label|predict)", request, re.I):
            return by_lower[q.lower()]
    return None


def _resolve_target(frame: pd.DataFrame, target: str | None, request: str) -> str:
    columns = [str(c) for c in frame.columns]
    if target is not None:
        if target not in columns:
            raise DataError(
                f"target column {target!r} is not in the data{_suggest(target, columns)}; "
                f"columns are: {', '.join(columns[:30])}{' ...' if len(columns) > 30 else ''}"
            )
        return target
    found = target_from_request(request, columns) if request else None
    if found is not None:
        return found
    candidates = _target_candidates(frame)
    raise DataError(
        "no target column given and none named in the request; pass target=... "
        "(--target on the command line) or say e.g. 'predict <column>'. "
        f"Likely candidates: {', '.join(map(repr, candidates))}"
    )


def _target_candidates(frame: pd.DataFrame) -> list[str]:
    conventional = ("target", "label", "y", "class", "outcome", "price", "survived", "churn")
    named = [c for c in frame.columns if str(c).lower() in conventional]
    last = [str(frame.columns[-1])]
    low_card = [
        str(c) for c in frame.columns if 1 < frame[c].nunique() <= 10 and str(c) not in named
    ]
    out: list[str] = []
    for c in [*named, *last, *low_card]:
        if c not in out:
            out.append(c)
    return out[:6]


def _infer_problem_type(y: pd.Series) -> ProblemType:
    n_unique = y.nunique()
    if y.dtype == bool or not pd.api.types.is_numeric_dtype(y):
        return "binary" if n_unique <= 2 else "multiclass"
    values = y.to_numpy(dtype=float)
    integer_valued = bool(np.all(np.isfinite(values)) and np.all(values == np.round(values)))
    if integer_valued and n_unique <= MAX_CLASSES_FOR_INTEGER_TARGET:
        return "binary" if n_unique <= 2 else "multiclass"
    return "regression"


def _check_target(y: pd.Series, target: str, ptype: str) -> None:
    n_unique = y.nunique()
    if n_unique < 2:
        raise DataError(
            f"target {target!r} is constant (every row is {_show(y.iloc[0])!r}); "
            "there is nothing to learn"
        )
    if ptype == "regression":
        if not pd.api.types.is_numeric_dtype(y):
            raise DataError(
                f"a regression target must be numeric, but {target!r} has dtype {y.dtype} "
                f"(e.g. {y.iloc[0]!r})"
            )
        if not np.all(np.isfinite(y.to_numpy(dtype=float))):
            raise DataError(f"regression target {target!r} contains infinite values")
        return
    if ptype == "binary" and n_unique != 2:
        raise DataError(f"a binary target needs exactly 2 classes, but {target!r} has {n_unique}")
    counts = y.value_counts()
    single = counts[counts < 2]
    if len(single):
        shown = ", ".join(repr(_show(v)) for v in single.index[:5])
        raise DataError(
            f"each class of {target!r} needs at least 2 rows (for a stratified split), but "
            f"{len(single)} class(es) have a single row: {shown}; drop or merge them"
        )


def _metric_for(request: str, ptype: str) -> Metric | None:
    found = metric_from_request(request) if request else None
    if found is None:
        return None
    # A request naming a metric for the wrong kind of task is an error, not a silent swap.
    return get_metric(found.name, ptype)


def _inspect_column(s: pd.Series, name: str) -> tuple[str | None, bool]:
    """Returns (reason to drop, is_text) for a feature column."""
    non_null = s.dropna()
    if len(non_null) == 0:
        return "every value is missing", False
    n_unique = non_null.nunique()
    if n_unique == 1:
        return f"constant (every value is {_show(non_null.iloc[0])!r})", False
    all_unique = n_unique == len(non_null) == len(s)
    if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
        if all_unique and _ID_NAME.search(name):
            return "ID-like (a unique value per row, named like an identifier)", False
        if (
            all_unique
            and pd.api.types.is_integer_dtype(s)
            and _is_counter(s)
            and not _TIME_NAME.search(name)
        ):
            return "ID-like (a row counter: consecutive unique integers)", False
        return None, False
    if pd.api.types.is_bool_dtype(s) or isinstance(s.dtype, pd.CategoricalDtype):
        return None, False
    _check_mixed(non_null, name)
    as_text = non_null.astype(str)
    mean_len = as_text.str.len().mean()
    has_spaces = as_text.str.contains(" ").mean() > 0.5
    if mean_len >= _TEXT_MIN_MEAN_CHARS and has_spaces:
        return None, True
    if all_unique and (_ID_NAME.search(name) or len(s) >= 20):
        return "ID-like (a unique string per row)", False
    return None, False


def _is_counter(s: pd.Series) -> bool:
    values = np.sort(s.to_numpy())
    return len(values) > 2 and bool(np.all(np.diff(values) == 1))


def _check_mixed(values: pd.Series, name: str) -> None:
    """Rejects an object column that mixes numbers with a minority of non-numbers."""
    kinds = values.map(lambda v: isinstance(v, (int, float, np.number)) and not isinstance(v, bool))
    if kinds.all():
        return
    numeric = kinds if kinds.any() else pd.to_numeric(values, errors="coerce").notna()
    share = float(numeric.mean())
    if 0.5 <= share < 1.0:
        bad = values[~numeric]
        shown = ", ".join(f"{_show(v)!r} (row index {i})" for i, v in list(bad.items())[:5])
        raise DataError(
            f"column {name!r} mixes numbers ({share:.0%} of values) with non-numeric values: "
            f"{shown}. Make them missing (empty) or numbers, or make the whole column text"
        )
