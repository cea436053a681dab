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
    assert done.startswith("Done (15 s budget). Holdout ROC AUC"), done
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
    assert reply.startswith("Done (15 s budget)."), reply
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
    assert "Done (15 s budget). Holdout ROC AUC" in done.stdout
    assert "No LLM was used" in done.stdout


# -- the chat as an agent: typed actions chosen by the (scripted) LLM ---------------------


def act(action: str, **fields) -> str:
    import json

    return json.dumps({"action": action, **fields})


@pytest.fixture(scope="module")
def churn_csv(tmp_path_factory):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    n = 400
    frame = pd.DataFrame(
        {
            "tenure": rng.integers(1, 72, n),
            "charges": rng.normal(70, 20, n).round(2),
            "contract": rng.choice(["monthly", "yearly"], n),
            "noise": rng.normal(size=n),
        }
    )
    logit = -0.05 * frame.tenure + 0.03 * (frame.charges - 70) + (frame.contract == "monthly")
    frame["churn"] = np.where(logit + rng.normal(0, 0.5, n) > -0.8, "yes", "no")
    folder = tmp_path_factory.mktemp("churn")
    frame.to_csv(folder / "churn.csv", index=False)
    frame.drop(columns=["churn"]).head(7).to_csv(folder / "new.csv", index=False)
    return folder / "churn.csv"


def test_a_chat_transcript_covers_every_action(churn_csv, tmp_path) -> None:
    from mlpilot.llm import LLM, LLMTimeout
    from mlpilot.testing import ScriptedLLM

    data, new = str(churn_csv), str(churn_csv.with_name("new.csv"))
    fake = ScriptedLLM(
        [
            act("help"),
            act("profile", data=data),
            # the model's own arithmetic says 3000 s; the text says 12 seconds, which wins
            act("run", data=data, target="churn", seconds=3000),
            act("explain", topic="winner"),
            act("explain", topic="llm"),
            act("explain", topic="leakage"),
            act("explain", topic="cost"),
            act("explain", topic="leaderboard"),
            act("explain", topic="checks"),
            act("explain", topic="report"),
            act("explain", topic="features"),
            act("plot"),
            # an invented column is not dropped; the one the text names is
            act("rerun", drop=["tenure", "colour"]),
            act("compare"),
            # a comparison the text does not ask for: the parser's reading (the cost) wins
            act("compare"),
            act("predict", data=new),
            LLMTimeout("slow"),  # no answer in time: the parser reads "list my runs"
            act("quit"),
        ]
    )
    pilot = Pilot(llm=False, runs_dir=tmp_path)
    chat = ChatSession(pilot, default_budget=12, llm=LLM(fake))
    say = chat.say
    assert "- rerun:" in say("what can you do?") and chat.chosen_by == "llm"
    profile = say(f"describe {data}")
    assert "400 rows, 5 columns: 3 numeric" in profile and "Likely targets: churn" in profile
    done = say(f"tune a model for {data}, predict churn, take 12 seconds")
    assert done.startswith("Done (12 s budget). Holdout ROC AUC"), done
    assert chat.budget == 12 and chat.result is not None
    first = chat.result.run_dir
    assert "The delivered model is" in say("why did that model win?")
    assert "no LLM" in say("what did the LLM do?")
    assert "leak" in say("any leaks?").lower()
    assert "No LLM was used" in say("what did it cost?")
    assert say("show me the leaderboard").startswith("1. ")
    assert "fold-by-fold CV: ok" in say("can I trust it?")
    assert "report.md" in say("where is the report?")
    assert "Drop in holdout ROC AUC" in say("which features mattered?")
    assert "plot-history.png" in say("plot the history")
    again = say("now try it without the tenure column and compare")
    assert "Without tenure." in again and f"{first.name} vs " in again
    assert "dropped columns: – → tenure" in again
    assert chat.result.run_dir != first and chat.state.drop == ["tenure"]
    assert "dropped columns: – → tenure" in say("compare the two runs")
    assert "No LLM was used" in say("and what did that cost?") and chat.chosen_by == "parser"
    written = say(f"predict on {new}")
    assert "Wrote 7 rows of class probabilities" in written
    import pandas as pd

    preds = pd.read_csv(churn_csv.with_name("new.predictions.csv"))
    assert list(preds.columns) == ["no", "yes"] and len(preds) == 7
    runs = say("list my runs")
    assert chat.chosen_by == "parser" and first.name in runs and runs.count("finished") == 2
    assert say("bye") == "Bye." and chat.done
    assert fake.remaining == 0
    # the typed schema went to the model with the chat's state in the prompt
    prompt = fake.calls[12].messages[-1]["content"]
    assert "columns: tenure, charges, contract, noise, churn" in prompt
    assert "rerun: run the last run again with a change" in prompt


