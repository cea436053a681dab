"""The runs in a runs directory: listed, filtered and compared from their ``run.json``
(verified outcomes only: a run's numbers are the ones its verifier let through)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mlpilot.agents.rundir import RUN_JSON, RunDir, RunMeta
from mlpilot.errors import ConfigError


@dataclass(frozen=True)
class RunInfo:
    path: Path
    meta: RunMeta

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def storage_url(self) -> str:
        """The run's Optuna storage, for ``optuna-dashboard``."""
        return RunDir(self.path).storage_url


def list_runs(
    runs_dir: Path, *, status: str | None = None, contains: str | None = None
) -> list[RunInfo]:
    """The runs under ``runs_dir``, oldest first; ``status`` keeps those with that
    status, ``contains`` those whose name, request, data or target holds the text
    (any case). Folders that hold no readable run are skipped."""
    if not runs_dir.is_dir():
        raise ConfigError(f"no runs directory at {runs_dir}")
    found = []
    for path in sorted(p for p in runs_dir.iterdir() if (p / RUN_JSON).is_file()):
        try:
            meta = RunDir(path).meta()
        except ConfigError:
            continue
        if status is not None and meta.status != status:
            continue
        text = " ".join((path.name, meta.request, meta.data, meta.target)).lower()
        if contains is not None and contains.lower() not in text:
            continue
        found.append(RunInfo(path, meta))
    return sorted(found, key=lambda r: (r.meta.created, r.name))


def find_run(runs_dir: Path, name: str) -> RunInfo:
    """A run by its directory path, or by its name (or a unique prefix) under ``runs_dir``."""
    direct = Path(name)
    if (direct / RUN_JSON).is_file():
        return RunInfo(direct, RunDir(direct).meta())
    runs = list_runs(runs_dir) if runs_dir.is_dir() else []
    matches = [r for r in runs if r.name == name] or [r for r in runs if r.name.startswith(name)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise ConfigError(f"no run {name!r} in {runs_dir}")
    raise ConfigError(f"{name!r} names {len(matches)} runs: {', '.join(r.name for r in matches)}")


# what a comparison shows, in order: (label, RunMeta field)
COMPARED = (
    ("request", "request"),
    ("data", "data"),
    ("target", "target"),
    ("metric", "metric"),
    ("dropped columns", "drop"),
    ("time budget s", "time_budget"),
    ("LLM", "llm"),
    ("feature step", "features"),
    ("status", "status"),
    ("best family", "best_family"),
    ("CV score", "best_score"),
    ("holdout score", "holdout_score"),
    ("seconds spent", "spent_s"),
)


def compare(a: RunInfo, b: RunInfo) -> list[tuple[str, str, str, bool]]:
    """Rows (what, run a, run b, differs) over :data:`COMPARED`."""
    rows = []
    for label, name in COMPARED:
        left, right = _shown(a.meta, name), _shown(b.meta, name)
        rows.append((label, left, right, left != right))
    return rows


def _shown(meta: RunMeta, name: str) -> str:
    value = getattr(meta, name)
    if name == "llm":
        return "none" if meta.no_llm else (value or "embedded")
    if name == "features":
        return {None: "as planned", True: "always", False: "never"}[value]
    if isinstance(value, float):
        return f"{value:.4f}" if name.endswith("score") else f"{value:g}"
    if isinstance(value, list):
        return ", ".join(value) or "–"
    return "–" if value is None else str(value)
