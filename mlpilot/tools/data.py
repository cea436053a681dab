"""Reading tabular files, with every failure turned into a DataError that says why."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from mlpilot.errors import DataError

_READERS = {".csv": ",", ".tsv": "\t", ".txt": None}
_PARQUET = {".parquet", ".pq"}


def read_table(path: str | Path, *, encoding: str = "utf-8") -> pd.DataFrame:
    """Reads a CSV/TSV or Parquet file, turning every failure into a :class:`DataError`."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"data file not found: {str(path)!r}")
    if p.is_dir():
        raise DataError(f"expected a data file but {str(path)!r} is a directory")
    suffix = p.suffix.lower()
    if suffix not in _READERS and suffix not in _PARQUET:
        raise DataError(
            f"unsupported data file type {suffix or '(none)'!r} for {p.name!r}; "
            "expected .csv, .tsv, .txt, .parquet or .pq"
        )
    if p.stat().st_size == 0:
        raise DataError(f"data file {p.name!r} is empty (0 bytes)")
    if suffix in _PARQUET:
        try:
            return pd.read_parquet(p)
        except Exception as e:
            raise DataError(f"could not read {p.name!r} as Parquet: {e}") from e
    raw = p.read_bytes()
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(
            f"{p.name!r} is not valid {encoding.upper()} text: byte 0x{raw[e.start]:02x} at "
            f"offset {e.start} (line {line}) cannot be decoded. Re-save the file as UTF-8, "
            "or pass its encoding (e.g. encoding='latin-1')"
        ) from e
    sep = _READERS[suffix] or _sniff_separator(text)
    header = next(csv.reader(io.StringIO(text), delimiter=sep), [])
    check_duplicate_names(header, p.name)
    try:
        frame = pd.read_csv(io.StringIO(text), sep=sep)
    except pd.errors.EmptyDataError as e:
        raise DataError(f"data file {p.name!r} has no columns (it is blank)") from e
    except pd.errors.ParserError as e:
        raise DataError(f"{p.name!r} is not a well-formed table: {e}") from e
    return frame


def _sniff_separator(text: str) -> str:
    try:
        return csv.Sniffer().sniff(text[:20_000], delimiters=",\t;|").delimiter
    except csv.Error:
        return ","


def check_duplicate_names(names: Iterable[Any], where: str) -> None:
    """Raises DataError naming the repeated column names, if any."""
    seen: dict[str, int] = {}
    dupes: list[str] = []
    for name in names:
        key = str(name)
        seen[key] = seen.get(key, 0) + 1
        if seen[key] == 2:
            dupes.append(key)
    if dupes:
        raise DataError(
            f"column names must be unique, but {where} repeats {', '.join(map(repr, dupes))}"
        )


def select_columns(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """``frame``'s ``columns`` in that order; a clear error names any that are missing.

    Extra columns (the target among them) are ignored.
    """
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"expected a pandas DataFrame of features, but got {type(frame).__name__}")
    check_duplicate_names(frame.columns, "the new data")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        import difflib

        present = [str(c) for c in frame.columns]
        hints = [
            f"{m!r} → {close[0]!r}"
            for m in missing
            if (close := difflib.get_close_matches(m, present, 1))
        ]
        hint = f" (close matches: {', '.join(hints)})" if hints else ""
        raise DataError(
            f"the new data lacks {len(missing)} training column(s): "
            f"{', '.join(map(repr, missing))}{hint}"
        )
    return plain_numbers(frame[list(columns)])


def plain_numbers(frame: pd.DataFrame, skip: Iterable[Any] = ()) -> pd.DataFrame:
    """``frame`` with booleans and pandas' nullable numbers (``Int64``, ``boolean``, ...)
    as float64 with NaN for missing: what the fitted pipelines expect, at training and
    at predict time alike."""
    skipped = set(skip)
    nullable = [
        c
        for c in frame.columns
        if c not in skipped
        and (
            pd.api.types.is_bool_dtype(frame[c])
            or (
                isinstance(frame[c].dtype, pd.api.extensions.ExtensionDtype)
                and pd.api.types.is_numeric_dtype(frame[c])
            )
        )
    ]
    if not nullable:
        return frame
    return frame.astype({c: "float64" for c in nullable})


BUNDLED: dict[str, tuple[str, str]] = {
    # name: (scikit-learn loader, the request a user would type)
    "breast_cancer": (
        "load_breast_cancer",
        "tune a model for this dataset, predict target, optimise AUC",
    ),
    "wine": (
        "load_wine",
        "tune a model for this dataset, predict the wine class target, optimise accuracy",
    ),
    "diabetes": ("load_diabetes", "tune a model for this dataset, predict target, minimise RMSE"),
}


def bundled_dataset(name: str) -> tuple[pd.DataFrame, str]:
    """A dataset that ships with scikit-learn, as (frame, request)."""
    from mlpilot.errors import ConfigError

    if name not in BUNDLED:
        raise ConfigError(f"unknown bundled dataset {name!r}; known: {', '.join(BUNDLED)}")
    import sklearn.datasets

    loader, request = BUNDLED[name]
    return getattr(sklearn.datasets, loader)(as_frame=True).frame, request
