"""The peers' plumbing (mlpilot.evals.peers): environments of their own, scripts run
as subprocesses, clear errors. The peers themselves need PyPI and run in the
benchmark only."""

from __future__ import annotations

import pandas as pd
import pytest

from mlpilot.evals import peers


def test_a_peer_runs_in_an_environment_of_its_own_made_once(tmp_path) -> None:
    script = "import sys; print(sys.prefix, sys.argv[1])"
    out = peers.run_peer("empty", [], script, "hello", timeout=120, root=tmp_path)
    prefix, word = out.split()
    assert prefix == str(tmp_path / "empty") and word == "hello"
    stamp = tmp_path / "empty" / "installed.txt"
    made = stamp.stat().st_mtime_ns
    peers.run_peer("empty", [], script, "again", timeout=120, root=tmp_path)
    assert stamp.stat().st_mtime_ns == made  # not made again
    with pytest.raises(RuntimeError, match="empty failed: .*ZeroDivisionError"):
        peers.run_peer("empty", [], "1 / 0", timeout=120, root=tmp_path)


def test_bad_peer_requests_get_clear_errors(tmp_path) -> None:
    frame = pd.DataFrame({"x": [1, 2], "y": [0, 1]})
    kw = dict(target="y", problem="binary", budget=10, work=tmp_path)
    with pytest.raises(ValueError, match="no peer 'h2o'; peers: autogluon, flaml"):
        peers.predict("h2o", frame, frame[["x"]], metric="accuracy", **kw)
    with pytest.raises(ValueError, match="not 'f1'"):
        peers.predict("flaml", frame, frame[["x"]], metric="f1", **kw)


PRIOR = """
import csv, sys
train, test, out, target, problem = sys.argv[1:6]
with open(train) as f:
    labels = [row[target] for row in csv.DictReader(f)]
with open(test) as f:
    n = sum(1 for _ in csv.DictReader(f))
classes = sorted(set(labels))
with open(out, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(classes)
    for _ in range(n):
        w.writerow([labels.count(c) / len(labels) for c in classes])
"""


@pytest.mark.parametrize("name", ["toy_binary", "toy_labels"])
def test_a_peers_predictions_become_a_graded_run_of_the_reference_pool(
    name, tmp_path, monkeypatch
) -> None:
    # A stand-in peer (the class prior, stdlib only) through the real path: its own
    # environment, the script's files, the submission, the grader.
    from test_evals import BINARY, LABELS

    from mlpilot.evals import reference
    from mlpilot.evals.tasks import prepare

    monkeypatch.setitem(peers.SCRIPTS, "prior", PRIOR)
    monkeypatch.setitem(peers.REQUIREMENTS, "prior", [])
    monkeypatch.setenv("MLPILOT_PEERS_DIR", str(tmp_path / "envs"))
    task = {"toy_binary": BINARY, "toy_labels": LABELS}[name]
    prepared = prepare(task, tmp_path / "tasks")
    entry: dict = {"pool": {}}
    lines: list[str] = []
    reference.add_peers(prepared, entry, ["prior"], 10, lines.append)
    train = pd.read_csv(prepared.train_csv)
    dummy = reference.score(
        task, reference.dummy_values(task, train, len(prepared.answers())), prepared.answers()
    )
    assert entry["pool"]["prior-10s"] == pytest.approx(dummy)  # the prior is the dummy
    assert lines and "prior-10s" in lines[0]
    reference.add_peers(prepared, entry, ["prior"], 10, lines.append)
    assert len(lines) == 1  # a run the pool holds is not made again
