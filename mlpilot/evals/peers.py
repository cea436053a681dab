"""The peers mlpilot is compared with, run as their users run them: AutoGluon and FLAML.

Each peer lives in a virtual environment of its own (AutoGluon 1.6 needs pandas < 3,
mlpilot's environment has pandas 3), made from PyPI on first use under ``root``
(default ``~/.cache/mlpilot/peers``, or ``$MLPILOT_PEERS_DIR``), and runs as a
subprocess; training rows and rows to predict travel as CSV files, predictions come
back as a CSV file: class probabilities (one column per class, named by the class)
or a ``prediction`` column of values. The host scores them, so every system is
scored by the same code.

Used by ``benchmarks/tabular.py`` (the race at equal budgets) and by the eval
harness's reference pools (``mlpilot eval reference --peers``).
"""

from __future__ import annotations

import os
import subprocess
import venv
from pathlib import Path

import pandas as pd

# Each peer's environment, pinned to the releases measured. AutoGluon with all its
# tabular models (its neural networks need torch: the CPU build, 2.13 is the release
# pip finds on this project's machines).
REQUIREMENTS = {
    "autogluon": ["torch==2.13.0", "autogluon.tabular[all]==1.6.3"],
    "flaml": ["flaml[automl]==2.8.0"],
}

# argv: train.csv test.csv out.csv target problem metric budget cores seed work [presets]
AUTOGLUON = """
import sys
import pandas as pd
from autogluon.tabular import TabularPredictor
train, test, out, target, problem, metric, budget, cores, seed, work, presets = sys.argv[1:12]
names = {"roc_auc": "roc_auc", "accuracy": "accuracy", "log_loss": "log_loss",
         "rmse": "root_mean_squared_error", "mae": "mean_absolute_error",
         "mape": "mean_absolute_percentage_error"}
predictor = TabularPredictor(label=target, problem_type=problem, eval_metric=names[metric],
                             path=work, verbosity=0)
predictor.fit(pd.read_csv(train), time_limit=float(budget), presets=presets,
              num_cpus=int(cores), num_gpus=0)
X = pd.read_csv(test)
if problem == "regression":
    pd.DataFrame({"prediction": predictor.predict(X)}).to_csv(out, index=False)
else:
    predictor.predict_proba(X).to_csv(out, index=False)
"""

FLAML = """
import os
import sys
import pandas as pd
from flaml import AutoML
train, test, out, target, problem, metric, budget, cores, seed, work = sys.argv[1:11]
os.makedirs(work, exist_ok=True)
frame = pd.read_csv(train)
X, y = frame.drop(columns=[target]), frame[target]
names = {"roc_auc": "roc_auc" if problem == "binary" else "roc_auc_ovr",
         "accuracy": "accuracy", "log_loss": "log_loss", "rmse": "rmse", "mae": "mae",
         "mape": "mape"}
automl = AutoML()
automl.fit(X_train=X, y_train=y, task="regression" if problem == "regression" else
           "classification", metric=names[metric], time_budget=float(budget),
           n_jobs=int(cores), seed=int(seed), verbose=0, log_file_name=work + "/flaml.log")
test = pd.read_csv(test)
if problem == "regression":
    pd.DataFrame({"prediction": automl.predict(test)}).to_csv(out, index=False)
else:
    pd.DataFrame(automl.predict_proba(test), columns=[str(c) for c in automl.classes_]).to_csv(
        out, index=False)
"""

SCRIPTS = {"autogluon": AUTOGLUON, "flaml": FLAML}
METRICS = ("roc_auc", "accuracy", "log_loss", "rmse", "mae", "mape")


def default_root() -> Path:
    return Path(os.environ.get("MLPILOT_PEERS_DIR") or Path.home() / ".cache/mlpilot/peers")


def peer_python(name: str, requirements: list[str], root: Path | None = None) -> Path:
    """The Python of the peer's environment, created (and its requirements
    installed) on first use."""
    home = (root or default_root()) / name
    python = home / "bin" / "python"
    stamp = home / "installed.txt"
    wanted = "\n".join(requirements)
    if stamp.exists() and stamp.read_text() == wanted:
        return python
    print(f"[peers] installing {name} into {home} ({', '.join(requirements)})", flush=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(home)
    command = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    if requirements:
        subprocess.run([*command, *requirements], check=True)
    stamp.write_text(wanted)
    return python


def run_peer(
    name: str,
    requirements: list[str],
    script: str,
    *args: str,
    timeout: float,
    root: Path | None = None,
) -> str:
    """Runs ``script`` (Python source) with the peer's Python; returns its stdout."""
    python = peer_python(name, requirements, root)
    done = subprocess.run(
        [str(python), "-c", script, *args], capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed: {done.stderr.strip().splitlines()[-1:]}")
    return done.stdout


def predict(
    peer: str,
    train: pd.DataFrame,
    test: pd.DataFrame,
    *,
    target: str,
    problem: str,
    metric: str,
    budget: float,
    work: Path,
    cores: int = 2,
    seed: int = 0,
    presets: str = "medium",
    root: Path | None = None,
) -> pd.DataFrame:
    """Fits ``peer`` ("autogluon" or "flaml") on ``train`` within ``budget`` seconds and
    returns its predictions for ``test``'s rows: class probabilities (columns named by
    class, as strings) or a ``prediction`` column. ``presets`` is AutoGluon's ("medium",
    "best", ...; "_quality" is added)."""
    if peer not in SCRIPTS:
        raise ValueError(f"no peer {peer!r}; peers: {', '.join(SCRIPTS)}")
    if metric not in METRICS:
        raise ValueError(f"the peers are scored on {', '.join(METRICS)}, not {metric!r}")
    work.mkdir(parents=True, exist_ok=True)
    paths = work / "train.csv", work / "test.csv", work / "pred.csv"
    train.to_csv(paths[0], index=False)
    test.to_csv(paths[1], index=False)
    args = [*map(str, paths), target, problem, metric, f"{budget:g}", str(cores), str(seed)]
    args.append(str(work / peer))
    if peer == "autogluon":
        args.append(presets if presets.endswith("_quality") else f"{presets}_quality")
    # a peer may overrun its time limit a little; ten times over is a failure
    run_peer(peer, REQUIREMENTS[peer], SCRIPTS[peer], *args, timeout=10 * budget + 300, root=root)
    out = pd.read_csv(paths[2])
    out.columns = [str(c) for c in out.columns]
    return out
