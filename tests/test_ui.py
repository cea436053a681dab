"""mlpilot ui: its guards over HTTP, its pages, and a whole run driven from a real
headless Chromium (Debian's ``chromium`` and its ``chromedriver``; no browser download)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from mlpilot.agents.rundir import RunDir, RunMeta, read_progress
from mlpilot.api import Pilot
from mlpilot.errors import ConfigError
from mlpilot.ui import UiState, check_host, create_app

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def _finished_run(root: Path, name: str, *, score: float, drop: list[str]) -> Path:
    run = RunDir(root / name)
    run.path.mkdir(parents=True)
    meta = RunMeta(
        request="predict y",
        data="/data/frame.csv",
        target="y",
        metric="roc_auc",
        time_budget=30,
        max_trials=200,
        drop=drop,
        status="finished",
        best_family="lightgbm",
        best_score=score,
        holdout_score=score - 0.01,
        created=name,
    )
    run.create(meta)
    run.log_progress("plan", {"plan": {}}, 1.0)
    run.log_progress("trial", {"family": "lightgbm", "ok": True, "score": score}, 5.0)
    run.write_text("report.html", "<html><body>the report</body></html>")
    return run.path


@pytest.fixture
def client(tmp_path):
    from fastapi.testclient import TestClient

    state = UiState(Pilot(llm=False, runs_dir=tmp_path / "runs"), llm=None)
    _finished_run(tmp_path / "runs", "20260101-000000-a", score=0.90, drop=[])
    _finished_run(tmp_path / "runs", "20260101-000100-b", score=0.92, drop=["x"])
    (tmp_path / "secret.txt").write_text("not for the web")
    with TestClient(create_app(state), base_url="http://127.0.0.1:8765") as c:
        yield c


def test_only_loopback_hosts_are_answered_and_served_on(client) -> None:
    assert client.get("/runs").status_code == 200
    # a page elsewhere that rebinds its name to 127.0.0.1 sends its own Host header
    assert client.get("/runs", headers={"Host": "evil.example:8765"}).status_code == 400
    with pytest.raises(ConfigError, match="--allow-remote"):
        check_host("0.0.0.0", allow_remote=False)
    check_host("0.0.0.0", allow_remote=True)
    check_host("::1", allow_remote=False)


def test_the_chat_takes_json_only_and_answers_with_the_parser(client) -> None:
    # a cross-site form post cannot send JSON without the browser asking first
    form = client.post("/api/chat", data={"text": "help"})
    assert form.status_code == 415
    assert client.post("/api/chat", json={"nothing": 1}).status_code == 400
    answer = client.post("/api/chat", json={"text": "help"}).json()
    assert answer["by"] == "parser" and "I can:" in answer["reply"] and answer["run"] is None
    turns = client.get("/api/chat").json()
    assert turns["turns"][-1]["you"] == "help" and turns["busy"] is False


def test_a_second_turn_while_one_runs_is_refused(tmp_path) -> None:
    ui = UiState(Pilot(llm=False, runs_dir=tmp_path / "other"), llm=None)
    ui.turn_lock.acquire()
    try:
        assert ui.say("help") is None
    finally:
        ui.turn_lock.release()
    assert ui.say("help") is not None


def test_only_a_runs_report_and_plots_are_served(client) -> None:
    name = "20260101-000000-a"
    assert "the report" in client.get(f"/runs/{name}/files/report.html").text
    assert client.get(f"/runs/{name}/files/run.json").status_code == 404
    assert client.get(f"/runs/{name}/files/optuna.db").status_code == 404
    assert client.get("/runs/..%2Fsecret.txt/files/report.html").status_code == 404
    assert client.get(f"/runs/{name}/files/..%2F..%2Fsecret.txt").status_code == 404
    assert client.get("/runs/nosuchrun").status_code == 404


def test_the_runs_page_lists_and_the_compare_page_marks_what_differs(client) -> None:
    page = client.get("/runs").text
    assert "20260101-000000-a" in page and "20260101-000100-b" in page
    assert page.index("20260101-000100-b") < page.index("20260101-000000-a")  # newest first
    compared = client.get("/compare", params={"a": "20260101-000000-a", "b": "20260101-000100-b"})
    rows = compared.text.split("<tr")
    differs = [r for r in rows if 'class="differs"' in r]
    assert any("dropped columns" in r and "x" in r for r in differs)
    assert any("CV score" in r and "0.9000" in r and "0.9200" in r for r in differs)
    assert not any("<th>target</th>" in r for r in differs)
    one = client.get("/runs/20260101-000000-a")
    assert one.status_code == 200 and 'href="/runs/20260101-000000-a/files/report.html"' in one.text
    assert "optuna-dashboard sqlite:///" in one.text


def test_the_event_stream_replays_a_finished_runs_progress_and_ends(client) -> None:
    with client.stream("GET", "/api/runs/20260101-000100-b/events") as r:
        text = "".join(r.iter_text())
    events = [line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("event:")]
    assert events == ["meta", "progress", "progress", "done"]
    assert '"greater_is_better": true' in text and '"holdout_score": 0.91' in text


def test_the_stream_of_a_run_whose_process_died_ends(client, tmp_path) -> None:
    import os

    from mlpilot.ui.app import STALE_S, STOPPED

    run = RunDir(tmp_path / "runs" / "20260101-000000-a")
    run.update(status="running")  # as a killed run leaves it
    old = time.time() - STALE_S - 5
    os.utime(run.path / "run.json", (old, old))
    with client.stream("GET", f"/api/runs/{run.path.name}/events") as r:
        text = "".join(r.iter_text())
    assert text.rstrip().endswith("}") and STOPPED in text


def test_the_progress_log_leaves_a_half_written_line_for_later(tmp_path) -> None:
    path = tmp_path / "progress.jsonl"
    path.write_text('{"event": "plan", "t": 1}\n{"event": "tri')
    events, offset = read_progress(path)
    assert [e["event"] for e in events] == ["plan"]
    with path.open("a") as f:
        f.write('al", "t": 2}\n')
    more, _ = read_progress(path, offset)
    assert [e["event"] for e in more] == ["trial"]
    assert read_progress(tmp_path / "none.jsonl") == ([], 0)


# -- the browser test ----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(state: UiState) -> int:
    """Serves the UI on a free loopback port in a daemon thread; returns the port."""
    from mlpilot.ui.app import serve

    port, ready = _free_port(), threading.Event()
    threading.Thread(
        target=serve, args=(state,), kwargs={"port": port, "ready": ready}, daemon=True
    ).start()
    assert ready.wait(30)
    return port


@contextlib.contextmanager
def _browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1000"):
        options.add_argument(arg)
    options.add_argument("--disable-dev-shm-usage")
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


needs_browser = pytest.mark.skipif(
    (CHROMIUM is None or CHROMEDRIVER is None) and os.environ.get("CI") != "true",
    reason="no chromium/chromedriver (apt-get install chromium chromium-driver)",
)


@needs_browser
@pytest.mark.slow
def test_a_run_started_from_the_chat_box_is_watched_live_and_its_report_opens(
    tmp_path,
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    data = tmp_path / "cancer.csv"
    frame.to_csv(data, index=False)
    state = UiState(Pilot(llm=False, runs_dir=tmp_path / "runs"), llm=None)
    port = _serve(state)
    shots = Path(os.environ.get("MLPILOT_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    base = f"http://127.0.0.1:{port}"
    with _browser() as b:
        wait = WebDriverWait(b, 120)
        b.get(base + "/")
        box = b.find_element(By.ID, "chat-input")
        # 40 s: a shorter run's search may end after the first trials, once the final
        # step's measured cost (its re-run, two refits, the report) is set aside
        box.send_keys(f"tune a model for {data}, predict target, 40 seconds")
        b.find_element(By.ID, "chat-send").click()
        # the live panel appears while the turn is still running, and counts trials
        wait.until(ec.visibility_of_element_located((By.ID, "chat-live")))
        trials = b.find_element(By.CSS_SELECTOR, '#chat-live [data-field="trials"]')
        wait.until(lambda _: int(trials.text or 0) >= 3)
        assert b.find_elements(By.CSS_SELECTOR, ".msg.pending")  # the reply is not in yet
        b.save_screenshot(str(shots / "ui-live-run.png"))
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#chat-live.finished")))
        wait.until(lambda _: not b.find_elements(By.CSS_SELECTOR, ".msg.pending"))
        reply = b.find_elements(By.CSS_SELECTOR, ".msg.bot")[-1].text
        assert "Holdout" in reply and "40 s budget" in reply, reply
        best = b.find_element(By.CSS_SELECTOR, '#chat-live [data-field="best"]').text
        assert float(best) > 0.9
        b.save_screenshot(str(shots / "ui-chat.png"))
        # the run's page: its facts, plots and the report
        b.find_element(By.CSS_SELECTOR, "#chat-live a.run-link").click()
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#run-live.finished")))
        imgs = b.find_elements(By.CSS_SELECTOR, ".plots img")
        shown = {i.get_attribute("src").rsplit("/", 1)[-1] for i in imgs}
        wanted = {"history", "roc", "pr", "confusion", "features"}
        assert {f"plot-{p}.png" for p in wanted} <= shown, shown
        assert all(b.execute_script("return arguments[0].naturalWidth", i) > 0 for i in imgs)
        b.save_screenshot(str(shots / "ui-run.png"))
        b.find_element(By.ID, "report-link").click()
        wait.until(lambda _: "Verification" in b.page_source)
        b.save_screenshot(str(shots / "ui-report.png"))
        b.get(base + "/runs")
        rows = b.find_elements(By.CSS_SELECTOR, "table.runs tbody tr")
        assert len(rows) == 1 and "finished" in rows[0].text
        b.save_screenshot(str(shots / "ui-runs.png"))
    run = state.session.state.runs[-1]
    meta = RunDir(run).meta()
    assert meta.status == "finished" and meta.time_budget == 40
    events, _ = read_progress(Path(run) / "progress.jsonl")
    assert events[0]["event"] == "plan" and events[-1]["event"] == "report"
    assert sum(e["event"] == "trial" for e in events) >= 3
    assert sorted(p.name for p in shots.glob("ui-*.png")) == [
        "ui-chat.png",
        "ui-live-run.png",
        "ui-report.png",
        "ui-run.png",
        "ui-runs.png",
    ]
    print(f"screenshots: {shots}")


@needs_browser
def test_a_pruning_runs_progress_is_told_in_words_live(tmp_path) -> None:
    """The run page of a run whose pruning step is under way: each progress event of
    the NAS agent (as its process appends them) shows as a line in words."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    name = "20260101-000000-reviews"
    run = RunDir(tmp_path / "runs" / name)
    run.path.mkdir(parents=True)
    run.create(
        RunMeta(
            request="make this text classifier smaller, keep accuracy within 1 point",
            data="/data/reviews.csv",
            target="label",
            metric="accuracy",
            time_budget=600,
            max_trials=200,
            status="running",
            created=name,
        )
    )
    run.log_progress("plan", {"plan": {}}, 1.0)
    state = UiState(Pilot(llm=False, runs_dir=tmp_path / "runs"), llm=None)
    port = _serve(state)
    steps = [
        (
            {
                "phase": "finetune",
                "epoch": 1,
                "epochs": 2,
                "step": 61,
                "steps": 122,
                "loss": 0.61,
                "val_accuracy": 0.8124,
                "device": "cpu (2 threads)",
            },
            "pruning: fine-tuning epoch 1/2, validation accuracy 0.812",
        ),
        (
            {"phase": "device", "fallback": "cpu", "reason": "no NVIDIA runtime"},
            "pruning: the sandbox has no GPU to give: training on the CPU",
        ),
        (
            {"phase": "search", "method": "nsga2", "evaluations": 16, "of": 40, "best_error": 0.2},
            "pruning: search 16/40 sub-networks",
        ),
        (
            {"phase": "polished", "tried": [{"params_ratio": 0.4, "before": 0.23, "after": 0.21}]},
            "pruning: polished 1 sub-network(s)",
        ),
    ]
    with _browser() as b:
        wait = WebDriverWait(b, 30)
        b.get(f"http://127.0.0.1:{port}/runs/{name}")
        step = b.find_element(By.CSS_SELECTOR, '#run-live [data-field="step"]')
        wait.until(lambda _: step.text == "planned")
        for t, (details, words) in enumerate(steps, start=2):
            run.update(status="running")  # the run's process is alive
            run.log_progress("nas", details, float(t))
            wait.until(lambda _, w=words: step.text == w, message=f"never showed {words!r}")
        run.update(status="finished")
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#run-live.finished")))
        assert step.text == "finished"
