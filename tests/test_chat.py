"""The chat loop: asks back for what is missing, runs, answers follow-ups from the run."""

from __future__ import annotations

import subprocess
import sys

import pytest
from sklearn.datasets import load_breast_cancer

from mlpilot.api import Pilot
from mlpilot.chat import ChatSession


@pytest.fixture(scope="module")
def data_csv(tmp_path_factory):
    frame = load_breast_cancer(as_frame=True).frame.rename(columns={"target": "benign"})
    path = tmp_path_factory.mktemp("data") / "cancer.csv"
    frame.to_csv(path, index=False)
    return path


def test_chat_asks_for_data_and_target_then_runs_and_answers(data_csv, tmp_path) -> None:
    chat = ChatSession(Pilot(llm=False, runs_dir=tmp_path), default_budget=15)
    assert "Which data file" in chat.say("tune a model, optimise AUC, 15 s")
    assert "not found" in chat.say(str(tmp_path / "missing.csv"))
    question = chat.say(str(data_csv))
    assert "Which column should I predict?" in question and "benign" in question
    assert "no column 'colour'" in chat.say("colour")
    done = chat.say("benign")
    assert done.startswith("Done. Holdout score"), done
    assert chat.result is not None and chat.result.status == "finished"
    features = chat.say("which features mattered?")
    assert "Drop in holdout ROC AUC" in features and ":" in features
    assert "No LLM was used" in chat.say("what did it cost?")
    assert "1." in chat.say("show me the leaderboard")
    assert "fold-by-fold CV: ok" in chat.say("did it pass verification?")
    assert chat.say("exit") == "Bye." and chat.done


def test_chat_takes_a_whole_request_at_once(data_csv, tmp_path) -> None:
    chat = ChatSession(Pilot(llm=False, runs_dir=tmp_path), default_budget=15)
    reply = chat.say(f"tune a model for {data_csv} to predict benign in 15 seconds")
    assert reply.startswith("Done."), reply
    assert chat.budget == 15


def test_cli_chat_reads_lines_until_exit(data_csv, tmp_path) -> None:
    lines = f"tune a model for {data_csv}, 15 s\nbenign\nwhat did it cost?\nexit\n"
    done = subprocess.run(
        [sys.executable, "-m", "mlpilot", "chat", "--no-llm", "--runs-dir", str(tmp_path)],
        input=lines,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "Which column should I predict?" in done.stdout
    assert "Done. Holdout score" in done.stdout
    assert "No LLM was used" in done.stdout