def test_a_chat_resumes_from_its_checkpoint(churn_csv, tmp_path) -> None:
    pilot = Pilot(llm=False, runs_dir=tmp_path)
    first = ChatSession(pilot, default_budget=12)
    assert first.say(f"tune a model for {churn_csv}, predict churn, 12 s").startswith("Done")
    run_dir = first.result.run_dir
    first.close()  # the process ends (Ctrl-C); the conversation is on disk
    again = ChatSession(pilot, default_budget=12, resume=True)
    assert again.state.runs == [str(run_dir)] and again.state.target == "churn"
    assert again.state.turns[0][1].startswith("Done")
    assert "The delivered model is" in again.say("why did it win?")  # read from the run dir
    fresh = ChatSession(pilot, default_budget=12)  # not resumed: a new conversation
    assert fresh.state.runs == [] and "no run yet" in fresh.say("why did it win?")


def test_the_parser_reads_budgets_columns_and_variations() -> None:
    from mlpilot.chat import ChatState, parse_action, parse_seconds

    assert parse_seconds("with a 30 second budget") == 30
    assert parse_seconds("take 5 minutes") == 300 and parse_seconds("half a minute") == 30
    assert parse_seconds("two minutes") == 120 and parse_seconds("90s") == 90
    assert parse_seconds("an hour") == 3600 and parse_seconds("predict churn") is None
    state = ChatState(columns=["tenure", "age", "churn"], runs=["/r/1"], data="d.csv")
    a = parse_action("now try it without the tenure and age columns and compare", state)
    assert a.action == "rerun" and a.drop == ["tenure", "age"]
    assert parse_action("optimise recall", state).metric == "recall"
    assert parse_action("with a 5 minute budget", state).seconds == 300
    assert parse_action("compare the last two runs", state).action == "compare"
    assert parse_action("predict on new.csv", state).action == "predict"
    assert parse_action("tune a model for other.csv", state).action == "run"
    assert parse_action("what did it cost?", state).topic == "cost"
    assert parse_action("list my runs", state).action == "runs"
    empty = ChatState()
    assert parse_action("why did it win?", empty).action == "explain"  # "no run yet"
    assert parse_action("tune a model", empty).action == "run"


def test_the_embedded_model_starts_a_run_and_its_budget_holds(
    embedded_model, churn_csv, tmp_path
) -> None:
    # The real (small) embedded model picks the action; the run itself uses no LLM.
    from mlpilot.chat import chat_llm

    llm = chat_llm()
    assert llm is not None and llm.model == f"embedded/{embedded_model}"
    chat = ChatSession(Pilot(llm=False, runs_dir=tmp_path), default_budget=120, llm=llm)
    reply = chat.say(f"tune a model for {churn_csv}, predict churn, take 30 seconds")
    assert chat.chosen_by == "llm"  # the model answered in time, and its answer held
    assert chat.last_action is not None and chat.last_action.action == "run"
    assert reply.startswith("Done (30 s budget)"), reply
    assert chat.result is not None and chat.result.run_dir.exists()
    from mlpilot.agents.rundir import RunDir

    meta = RunDir(chat.result.run_dir).meta()
    assert meta.time_budget == 30 and meta.target == "churn"
    assert meta.spent_s <= 30 + 15  # the run's own budget check: +15 s margin at most
