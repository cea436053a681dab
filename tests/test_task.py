"""TaskSpec: inference on real data, and a clear error for every kind of bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine

from mlpilot.errors import ConfigError, DataError
from mlpilot.task import TaskSpec, read_table, target_from_request


@pytest.fixture(scope="module")
def cancer() -> pd.DataFrame:
    return load_breast_cancer(as_frame=True).frame


@pytest.fixture(scope="module")
def diabetes() -> pd.DataFrame:
    return load_diabetes(as_frame=True).frame


# -- inference ---------------------------------------------------------------


def test_binary_task_from_request(cancer: pd.DataFrame) -> None:
    task = TaskSpec.from_data(cancer, request="predict target and optimise log loss")
    assert task.target == "target"
    assert task.problem_type == "binary"
    assert task.metric.name == "log_loss" and not task.metric.greater_is_better
    assert task.modality == "tabular"
    assert len(task.feature_columns) == 30


def test_multiclass_and_regression_inference(diabetes: pd.DataFrame) -> None:
    wine = load_wine(as_frame=True).frame
    assert TaskSpec.from_data(wine, target="target").problem_type == "multiclass"
    task = TaskSpec.from_data(diabetes, request="minimise RMSE when you predict target")
    assert task.problem_type == "regression"
    assert task.metric.name == "rmse"


def test_default_metrics(cancer: pd.DataFrame, diabetes: pd.DataFrame) -> None:
    assert TaskSpec.from_data(cancer, target="target").metric.name == "roc_auc"
    assert TaskSpec.from_data(diabetes, target="target").metric.name == "rmse"


def test_explicit_target_and_metric_win_over_the_request(cancer: pd.DataFrame) -> None:
    frame = cancer.rename(columns={"mean radius": "radius"})
    task = TaskSpec.from_data(
        frame, request="predict radius, optimise AUC", target="target", metric="accuracy"
    )
    assert task.target == "target" and task.metric.name == "accuracy"


@pytest.mark.parametrize(
    ("request_text", "expected"),
    [
        ("predict price", "price"),
        ("Predict the Price from the rest", "price"),
        ("tune a model to predict house price", "price"),
        ("target is sold", "sold"),
        ("forecast sales for next month", "sales"),
        ("tune a model for this dataset", None),
    ],
)
def test_target_named_in_the_request(request_text: str, expected: str | None) -> None:
    assert target_from_request(request_text, ["area", "price", "sold", "sales"]) == expected


def test_holdout_is_stratified_seeded_and_its_labels_stay_private(cancer: pd.DataFrame) -> None:
    a = TaskSpec.from_data(cancer, target="target", seed=1)
    b = TaskSpec.from_data(cancer, target="target", seed=1)
    assert a.holdout.features.equals(b.holdout.features)
    assert "target" not in a.holdout.features.columns
    assert len(a.train) + len(a.holdout.features) == len(cancer)
    share_all = cancer["target"].mean()
    assert abs(a.train["target"].mean() - share_all) < 0.01
    # Scoring goes through the task: the host keeps the labels.
    perfect = a.holdout._labels.to_numpy().astype(float)
    assert a.score_holdout(perfect) == 1.0


def test_score_holdout_checks_its_input(cancer: pd.DataFrame) -> None:
    task = TaskSpec.from_data(cancer, target="target")
    with pytest.raises(DataError, match="expected 114 holdout predictions, but got 3"):
        task.score_holdout([0.1, 0.2, 0.3])
    with pytest.raises(DataError, match="NaN"):
        task.score_holdout(np.full(114, np.nan))


def test_text_task_is_detected() -> None:
    rng = np.random.default_rng(0)
    words = ["great", "awful", "plot", "acting", "boring", "brilliant", "slow", "moving"]
    reviews = [" ".join(rng.choice(words, 12)) for _ in range(60)]
    frame = pd.DataFrame(
        {"review": reviews, "stars": rng.integers(1, 6, 60), "sentiment": ["pos", "neg"] * 30}
    )
    task = TaskSpec.from_data(frame, request="classify sentiment")
    assert task.modality == "text" and task.text_columns == ("review",)
    assert task.problem_type == "binary"


# -- bad input -----------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data file not found: .*nope.csv"):
        TaskSpec.from_data(tmp_path / "nope.csv", target="y")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is a directory"):
        read_table(tmp_path)


def test_unsupported_extension(tmp_path: Path) -> None:
    path = tmp_path / "data.xlsx"
    path.write_bytes(b"PK\x03\x04")
    with pytest.raises(DataError, match="unsupported data file type '.xlsx'"):
        read_table(path)


def test_unreadable_parquet(tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    path.write_text("this is not parquet")
    with pytest.raises(DataError, match="could not read 'data.parquet' as Parquet"):
        read_table(path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(DataError, match="is empty"):
        TaskSpec.from_data(path, target="y")


def test_blank_file(tmp_path: Path) -> None:
    path = tmp_path / "blank.csv"
    path.write_text("\n\n")
    with pytest.raises(DataError, match="no columns"):
        TaskSpec.from_data(path, target="y")


def test_header_without_rows(tmp_path: Path) -> None:
    path = tmp_path / "header.csv"
    path.write_text("a,b,y\n")
    with pytest.raises(DataError, match="header but no rows"):
        TaskSpec.from_data(path, target="y")


def test_no_rows_after_dropping_missing_targets() -> None:
    frame = pd.DataFrame({"a": [1, 2, 3], "y": [None, None, None]})
    with pytest.raises(DataError, match="no rows are left after dropping rows with a missing"):
        TaskSpec.from_data(frame, target="y")


def test_missing_targets_are_dropped_with_a_warning(cancer: pd.DataFrame) -> None:
    frame = cancer.copy()
    frame.loc[:9, "target"] = np.nan
    task = TaskSpec.from_data(frame, target="target")
    assert any("dropped 10 row(s)" in w for w in task.warnings)


def test_target_not_found_suggests_close_matches(cancer: pd.DataFrame) -> None:
    with pytest.raises(
        DataError, match=r"target column 'targt' is not in the data; did you mean 'target'"
    ):
        TaskSpec.from_data(cancer, target="targt")
    with pytest.raises(DataError, match="did you mean 'target'"):
        TaskSpec.from_data(cancer, target="Target")


def test_no_target_lists_candidates(cancer: pd.DataFrame) -> None:
    with pytest.raises(DataError, match=r"no target column given.*Likely candidates: 'target'"):
        TaskSpec.from_data(cancer, request="tune a model for this dataset")


def test_constant_target() -> None:
    frame = pd.DataFrame({"a": range(10), "b": range(10, 20), "y": [1] * 10})
    with pytest.raises(DataError, match="target 'y' is constant \\(every row is 1\\)"):
        TaskSpec.from_data(frame, target="y")


def test_class_with_a_single_row() -> None:
    frame = pd.DataFrame({"a": np.arange(21) % 7, "y": ["x"] * 10 + ["z"] * 10 + ["lonely"]})
    with pytest.raises(DataError, match="class\\(es\\) have a single row: 'lonely'"):
        TaskSpec.from_data(frame, target="y")


def test_id_like_and_constant_columns_are_dropped_with_warnings(cancer: pd.DataFrame) -> None:
    frame = cancer.copy()
    frame.insert(0, "customer_id", [f"C{i:05d}" for i in range(len(frame))])
    frame.insert(1, "row", range(1000, 1000 + len(frame)))
    frame["source"] = "hospital-a"
    frame["empty"] = np.nan
    task = TaskSpec.from_data(frame, target="target")
    assert set(task.dropped_columns) == {"customer_id", "row", "source", "empty"}
    assert "ID-like" in task.dropped_columns["customer_id"]
    assert "row counter" in task.dropped_columns["row"]
    assert "constant" in task.dropped_columns["source"]
    assert len(task.warnings) == 4
    assert "customer_id" not in task.feature_columns


def test_a_counter_named_like_a_time_axis_is_kept_as_a_trend_feature() -> None:
    months = np.arange(60)
    frame = pd.DataFrame(
        {
            "row": months + 1,
            "months_since_start": months,
            "month": months % 12 + 1,
            "passengers": 100.0 + 3 * months + 10 * np.sin(months),
        }
    )
    task = TaskSpec.from_data(frame, target="passengers")
    assert "row counter" in task.dropped_columns["row"]
    assert "months_since_start" in task.feature_columns


def test_no_usable_features_left() -> None:
    frame = pd.DataFrame({"id": range(10), "y": [0, 1] * 5})
    with pytest.raises(DataError, match="no usable feature columns remain"):
        TaskSpec.from_data(frame, target="y")


def test_mixed_type_column_from_csv(tmp_path: Path) -> None:
    path = tmp_path / "mixed.csv"
    ages = [str(20 + i) for i in range(18)] + ["unknown", "?"]
    rows = "\n".join(f"{a},{i % 2}" for i, a in enumerate(ages))
    path.write_text("age,y\n" + rows + "\n")
    with pytest.raises(
        DataError, match=r"column 'age' mixes numbers \(90% of values\).*'unknown' \(row index 18\)"
    ):
        TaskSpec.from_data(path, target="y")


def test_mixed_python_types_in_a_dataframe() -> None:
    frame = pd.DataFrame({"v": [1, 2, 3, "three", 5, 6] * 3, "y": [0, 1] * 9})
    with pytest.raises(DataError, match="column 'v' mixes numbers"):
        TaskSpec.from_data(frame, target="y")


def test_non_utf8_text(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes("name,y\nJosé,1\nZoë,0\n".encode("latin-1"))
    with pytest.raises(
        DataError, match=r"not valid UTF-8 text: byte 0xe9 at offset 10 \(line 2\).*encoding="
    ):
        TaskSpec.from_data(path, target="y")


def test_non_utf8_text_reads_with_the_right_encoding(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    rows = "".join(f"{n},{i % 2}\n" for i, n in enumerate(["José", "Zoë", "Ana", "Luís"] * 5))
    path.write_bytes(("name,y\n" + rows).encode("latin-1"))
    task = TaskSpec.from_data(path, target="y", encoding="latin-1")
    assert "José" in set(task.train["name"]) | set(task.holdout.features["name"])


def test_duplicated_column_names_in_csv(tmp_path: Path) -> None:
    path = tmp_path / "dupes.csv"
    path.write_text("a,b,a,y\n1,2,3,0\n4,5,6,1\n")
    with pytest.raises(DataError, match="column names must be unique, but dupes.csv repeats 'a'"):
        TaskSpec.from_data(path, target="y")


def test_duplicated_column_names_in_dataframe() -> None:
    frame = pd.DataFrame([[1, 2, 0], [3, 4, 1]], columns=["a", "a", "y"])
    with pytest.raises(DataError, match="repeats 'a'"):
        TaskSpec.from_data(frame, target="y")


def test_malformed_csv(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text('a,b,y\n1,2,0\n3,"4,1\n5,6,1,9,9\n')
    with pytest.raises(DataError, match="not a well-formed table"):
        TaskSpec.from_data(path, target="y")


def test_new_data_with_mismatched_columns(cancer: pd.DataFrame) -> None:
    task = TaskSpec.from_data(cancer, target="target")
    new = cancer.drop(columns=["target", "mean radius"]).rename(
        columns={"worst area": "worst_area"}
    )
    with pytest.raises(
        DataError, match=r"lacks 2 training column\(s\): 'mean radius', 'worst area'"
    ):
        task.check_features(new)
    with pytest.raises(DataError, match="'worst area' → 'worst_area'"):
        task.check_features(new)
    reordered = cancer[list(reversed(cancer.columns))]
    assert list(task.check_features(reordered).columns) == list(task.feature_columns)


def test_metric_that_does_not_fit_the_problem(diabetes: pd.DataFrame) -> None:
    with pytest.raises(ConfigError, match="metric 'roc_auc' does not apply to a regression task"):
        TaskSpec.from_data(diabetes, target="target", metric="auc")
    with pytest.raises(ConfigError, match="does not apply"):
        TaskSpec.from_data(diabetes, request="predict target, optimise accuracy")


def test_unknown_metric(cancer: pd.DataFrame) -> None:
    with pytest.raises(ConfigError, match="unknown metric 'banana'"):
        TaskSpec.from_data(cancer, target="target", metric="banana")


def test_regression_target_must_be_numeric() -> None:
    frame = pd.DataFrame({"a": range(30), "y": ["x", "y", "z"] * 10})
    with pytest.raises(DataError, match="a regression target must be numeric"):
        TaskSpec.from_data(frame, target="y", problem_type="regression")


def test_wrong_data_type() -> None:
    with pytest.raises(DataError, match="must be a pandas DataFrame or a file path, but got list"):
        TaskSpec.from_data([[1, 2]], target="y")  # type: ignore[arg-type]


def test_bad_holdout_fraction(cancer: pd.DataFrame) -> None:
    with pytest.raises(ConfigError, match="holdout_fraction must be in"):
        TaskSpec.from_data(cancer, target="target", holdout_fraction=1.5)


def test_csv_and_parquet_round_trip(tmp_path: Path, cancer: pd.DataFrame) -> None:
    csv_path, pq_path, tsv_path = tmp_path / "d.csv", tmp_path / "d.parquet", tmp_path / "d.tsv"
    cancer.to_csv(csv_path, index=False)
    cancer.to_parquet(pq_path, index=False)
    cancer.to_csv(tsv_path, index=False, sep="\t")
    tasks = [TaskSpec.from_data(p, target="target") for p in (csv_path, pq_path, tsv_path)]
    assert {t.name for t in tasks} == {"d"}
    assert all(t.feature_columns == tasks[0].feature_columns for t in tasks)
