"""Running one configuration as a sandboxed cross-validation job, scored on the host.

A trial returns predictions (out-of-fold for the training rows, on folds the host
chose, and for the holdout rows from a model refit on all of them), never just a
number: the host checks them (row count, finite numbers, the task's classes,
probabilities), recomputes the cross-validated score and compares it with the
number the job reported (a job whose claim does not hold is failed), and scores
the holdout with labels the job never saw. Candidates for the final model have
their CV re-run fold by fold (:meth:`TrialRunner.refold`), each job seeing only its
fold's training labels, which catches out-of-fold predictions that saw their own
labels.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlpilot.sandbox import ExecResult, Job, Limits, Sandbox, SandboxError
from mlpilot.sandbox.base import read_artifact
from mlpilot.task import TaskSpec
from mlpilot.tools import cv_job, featurize, model_io, text_embed
from mlpilot.tools.data import plain_numbers
from mlpilot.tools.files import write_atomic
from mlpilot.tools.metrics import predictions_for


@dataclass(frozen=True)
class TrialOutcome:
    """What one trial produced, with every score recomputed on the host.

    Attributes:
        ok: the job ran and its predictions passed the checks.
        reason: why not, when ``ok`` is False (timeout, crash, bad predictions...).
        oof: out-of-fold predictions for ``task.train`` (probabilities or values).
        holdout_pred: predictions for the holdout rows.
        classes: the class order of probability columns (classification).
        cv_score: the task metric on ``oof``, computed on the host.
        holdout_score: the task metric on the holdout, computed on the host.
        verified: the job's own reported number matches the host's recomputation
            (a trial whose claim does not hold is not ``ok``).
        pruned: stopped after its first fold, whose score did not promise a good trial
            (not ``ok``, but not a failure either).
    """

    family: str
    params: dict[str, Any]
    ok: bool
    reason: str = ""
    oof: np.ndarray | None = field(default=None, repr=False)
    holdout_pred: np.ndarray | None = field(default=None, repr=False)
    classes: tuple[Any, ...] | None = None
    cv_score: float | None = None
    holdout_score: float | None = None
    verified: bool = False
    seconds: float = 0.0
    timed_out: bool = False
    pruned: bool = False


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    """A frame as the Parquet bytes a job reads."""
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    """An array as ``.npy`` bytes (no pickles)."""
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


# A configuration's out-of-fold score and the same configuration's score re-run fold by
# fold (each job seeing only its fold's training labels) agree to the last digits for an
# honest job, since both see the same folds, rows and encodings; this allows for the
# rounding of parallel sums.
FOLD_RERUN_TOLERANCE = 1e-3
PROBABILITY_SLACK = 1e-3  # how far a row of class probabilities may sum from 1


class TrialRunner:
    """Runs configurations of a task in a sandbox. Thread-safe if the sandbox is.

    The host decides the folds (:meth:`TaskSpec.folds`) and hands them to every job;
    the job returns predictions, which the host checks and scores.

    Args:
        sandbox: where jobs run.
        task: the task; only features and training labels enter the sandbox.
        folds: cross-validation folds.
        limits: per-trial limits (timeout, memory).
        data_dir: where the job's data files are written once and handed to every
            trial as host paths (the Docker sandbox mounts them read-only); without
            it they travel as bytes, written into each job's directory.
        code: the job's source (default: :mod:`mlpilot.tools.cv_job`); tests hand in
            jobs that misbehave (:mod:`mlpilot.testing.adversarial`).
        features: engineered features every trial computes inside its pipeline, fitted
            on each fold's training rows ({"features": [...], "drop": [...]}, see
            :mod:`mlpilot.tools.featurize`); None for none.
    """

    def __init__(
        self,
        sandbox: Sandbox,
        task: TaskSpec,
        *,
        folds: int = 5,
        limits: Limits | None = None,
        data_dir: Path | None = None,
        code: str | None = None,
        features: dict[str, Any] | None = None,
    ) -> None:
        self.sandbox = sandbox
        self.task = task
        self.folds = folds
        self.features = features
        self.limits = limits or Limits(timeout_s=300)
        self.fold_of_row = task.folds(folds)
        self._train = plain_numbers(task.train, skip=[task.target])
        # each fold's job files, encoded once: the verifier's fold-by-fold re-runs and
        # a pruned search's first folds send the same ones for every trial
        self._fold_data: dict[int, dict[str, bytes]] = {}
        self.cardinality = {
            c: int(self._train[c].nunique())
            for c in task.feature_columns
            if c not in task.text_columns and not pd.api.types.is_numeric_dtype(self._train[c])
        }
        if features:
            # engineered categories are counted on all training rows too
            built = featurize.FeatureBuilder(features["features"], features.get("drop", []))
            frame = built.fit(self._train).transform(self._train)
            for c in built.names_:
                if c in frame and not pd.api.types.is_numeric_dtype(frame[c]):
                    self.cardinality[c] = int(frame[c].nunique())
        data = {
            "train.parquet": parquet_bytes(self._train),
            "holdout.parquet": parquet_bytes(plain_numbers(task.holdout.features)),
            "folds.npy": npy_bytes(self.fold_of_row),
        }
        self._files: dict[str, bytes | Path] = {}
        for name, content in data.items():
            if data_dir is None:
                self._files[name] = content
                continue
            path = data_dir / name
            if not path.exists() or path.read_bytes() != content:
                write_atomic(path, content)
                path.chmod(0o644)  # readable by the sandbox's non-root user
            self._files[name] = path
        if features:
            self._files["featurize.py"] = Path(featurize.__file__).read_bytes()
        self._code = code if code is not None else Path(cv_job.__file__).read_text()
        self._embed_files: dict[str, bytes | Path] | None = None
        self.last_network_isolated = False
        self.last_sandbox: dict[str, Any] = {}  # where the last job ran, for the report

    def submit(
        self,
        family: str,
        params: dict[str, Any],
        *,
        timeout_s: float | None = None,
        files: dict[str, bytes | Path] | None = None,
        **options: Any,
    ) -> ExecResult:
        """Runs the job for one configuration; ``options`` go into its config
        (``cv=False`` skips cross-validation, ``save_model=True`` keeps the fitted
        pipeline); ``files`` replace the task's data files (one fold's rows)."""
        task = self.task
        config = {
            "family": family,
            "params": params,
            "problem_type": task.problem_type,
            "target": task.target,
            "text_columns": list(task.text_columns),
            "seed": task.seed,
            "cardinality": self.cardinality,
            **({"features": self.features} if self.features else {}),
            **options,
        }
        limits = self.limits
        if timeout_s is not None:
            limits = Limits(**{**limits.__dict__, "timeout_s": max(1.0, timeout_s)})
        data = {**self._files, **(files or {})}
        if family in cv_job.EMBED_FAMILIES and task.text_columns:
            config["max_length"] = self.max_length
            data.update(self.embed_files())
        job = Job(code=self._code, files={**data, "config.json": json.dumps(config)})
        run = self.sandbox.run(job, limits=limits)
        self.last_network_isolated = run.network_isolated
        self.last_sandbox = {
            "backend": run.backend,
            "network_isolated": run.network_isolated,
            "isolation": run.isolation,
            "gpus": run.gpus,
        }
        return run

    @cached_property
    def max_length(self) -> int:
        """Tokens per text for the families that embed it (the longest text column's),
        counted when such a family first runs."""
        return text_embed.column_tokens(self.task.train, self.task.text_columns)

    def embed_files(self) -> dict[str, bytes | Path]:
        """What a job of an embedding family gets beside the data: ``text_embed.py``
        and the packaged encoder's weights, tokenizer and configuration."""
        if self._embed_files is None:
            encoder = text_embed.packaged_encoder()
            files: dict[str, bytes | Path] = {"text_embed.py": Path(text_embed.__file__)}
            for path in sorted(encoder.iterdir()):
                if path.is_file() and path.suffix in (".json", ".txt", ".safetensors"):
                    files[f"encoder/{path.name}"] = path
            self._embed_files = files
        return self._embed_files

    def host_model(self, family: str, params: dict[str, Any], model: Any) -> Any:
        """A refit job's pipeline made whole on the host: an embedding family's gets
        the host's own :class:`text_embed.SentenceEmbedder` in front (the job's file
        holds neither its code nor the encoder's weights)."""
        if family not in cv_job.EMBED_FAMILIES or not self.task.text_columns:
            return model
        from sklearn.pipeline import Pipeline

        embed = text_embed.SentenceEmbedder(
            list(self.task.text_columns),
            None,
            max_length=self.max_length,
            keep_text=bool(params.get("tfidf", False)),
        )
        return Pipeline([("embed", embed), ("model", model)])

    def run(
        self,
        family: str,
        params: dict[str, Any],
        *,
        timeout_s: float | None = None,
        first: FoldScore | None = None,
    ) -> TrialOutcome:
        """Cross-validates the configuration and fits it on the training rows to predict
        the holdout, in one job. With ``first`` (the configuration's fold already run
        alone, see :meth:`first_fold`) the job skips that fold and its rows' out-of-fold
        predictions are ``first``'s; the trial's seconds include ``first``'s."""
        task = self.task
        skip = {} if first is None else {"skip_folds": [first.fold]}
        run = self.submit(family, params, timeout_s=timeout_s, **skip)
        spent = run.duration_s + (0.0 if first is None else first.seconds)
        base = {"family": family, "params": dict(params), "seconds": spent}
        if not run.ok:
            return TrialOutcome(ok=False, reason=run.summary(), timed_out=run.timed_out, **base)
        try:
            art = job_outputs(run, ("oof.npy", "holdout_pred.npy", "result.json"))
            oof = load_npy(art["oof.npy"])
            hold = load_npy(art["holdout_pred.npy"])
            claimed = json.loads(art["result.json"])
            classes = job_classes(art)
        except (KeyError, OSError, ValueError, SandboxError) as e:
            return TrialOutcome(ok=False, reason=f"the job's outputs are unreadable: {e}", **base)
        own = np.ones(len(task.train), dtype=bool)  # the rows this job predicted
        if first is not None:
            if classes != first.classes:
                reason = f"another class order {classes} than its first fold's {first.classes}"
                return TrialOutcome(ok=False, reason=reason, **base)
            own = self.fold_of_row != first.fold
            assert first.pred is not None
            if oof.shape[:1] != own.shape or oof[~own].shape != first.pred.shape:
                reason = f"its out-of-fold predictions have shape {oof.shape}"
                return TrialOutcome(ok=False, reason=reason, **base)
            if oof.dtype.kind not in "fiu":
                reason = "out-of-fold predictions are not finite numbers"
                return TrialOutcome(ok=False, reason=reason, **base)
            oof = oof.astype(float)  # a copy, of any number type
            oof[~own] = first.pred  # whatever the job wrote there is not used
        problem = check_predictions(task, oof, len(task.train), classes, "out-of-fold")
        problem = problem or check_predictions(
            task, hold, len(task.holdout.features), classes, "holdout"
        )
        if problem:
            return TrialOutcome(ok=False, reason=problem, **base)
        metric = task.metric
        y = task.y.to_numpy()
        cv = metric(y, predictions_for(metric, oof, classes))
        holdout = task.score_holdout(predictions_for(metric, hold, classes))
        mine, theirs = _self_check(oof[own], y[own], classes, claimed)
        if theirs is None or not abs(mine - theirs) <= 1e-9 * max(1.0, abs(mine)):
            # A job whose own number disagrees with its predictions is not believed at all.
            return TrialOutcome(
                ok=False,
                reason=f"{CLAIM_MISMATCH}: it claimed {theirs}, its predictions give {mine}",
                **base,
            )
        return TrialOutcome(
            ok=True,
            oof=oof,
            holdout_pred=hold,
            classes=classes,
            cv_score=cv,
            holdout_score=holdout,
            verified=True,
            **base,
        )

    def refold(
        self,
        family: str,
        params: dict[str, Any],
        *,
        timeout_s: float | None = None,
        workers: int = 1,
    ) -> FoldRerun:
        """Re-runs the configuration's cross-validation as one job per fold: each job
        gets that fold's training rows (with labels) and the fold's own rows without
        labels, so no out-of-fold prediction can have seen its label."""
        from concurrent.futures import ThreadPoolExecutor

        task = self.task

        def one(k: int) -> tuple[int, np.ndarray | str, tuple[Any, ...] | None]:
            pred, classes, _ = self._fold_job(family, params, k, timeout_s)
            return k, pred, classes

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            parts = list(pool.map(one, range(self.folds)))
        oof: np.ndarray | None = None
        order: tuple[Any, ...] | None = None
        for k, pred, classes in parts:
            if isinstance(pred, str):
                return FoldRerun(ok=False, reason=pred)
            if order is not None and classes != order:
                return FoldRerun(ok=False, reason=f"fold {k}: another class order {classes}")
            order = classes
            if oof is None:
                oof = np.zeros((len(task.train), *pred.shape[1:]), dtype=float)
            oof[self.fold_of_row == k] = pred
        assert oof is not None
        score = task.metric(task.y.to_numpy(), predictions_for(task.metric, oof, order))
        return FoldRerun(ok=True, oof=oof, classes=order, cv_score=score)

    def _fold_files(self, k: int) -> dict[str, bytes | Path]:
        """Fold ``k``'s job's data: the other folds' rows with labels, and fold ``k``'s
        rows without them (encoded once per fold)."""
        if k not in self._fold_data:
            inside = self.fold_of_row != k
            columns = list(self.task.feature_columns)
            self._fold_data[k] = {
                "train.parquet": parquet_bytes(self._train[inside].reset_index(drop=True)),
                "holdout.parquet": parquet_bytes(
                    self._train.loc[~inside, columns].reset_index(drop=True)
                ),
            }
        return dict(self._fold_data[k])

    def _fold_job(
        self, family: str, params: dict[str, Any], k: int, timeout_s: float | None
    ) -> tuple[np.ndarray | str, tuple[Any, ...] | None, ExecResult]:
        """Fits the configuration on every fold but ``k`` in one job that never sees fold
        ``k``'s labels: (fold ``k``'s checked predictions, or why there are none; the
        class order; the job's result)."""
        files = self._fold_files(k)
        run = self.submit(family, params, timeout_s=timeout_s, files=files, cv=False)
        if not run.ok:
            return f"fold {k}: {run.summary()}", None, run
        try:
            art = job_outputs(run, ("holdout_pred.npy",))
            pred, classes = load_npy(art["holdout_pred.npy"]), job_classes(art)
        except (KeyError, OSError, ValueError, SandboxError) as e:
            return f"fold {k}: the job's outputs are unreadable: {e}", None, run
        n_rows = int((self.fold_of_row == k).sum())
        problem = check_predictions(self.task, pred, n_rows, classes, f"fold {k}")
        return problem or pred, classes, run

    def first_fold(
        self, family: str, params: dict[str, Any], *, timeout_s: float | None = None
    ) -> FoldScore:
        """Runs the configuration's first cross-validation fold alone and scores it on
        the host: a trial whose first fold scores poorly can stop there (see
        :class:`~mlpilot.agents.hpo.HpoSettings`' ``prune``), and one that goes on hands
        this fold to :meth:`run`, which then skips it."""
        pred, classes, run = self._fold_job(family, params, 0, timeout_s)
        if isinstance(pred, str):
            return FoldScore(
                fold=0, ok=False, reason=pred, seconds=run.duration_s, timed_out=run.timed_out
            )
        return FoldScore(
            fold=0,
            ok=True,
            pred=pred,
            classes=classes,
            score=self.fold_score(pred, classes, 0, rows_of_fold=True),
            seconds=run.duration_s,
        )

    def fold_score(
        self,
        pred: np.ndarray,
        classes: tuple[Any, ...] | None,
        k: int,
        *,
        rows_of_fold: bool = False,
    ) -> float:
        """The task metric on fold ``k``'s rows, from out-of-fold predictions for every
        training row (or for fold ``k``'s rows only, with ``rows_of_fold``); NaN where the
        metric is undefined on the fold's rows alone (a class missing from them)."""
        rows = self.fold_of_row == k
        metric = self.task.metric
        mine = pred if rows_of_fold else pred[rows]
        try:
            truth = self.task.y.to_numpy()[rows]
            return float(metric(truth, predictions_for(metric, mine, classes)))
        except ValueError:  # a fold without every class (AUC, log-loss): no score
            return float("nan")

    def refit(
        self,
        family: str,
        params: dict[str, Any],
        *,
        timeout_s: float | None = None,
        all_rows: bool = False,
    ) -> RefitOutcome:
        """Fits ``family`` with ``params`` on all training rows in the sandbox (no CV);
        the fitted pipeline comes back as a skops file, loaded only if it holds
        trusted types. With ``all_rows`` it learns from the holdout's rows too (once
        the holdout has been scored): its holdout predictions are then in-sample."""
        files: dict[str, bytes | Path] | None = None
        if all_rows:
            every = plain_numbers(self.task.all_rows(), skip=[self.task.target])
            files = {"train.parquet": parquet_bytes(every)}
        run = self.submit(
            family, params, timeout_s=timeout_s, files=files, cv=False, save_model=True
        )
        base = {"family": family, "params": dict(params), "seconds": run.duration_s}
        if not run.ok:
            return RefitOutcome(ok=False, reason=run.summary(), **base)
        try:
            art = job_outputs(run, (model_io.MODEL_FILE, "holdout_pred.npy"))
            model = self.host_model(
                family,
                params,
                model_io.loads(art[model_io.MODEL_FILE], what=f"{family} model from the job"),
            )
            hold = load_npy(art["holdout_pred.npy"])
            classes = job_classes(art)
        except (KeyError, OSError, ValueError, SandboxError, model_io.UntrustedModel) as e:
            return RefitOutcome(ok=False, reason=f"the refit job's model is refused: {e}", **base)
        problem = check_predictions(
            self.task, hold, len(self.task.holdout.features), classes, "holdout"
        )
        if problem:
            return RefitOutcome(ok=False, reason=problem, **base)
        return RefitOutcome(ok=True, model=model, holdout_pred=hold, classes=classes, **base)


CLAIM_MISMATCH = "the job's claimed score does not match its predictions"


@dataclass(frozen=True)
class FoldScore:
    """One fold of a configuration's cross-validation, run alone (see
    :meth:`TrialRunner.first_fold`): its rows' predictions and the host's score."""

    fold: int
    ok: bool
    reason: str = ""
    pred: np.ndarray | None = field(default=None, repr=False)
    classes: tuple[Any, ...] | None = None
    score: float | None = None
    seconds: float = 0.0
    timed_out: bool = False


@dataclass(frozen=True)
class FoldRerun:
    """A configuration's CV re-run fold by fold (see :meth:`TrialRunner.refold`)."""

    ok: bool
    reason: str = ""
    oof: np.ndarray | None = field(default=None, repr=False)
    classes: tuple[Any, ...] | None = None
    cv_score: float | None = None


def job_outputs(run: ExecResult, names: tuple[str, ...]) -> dict[str, bytes]:
    """The job's named output files and the optional ``classes.json``, read without
    following links; a refused or missing file is an error that names it."""
    out: dict[str, bytes] = {}
    for name in (*names, "classes.json"):
        if name in run.refused:
            raise SandboxError(f"the job's {name} is refused: {run.refused[name]}")
        if name not in run.artifacts:
            if name == "classes.json":
                continue
            raise KeyError(f"the job wrote no {name}")
        out[name] = read_artifact(run.artifacts[name])
    return out


def load_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def job_classes(art: dict[str, bytes]) -> tuple[Any, ...] | None:
    if "classes.json" not in art:
        return None
    classes = json.loads(art["classes.json"])
    if not isinstance(classes, list):
        raise ValueError("classes.json is not a list")
    return tuple(classes)


def check_predictions(
    task: TaskSpec, pred: np.ndarray, n_rows: int, classes: tuple[Any, ...] | None, what: str
) -> str:
    """Why ``pred`` cannot be the predictions of a model of ``task`` for ``n_rows`` rows
    ('' when they can): the row count, finite numbers, and for classification the
    task's classes and one probability per class that sums to one."""
    if pred.ndim == 0 or len(pred) != n_rows:
        got = "a scalar" if pred.ndim == 0 else str(len(pred))
        return f"expected {n_rows} {what} predictions, got {got}"
    if pred.dtype.kind not in "fiu" or not np.all(np.isfinite(pred)):
        return f"{what} predictions are not finite numbers"
    if not task.is_classification:
        return "" if pred.ndim == 1 else f"{what} predictions have shape {pred.shape}, not (n,)"
    expected = sorted(map(str, task.classes or ()))
    if classes is None or sorted(map(str, classes)) != expected:
        return f"{what} predictions are for classes {classes}, but the task's are {expected}"
    if pred.ndim != 2 or pred.shape[1] != len(classes):
        return f"{what} predictions have shape {pred.shape}, not (n, {len(classes)})"
    if pred.min() < -PROBABILITY_SLACK or pred.max() > 1 + PROBABILITY_SLACK:
        return f"{what} class probabilities fall outside [0, 1]"
    if np.abs(pred.sum(axis=1) - 1).max() > PROBABILITY_SLACK:
        return f"{what} class probabilities do not sum to 1"
    return ""


def _self_check(
    oof: np.ndarray, y: np.ndarray, classes: tuple[Any, ...] | None, claimed: dict[str, Any]
) -> tuple[float, float | None]:
    """The job's own score next to the host's recomputation of the same quantity."""
    if classes is not None:
        labels = np.asarray(classes)[oof.argmax(axis=1)]
        theirs = claimed.get("cv_accuracy")
        return float(np.mean(labels == y)), None if theirs is None else float(theirs)
    theirs = claimed.get("cv_rmse")
    return float(np.sqrt(np.mean((oof - y) ** 2))), None if theirs is None else float(theirs)


@dataclass(frozen=True)
class RefitOutcome:
    """A configuration refit on all training rows in the sandbox, its model loaded
    from a skops file (never a pickle)."""

    family: str
    params: dict[str, Any]
    ok: bool
    reason: str = ""
    model: Any = field(default=None, repr=False)
    holdout_pred: np.ndarray | None = field(default=None, repr=False)
    classes: tuple[Any, ...] | None = None
    seconds: float = 0.0
