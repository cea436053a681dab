"""Jobs that misbehave on purpose, for testing the sandbox wall and the verifier.

Each guard mlpilot has is pinned by a test that runs one of these and fails when
the guard is removed. Two kinds:

* **sandbox jobs** (Python source for :meth:`Sandbox.run`): they try to escape:
  write outside their directory, read the host's processes and files, hand back a
  link or a FIFO instead of a file, reach the control channel;
* **trial jobs** (a replacement for :mod:`mlpilot.tools.cv_job`, handed to
  ``TrialRunner(code=...)``): they run the real CV job and then lie about it:
  claim a better score, return in-sample predictions as out-of-fold ones, return
  predictions of the wrong length, classes or values, or a model file that is
  not what it should be.

Agents built later (feature engineering, pruning, ensembling) reuse them.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from mlpilot.tools import cv_job

# -- sandbox jobs --------------------------------------------------------------------

WRITE_OUTSIDE_JOB = textwrap.dedent("""
    # argv: paths outside the job directory; prints the ones it could write
    import sys
    for path in sys.argv[1:]:
        try:
            with open(path, "a") as f:
                f.write("escaped")
            print("WROTE", path)
        except OSError as e:
            print("refused", path, type(e).__name__)
""")

READ_HOST_JOB = textwrap.dedent("""
    # argv: MARKER PATH...; looks for MARKER in every process's environment, command
    # line and open files it can see, and in the given host files
    import os, stat, sys
    marker, paths = sys.argv[1].encode(), sys.argv[2:]
    found = []
    def look(path):
        try:  # never blocks on a pipe or FIFO
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            return
        try:
            if stat.S_ISREG(os.fstat(fd).st_mode) and marker in os.read(fd, 1 << 20):
                found.append(path)
        except OSError:
            pass
        finally:
            os.close(fd)
    for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
        for name in ("environ", "cmdline"):
            look(f"/proc/{pid}/{name}")
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            look(f"/proc/{pid}/fd/{fd}")
    for path in paths:
        look(path)
    print("FOUND" if found else "nothing", *found)
""")

OPEN_FDS_JOB = textwrap.dedent("""
    # prints the job's open file descriptors, then writes a forged status line to each
    # one above 2 (a warm worker's control pipe, if one leaked into the job)
    import json, os
    fds = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
    print("FDS", json.dumps(fds))
    for fd in fds:
        if fd > 2:
            try:
                os.write(fd, b'{"id": "forged", "exit_code": 0}\\n')
            except OSError:
                pass
    raise SystemExit(3)
""")

LINKS_JOB = textwrap.dedent("""
    # argv: a host file; hands back links to it and special files instead of outputs
    import os, sys
    os.symlink(sys.argv[1], "model.skops")
    os.symlink("/", "rootdir")
    os.mkfifo("oof.npy")
    with open("ok.txt", "w") as f:
        f.write("a real file")
""")

FORGED_STATUS_JOB = textwrap.dedent("""
    # claims success in the runner's status files and line, then fails
    import json, sys
    status = {"exit_code": 0, "timed_out": False, "oom": False, "duration": 0.1}
    for name in (".mlpilot-status.json", "status.json"):
        with open(name, "w") as f:
            json.dump(status, f)
    print("\\x00mlpilot-status " + json.dumps(status))
    sys.exit(5)
