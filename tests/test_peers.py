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
