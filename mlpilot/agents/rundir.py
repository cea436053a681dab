"""The run directory and its one owner.

Every file a resume reads is written through :class:`RunDir`, atomically (a
temporary file in the same directory, flushed, then renamed over the old one),
so a process killed at any instant leaves either the old file or the new one,
never half of either. File names are decided here and nowhere else.

What lives in a run directory::

    run.json          RunMeta: the request, data, options, HPO settings, LLM choice,
                      spent time and, once finished, the outcome
    optuna.db         the Optuna studies (SQLite; Optuna's own transactions)
    checkpoints.db    the LangGraph checkpoints (SQLite)
    predictions/      each finished trial's out-of-fold and holdout predictions
    sandbox-data/     the task's data as the sandbox reads it
    data.parquet      a copy of a DataFrame the run was given
    model.skops       the delivered model (loads without running code), refit on all rows
    model-train.skops the verified model the holdout scored (training rows only)
    report.md, report.html, plot-*.png (the report's plots)
    llm-usage.json    what the LLM cost, per role (a run with an LLM)
    progress.jsonl    the run's progress events as they happen, one JSON object a line
                      (appended, not atomic: read by whoever watches the run, never
                      by a resume)
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, Field

from mlpilot.errors import ConfigError
from mlpilot.tools import model_io
from mlpilot.tools.files import write_atomic

if TYPE_CHECKING:
    from mlpilot.task import TaskSpec

RUN_JSON = "run.json"
OPTUNA_DB = "optuna.db"
CHECKPOINTS_DB = "checkpoints.db"
PREDICTIONS = "predictions"
SANDBOX_DATA = "sandbox-data"
DATA_COPY = "data.parquet"
FEATURES = "features.json"  # the feature step's rounds so far (resumed from)
MODEL = model_io.MODEL_FILE
TRAIN_MODEL = "model-train.skops"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
USAGE_JSON = "llm-usage.json"  # the LLM's calls, tokens and seconds per role, total last
PROGRESS = "progress.jsonl"
CLOCK_INTERVAL_S = 1.0  # how often a running run saves its spent time


class RunMeta(BaseModel):
    """``run.json``: everything a resume needs to carry on as the run started, and the
    outcome once it finished."""

    request: str
    data: str
    target: str
    metric: str
    time_budget: float
    max_trials: int
    seed: int = 0
    drop: list[str] = Field(default_factory=list)
    description: str = ""  # what the data is, in the user's words
    description_file: str | None = None  # where it was read from, for the rerun command
    features: bool | None = None  # engineer features: always, never, or as planned (None)
    refit: str = "all"  # the delivered model learns from all rows, or the training rows
    llm: str | None = None
    no_llm: bool = False
    llm_note: str = ""  # why the run used no LLM, when it was not disabled
    api_base: str | None = None
    hpo: dict[str, Any] = Field(default_factory=dict)  # HpoSettings' fields
    nas: dict[str, Any] | None = None  # the pruning step's NasSettings fields, if set
    sandbox: str = "local-warm"
    name: str = ""
    status: str = "running"
    created: str = ""
    spent_s: float = 0.0
    best_family: str | None = None
    best_score: float | None = None
    holdout_score: float | None = None
    problem_type: str | None = None
    profile: dict[str, Any] | None = None


def task_of(meta: RunMeta) -> TaskSpec:
    """The run's task rebuilt from its data file as the run built it (same columns,
    holdout and folds): for a resume, a re-rendered report, or answers about the run."""
    from mlpilot.task import TaskSpec

    return TaskSpec.from_data(
        meta.data,
        request=meta.request,
        target=meta.target,
        metric=meta.metric,
        seed=meta.seed,
        name=meta.name or None,
        drop=meta.drop,
    )


class RunDir:
    """Owns one run directory (see the module docstring). Thread-safe."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._progress_lock = threading.Lock()

    # -- names ---------------------------------------------------------------------

    @property
    def storage_url(self) -> str:
        return f"sqlite:///{self.path / OPTUNA_DB}"

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS_DB

    @property
    def predictions(self) -> Path:
        return self.path / PREDICTIONS

    @property
    def sandbox_data(self) -> Path:
        return self.path / SANDBOX_DATA

    @property
    def model_path(self) -> Path:
        return self.path / MODEL

    @property
    def report_path(self) -> Path:
        return self.path / REPORT_MD

    @property
    def data_copy(self) -> Path:
        return self.path / DATA_COPY

    def exists(self) -> bool:
        return (self.path / RUN_JSON).is_file()

    # -- run.json --------------------------------------------------------------------

    def create(self, meta: RunMeta) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self.write_meta(meta)

    def meta(self) -> RunMeta:
        """``run.json``, validated.

        Raises:
            ConfigError: the directory holds no readable run.
        """
        try:
            text = (self.path / RUN_JSON).read_text()
        except OSError as e:
            raise ConfigError(f"{self.path} is not a run directory (no readable run.json)") from e
        try:
            return RunMeta.model_validate_json(text)
        except ValueError as e:
            raise ConfigError(f"{self.path / RUN_JSON} is not a valid run record: {e}") from e

    def write_meta(self, meta: RunMeta) -> None:
        with self._lock:
            write_atomic(self.path / RUN_JSON, meta.model_dump_json(indent=2).encode())

    def update(self, **fields: Any) -> RunMeta:
        """Changes some fields of ``run.json`` (read, change, write atomically)."""
        with self._lock:
            meta = self.meta().model_copy(update=fields)
            write_atomic(self.path / RUN_JSON, meta.model_dump_json(indent=2).encode())
            return meta

    @contextlib.contextmanager
    def clock(self, spent_before: float) -> Iterator[Any]:
        """Keeps ``spent_s`` in ``run.json`` current while the block runs (every
        second, and once at the end), so that a kill at any instant loses at most a
        second of the run's time; yields a function giving the seconds spent so far."""
        started = time.monotonic()
        stop = threading.Event()

        def spent() -> float:
            return spent_before + time.monotonic() - started

        def tick() -> None:
            while not stop.wait(CLOCK_INTERVAL_S):
                with contextlib.suppress(OSError, ConfigError):
                    self.update(spent_s=round(spent(), 2))

        thread = threading.Thread(target=tick, daemon=True, name="mlpilot-run-clock")
        thread.start()
        try:
            yield spent
        finally:
            stop.set()
            thread.join()
            with contextlib.suppress(OSError, ConfigError):
                self.update(spent_s=round(spent(), 2))

    # -- predictions ---------------------------------------------------------------------

    def save_predictions(
        self,
        key: str,
        oof: np.ndarray,
        holdout_pred: np.ndarray,
        classes: tuple[Any, ...] | None,
    ) -> None:
        """A finished trial's predictions, for ensembling and the verifier."""
        import io

        buf = io.BytesIO()
        np.savez(
            buf,
            oof=oof,
            holdout_pred=holdout_pred,
            classes=np.asarray(classes if classes is not None else []),
        )
        write_atomic(self.predictions / f"{key}.npz", buf.getvalue())

    def load_predictions(self, key: str) -> tuple[np.ndarray, np.ndarray, list[Any] | None] | None:
        """(out-of-fold, holdout, classes) of a trial, or None if it has none saved."""
        try:
            with np.load(self.predictions / f"{key}.npz", allow_pickle=False) as saved:
                classes = saved["classes"].tolist() or None
                return saved["oof"], saved["holdout_pred"], classes
        except (OSError, KeyError, ValueError):
            return None

    # -- the model and the report ----------------------------------------------------------

    @property
    def progress_path(self) -> Path:
        return self.path / PROGRESS

    def log_progress(self, event: str, data: dict[str, Any], elapsed_s: float) -> None:
        """Appends one progress event (a line is written whole or, if the process dies
        mid-write, ends without a newline: :func:`read_progress` skips it)."""
        line = json.dumps({"t": round(elapsed_s, 2), "event": event, **data}, default=str)
        with self._progress_lock, self.progress_path.open("a", encoding="utf-8") as f:
            f.write(line + "\n")

    @property
    def train_model_path(self) -> Path:
        """The verified model, trained on the training rows only (the one the holdout
        scored), kept when the delivered model was refit on all rows."""
        return self.path / TRAIN_MODEL

    def save_model(self, model: Any, path: Path | None = None) -> None:
        model_io.dump(model, path or self.model_path)

    def load_model(self) -> Any:
        return model_io.load(self.model_path, what=f"model of run {self.path}")

    # -- the feature step ---------------------------------------------------------------

    def save_features(self, text: str) -> None:
        """The feature step's progress (a FeatureSummary as JSON), written atomically
        after every round."""
        write_atomic(self.path / FEATURES, text.encode())

    def load_features(self) -> str | None:
        path = self.path / FEATURES
        return path.read_text() if path.is_file() else None

    def write_text(self, name: str, text: str) -> Path:
        path = self.path / name
        write_atomic(path, text.encode())
        return path


def read_progress(path: Path, start: int = 0) -> tuple[list[dict[str, Any]], int]:
    """The progress events in ``path`` from byte offset ``start`` on, and the offset to
    read from next time; a last line still being written is left for then."""
    try:
        with path.open("rb") as f:
            f.seek(start)
            chunk = f.read()
    except FileNotFoundError:
        return [], start
    end = chunk.rfind(b"\n") + 1
    events = []
    for line in chunk[:end].splitlines():
        with contextlib.suppress(ValueError):
            events.append(json.loads(line))
    return events, start + end