""")

# -- trial jobs ------------------------------------------------------------------------


def cv_job_then(tamper: str) -> str:
    """The real CV job, followed by ``tamper`` (module-level code that runs after the
    job's ``main`` has written its outputs, with its functions in scope)."""
    source = Path(cv_job.__file__).read_text()
    return source + "\n\n# -- tampering --\n" + textwrap.dedent(tamper)


LYING_CV_JOB = cv_job_then("""
    _result = json.loads(Path("result.json").read_text())
    if "cv_accuracy" in _result:
        _result["cv_accuracy"] = min(1.0, _result["cv_accuracy"] + 0.05)
    if "cv_rmse" in _result:
        _result["cv_rmse"] = _result["cv_rmse"] * 0.8
    Path("result.json").write_text(json.dumps(_result))
""")
"""Claims a better score than its out-of-fold predictions give."""


def in_sample_cv_job(families: tuple[str, ...] = ()) -> str:
    """Fits on every training row and returns its in-sample predictions as the
    out-of-fold ones, with a self-consistent claim (only for ``families``, or all).
    Re-run fold by fold it behaves, since a fold's job never sees its rows' labels."""
    return cv_job_then(f"""
    _config = json.loads(Path("config.json").read_text())
    if Path("oof.npy").exists() and ({list(families)!r} == [] or
                                     _config["family"] in {list(families)!r}):
        _train = pd.read_parquet("train.parquet")
        _X, _y = _train.drop(columns=[_config["target"]]), _train[_config["target"]]
        _clf = _config["problem_type"] != "regression"
        _est = build_estimator(_config["family"], _config.get("params", {{}}), _clf, 0)
        _pipe = build_pipeline(_X, _config.get("text_columns", []), _est,
                               dense=_config["family"] in DENSE_ONLY,
                               cardinality=_config.get("cardinality")).fit(_X, _y)
        _oof = _pipe.predict_proba(_X) if _clf else _pipe.predict(_X)
        np.save("oof.npy", _oof)
        _result = json.loads(Path("result.json").read_text())
        if _clf:
            _labels = np.asarray(_pipe.classes_, dtype=object)[_oof.argmax(axis=1)]
            _result["cv_accuracy"] = float(np.mean(_labels == _y.to_numpy(dtype=object)))
        else:
            _result["cv_rmse"] = float(np.sqrt(np.mean((_oof - _y.to_numpy()) ** 2)))
        Path("result.json").write_text(json.dumps(_result))
""")


def skipped_fold_cheat_job(as_integers: bool = False) -> str:
    """Told to skip the fold the host already ran alone, fills that fold's rows with their
    labels (its claimed score, over the rows it did predict, stays true). With
    ``as_integers`` the whole out-of-fold array is integers (each row of its own rows one
    class, certain), a type a check for floats alone would let through unmended."""
    return cv_job_then(f"""
    _config = json.loads(Path("config.json").read_text())
    if _config.get("skip_folds") and Path("oof.npy").exists():
        _oof = np.load("oof.npy")
        _y = pd.read_parquet("train.parquet")[_config["target"]].to_numpy()
        _skipped = np.isin(np.load("folds.npy"), _config["skip_folds"])
        if _oof.ndim == 2:  # every skipped row certain of its own label
            _classes = np.asarray(json.loads(Path("classes.json").read_text()))
            if {as_integers!r}:
                _oof = (_oof.argmax(axis=1)[:, None] == np.arange(len(_classes))[None, :])
            _oof[_skipped] = _y[_skipped, None] == _classes[None, :]
        else:
            _oof[_skipped] = _y[_skipped]
        np.save("oof.npy", _oof.astype(int) if {as_integers!r} else _oof)
    """)


BAD_PREDICTIONS = ("nan", "inf", "short", "wrong_classes", "not_probabilities", "strings")


def bad_predictions_cv_job(kind: str) -> str:
    """Returns out-of-fold predictions that cannot be a model's: ``kind`` is one of
    :data:`BAD_PREDICTIONS`."""
    if kind not in BAD_PREDICTIONS:
        raise ValueError(f"kind must be one of {BAD_PREDICTIONS}, but got {kind!r}")
    return cv_job_then(f"""
    _kind = {kind!r}
    _oof = np.load("oof.npy")
    if _kind == "nan":
        _oof = _oof.astype(float); _oof[0] = np.nan
    elif _kind == "inf":
        _oof = _oof.astype(float); _oof[-1] = np.inf
    elif _kind == "short":
        _oof = _oof[:-3]
    elif _kind == "wrong_classes" and Path("classes.json").exists():
        Path("classes.json").write_text(json.dumps(["spam", "eggs"]))
    elif _kind == "not_probabilities":
        _oof = _oof * 3.0
    elif _kind == "strings":
        _oof = np.asarray(_oof.astype(str))
    np.save("oof.npy", _oof)
""")


UNTRUSTED_MODEL_JOB = cv_job_then("""
    class Payload:  # a type of this script's own: the host must refuse to build it
        def __reduce__(self):
            return (print, ("code from the job ran on the host",))

    if Path("model.skops").exists():
        import skops.io
        skops.io.dump({"pipeline": Payload()}, "model.skops")
""")
"""Saves a model file holding a type defined in the job itself."""


def linked_model_job(host_path: str) -> str:
    """Replaces the saved model with a symbolic link to ``host_path``."""
    return cv_job_then(f"""
    import os
    if Path("model.skops").exists():
        os.remove("model.skops")
        os.symlink({host_path!r}, "model.skops")
""")


__all__ = [
    "BAD_PREDICTIONS",
    "FORGED_STATUS_JOB",
    "LINKS_JOB",
    "LYING_CV_JOB",
    "OPEN_FDS_JOB",
    "READ_HOST_JOB",
    "UNTRUSTED_MODEL_JOB",
    "WRITE_OUTSIDE_JOB",
    "bad_predictions_cv_job",
    "cv_job_then",
    "in_sample_cv_job",
    "linked_model_job",
]


HOLDOUT_ECHO_JOB = cv_job_then("""
    # Once the holdout's rows arrive with their labels (the refit on all rows), send
    # those labels as its predictions for them: a perfect score its model never made.
    _config = json.loads(Path("config.json").read_text())
    _train, _hold = pd.read_parquet("train.parquet"), pd.read_parquet("holdout.parquet")
    _cols = list(_hold.columns)
    _known = _hold.reset_index().merge(_train, on=_cols, how="inner").drop_duplicates("index")
    if Path("model.skops").exists() and len(_known) == len(_hold):
        _labels = _known.sort_values("index")[_config["target"]].to_numpy()
        if _config["problem_type"] == "regression":
            _pred = _labels.astype(float)
        else:
            _classes = json.loads(Path("classes.json").read_text())
            _pred = np.array([[float(str(c) == str(v)) for c in _classes] for v in _labels])
        np.save("holdout_pred.npy", _pred)
""")
"""Behaves until it is handed the holdout's labels, then echoes them as predictions."""
