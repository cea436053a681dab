"""The run report's plots, drawn with matplotlib (the project's one plotting library,
as in the audit's summary) into PNG files in the run directory.

Each plot takes plain numbers the report step gathered on the host (verified trials,
the scored model's predictions on the holdout rows, the ensemble's weights, the
LLM ledger, the feature step's records). A plot that cannot be drawn is left out
with the reason, never failing the report.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

PLOT_DPI = 100
SIZE = (6.4, 3.6)
PERMUTATION_ROWS = 2000  # most holdout rows the permutation importance shuffles
PERMUTATION_COLUMNS = 25
PERMUTATION_SECONDS = 3.0  # stop shuffling further columns after this long


@dataclass(frozen=True)
class Plot:
    """One drawn plot: its file in the run directory and what it shows."""

    file: str
    title: str

    def data_uri(self, run_dir: Path) -> str:
        """The PNG inlined, so report.html opens offline without its folder."""
        raw = (run_dir / self.file).read_bytes()
        return "data:image/png;base64," + base64.b64encode(raw).decode()


@dataclass
class PlotInputs:
    """What the plots need, gathered by the report step."""

    metric: str  # the metric's display name
    greater_is_better: bool
    problem: str  # "binary", "multiclass" or "regression"
    trials: list[tuple[str, float, float]] = field(default_factory=list)  # family, t, cv
    importances: dict[str, dict[str, float]] = field(default_factory=dict)  # family: param: w
    y_true: np.ndarray | None = None  # the holdout's labels or values
    predicted: np.ndarray | None = None  # the scored model's probabilities or values
    classes: list[Any] | None = None
    feature_drops: list[tuple[str, float]] = field(default_factory=list)  # column, drop
    ensemble: dict[str, float] = field(default_factory=dict)  # member: weight
    llm_seconds: dict[str, float] = field(default_factory=dict)  # role: seconds
    feature_gains: list[tuple[str, float, float, str]] = field(default_factory=list)


def draw_all(run_dir: Path, data: PlotInputs) -> tuple[list[Plot], list[str]]:
    """Draws every plot the data allows into ``run_dir``; returns the plots and, for
    those that could not be drawn, why."""
    import matplotlib

    matplotlib.use("Agg")
    drawers: list[tuple[str, str, Callable[[Any, PlotInputs], bool]]] = [
        ("plot-history.png", "Optimisation history per family", _history),
        ("plot-params.png", "Parameter importances per family (fANOVA)", _params),
        ("plot-roc.png", "Holdout ROC curve", _roc),
        ("plot-pr.png", "Holdout precision-recall curve", _pr),
        ("plot-confusion.png", "Holdout confusion matrix", _confusion),
        ("plot-pred-actual.png", "Holdout: predicted vs actual", _pred_actual),
        ("plot-residuals.png", "Holdout residuals", _residuals),
        ("plot-features.png", "Feature importances (holdout, permutation)", _features),
        ("plot-ensemble.png", "Ensemble weights", _ensemble),
        ("plot-llm.png", "LLM time per role", _llm),
        ("plot-feature-gains.png", "Engineered features: measured gains", _gains),
    ]
    import matplotlib.pyplot as plt

    plots, problems = [], []
    for file, title, draw in drawers:
        fig, ax = plt.subplots(figsize=SIZE)
        try:
            if draw(ax, data):
                ax.set_title(title, fontsize=10)
                fig.tight_layout()
                fig.savefig(run_dir / file, dpi=PLOT_DPI)
                plots.append(Plot(file, title))
        except Exception as e:  # a plot is never worth a failed report
            problems.append(f"{title}: {type(e).__name__}: {e}"[:200])
        finally:
            plt.close(fig)
    return plots, problems


# -- one function per plot: True when it drew something --------------------------------


def _history(ax: Any, d: PlotInputs) -> bool:
    if not d.trials:
        return False
    families = list(dict.fromkeys(f for f, _, _ in d.trials))
    for family in families:
        xs = [i for i, (f, _, _) in enumerate(d.trials) if f == family]
        ys = [d.trials[i][2] for i in xs]
        ax.scatter(xs, ys, s=14, label=family)
    best: list[float] = []
    for _, _, v in d.trials:
        better = not best or (v > best[-1] if d.greater_is_better else v < best[-1])
        best.append(v if better else best[-1])
    ax.step(range(len(best)), best, where="post", color="black", lw=1, label="best so far")
    ax.set_xlabel("finished trial (in order)")
    ax.set_ylabel(f"CV {d.metric}")
    ax.legend(fontsize=7, ncol=2)
    return True


def _params(ax: Any, d: PlotInputs) -> bool:
    rows = [(f, p, w) for f, ws in d.importances.items() for p, w in ws.items()]
    if not rows:
        return False
    labels = [f"{f}: {p}" for f, p, _ in rows]
    y = np.arange(len(rows))
    ax.barh(y, [w for _, _, w in rows], color="tab:blue")
    ax.set_yticks(y, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("share of the CV score's variance explained")
    return True


def _binary_scores(d: PlotInputs) -> tuple[np.ndarray, np.ndarray, Any] | None:
    if d.problem != "binary" or d.y_true is None or d.predicted is None or not d.classes:
        return None
    positive = d.classes[-1]
    return (np.asarray(d.y_true) == positive).astype(int), np.asarray(d.predicted)[:, -1], positive


def _roc(ax: Any, d: PlotInputs) -> bool:
    from sklearn.metrics import auc, roc_curve

    if d.problem == "multiclass" and d.y_true is not None and d.predicted is not None:
        for k, cls in enumerate((d.classes or [])[:8]):
            fpr, tpr, _ = roc_curve(np.asarray(d.y_true) == cls, np.asarray(d.predicted)[:, k])
            ax.plot(fpr, tpr, lw=1, label=f"{cls} (AUC {auc(fpr, tpr):.3f})")
    else:
        scored = _binary_scores(d)
        if scored is None:
            return False
        y, p, positive = scored
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, lw=1.5, label=f"{positive} (AUC {auc(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(fontsize=7)
    return True


def _pr(ax: Any, d: PlotInputs) -> bool:
    from sklearn.metrics import average_precision_score, precision_recall_curve

    scored = _binary_scores(d)
    if scored is None:
        return False
    y, p, positive = scored
    precision, recall, _ = precision_recall_curve(y, p)
    ap = average_precision_score(y, p)
    ax.plot(recall, precision, lw=1.5, label=f"{positive} (average precision {ap:.3f})")
    ax.axhline(y.mean(), ls="--", color="grey", lw=0.8, label="share of positives")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.legend(fontsize=7)
    return True


def confusion_counts(y_true: Any, predicted: Any, classes: list[Any]) -> np.ndarray:
    """Rows: actual class, columns: predicted class (the most probable), in ``classes``'
    order. Labels are matched by position, never handed to scikit-learn as they are: it
    cannot tell the kind of an object array of numbers (integer labels read back as
    objects) and refuses it."""
    from sklearn.metrics import confusion_matrix

    position = {str(c): i for i, c in enumerate(classes)}
    truth = np.array([position.get(str(v), -1) for v in np.asarray(y_true)])
    guess = np.asarray(predicted).argmax(axis=1)
    known = truth >= 0
    return confusion_matrix(truth[known], guess[known], labels=list(range(len(classes))))


def _confusion(ax: Any, d: PlotInputs) -> bool:
    if d.problem == "regression" or d.y_true is None or d.predicted is None or not d.classes:
        return False
    classes = list(d.classes)
    matrix = confusion_counts(d.y_true, d.predicted, classes)
    shown = classes[:12]
    m = matrix[: len(shown), : len(shown)]
    ax.imshow(m, cmap="Blues")
    for i in range(len(shown)):
        for j in range(len(shown)):
            ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(shown)), [str(c) for c in shown], fontsize=7, rotation=45)
    ax.set_yticks(range(len(shown)), [str(c) for c in shown], fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    return True


def _regression(d: PlotInputs) -> tuple[np.ndarray, np.ndarray] | None:
    if d.problem != "regression" or d.y_true is None or d.predicted is None:
        return None
    return np.asarray(d.y_true, dtype=float), np.asarray(d.predicted, dtype=float)


def _pred_actual(ax: Any, d: PlotInputs) -> bool:
    pair = _regression(d)
    if pair is None:
        return False
    y, p = pair
    ax.scatter(y, p, s=8, alpha=0.6)
    lo, hi = float(min(y.min(), p.min())), float(max(y.max(), p.max()))
    ax.plot([lo, hi], [lo, hi], ls="--", color="grey", lw=0.8)
    ax.set_xlabel("actual")
    ax.set_ylabel("predicted")
    return True


def _residuals(ax: Any, d: PlotInputs) -> bool:
    pair = _regression(d)
    if pair is None:
        return False
    y, p = pair
    ax.scatter(p, y - p, s=8, alpha=0.6)
    ax.axhline(0, ls="--", color="grey", lw=0.8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual − predicted")
    return True


def _features(ax: Any, d: PlotInputs) -> bool:
    if not d.feature_drops:
        return False
    top = d.feature_drops[:15]
    y = np.arange(len(top))
    ax.barh(y, [v for _, v in top], color="tab:green")
    ax.set_yticks(y, [c for c, _ in top], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"drop in holdout {d.metric} when shuffled")
    return True


def _ensemble(ax: Any, d: PlotInputs) -> bool:
    if len(d.ensemble) < 2:
        return False
    names = list(d.ensemble)
    ax.barh(range(len(names)), [d.ensemble[n] for n in names], color="tab:purple")
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("weight")
    return True


def _llm(ax: Any, d: PlotInputs) -> bool:
    roles = {r: s for r, s in d.llm_seconds.items() if s > 0}
    if not roles:
        return False
    ax.barh(range(len(roles)), list(roles.values()), color="tab:orange")
    ax.set_yticks(range(len(roles)), list(roles), fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("seconds")
    return True


def _gains(ax: Any, d: PlotInputs) -> bool:
    rows = d.feature_gains[:20]
    if not rows:
        return False
    y = np.arange(len(rows))
    colours = ["tab:green" if v == "kept" else "tab:grey" for *_, v in rows]
    ax.barh(y, [g for _, g, _, _ in rows], xerr=[s for _, _, s, _ in rows], color=colours)
    ax.set_yticks(y, [f for f, *_ in rows], fontsize=6)
    ax.invert_yaxis()
    ax.axvline(0, color="black", lw=0.6)
    ax.set_xlabel(f"CV gain ({d.metric}) ± corrected standard error; green: kept")
    return True


# -- the numbers the host computes for them --------------------------------------------


def permutation_drops(
    score: Callable[[Any], float],
    X: Any,
    greater_is_better: bool,
    *,
    seed: int = 0,
    columns: Sequence[str] | None = None,
    seconds: float = PERMUTATION_SECONDS,
) -> list[tuple[str, float]]:
    """(column, how much worse the score gets when the column is shuffled), largest
    first, on at most ``PERMUTATION_ROWS`` rows and ``PERMUTATION_COLUMNS`` columns,
    stopping after ``seconds``."""
    rng = np.random.default_rng(seed)
    if len(X) > PERMUTATION_ROWS:
        X = X.iloc[rng.choice(len(X), PERMUTATION_ROWS, replace=False)]
    base = score(X)
    sign = 1.0 if greater_is_better else -1.0
    out = []
    start = time.monotonic()
    for col in list(columns or X.columns)[:PERMUTATION_COLUMNS]:
        if time.monotonic() - start > seconds:
            break
        shuffled = X.copy()
        shuffled[col] = rng.permutation(shuffled[col].to_numpy())
        out.append((str(col), sign * (base - score(shuffled))))
    return sorted(out, key=lambda item: -item[1])


def param_importances(storage: str, studies: dict[str, str]) -> dict[str, dict[str, float]]:
    """fANOVA importances of each family's study (``studies``: family → study name),
    for those with enough finished trials whose parameters varied."""
    import optuna

    out: dict[str, dict[str, float]] = {}
    for family, name in studies.items():
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            continue
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        names = {k for t in done for k in t.params}
        varied = {k for k in names if len({str(t.params.get(k)) for t in done}) > 1}
        if len(done) < 4 or not varied:
            continue
        try:
            weights = optuna.importance.get_param_importances(study)
        except (RuntimeError, ValueError):
            continue
        out[family] = {k: float(v) for k, v in list(weights.items())[:5]}
    return out


def pareto_plot(
    path: Path,
    fronts: dict[str, Sequence[tuple[float, float]]],
    *,
    xlabel: str,
    ylabel: str = "validation error",
    chosen: tuple[float, float] | None = None,
    title: str = "",
) -> Path:
    """Each method's evaluated points (faint) and its Pareto front (a step line),
    both objectives minimised; the chosen point starred. ``fronts`` maps a method
    to its (x, y) points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mlpilot.tools.pareto import front

    fig, ax = plt.subplots(figsize=SIZE)
    try:
        for i, (name, points) in enumerate(fronts.items()):
            if not points:
                continue
            color = f"C{i}"
            arr = np.asarray(points, dtype=float)
            ax.scatter(arr[:, 0], arr[:, 1], s=10, alpha=0.3, color=color)
            nd = front(arr)
            ax.step(nd[:, 0], nd[:, 1], where="post", color=color, label=f"{name} ({len(arr)})")
            ax.scatter(nd[:, 0], nd[:, 1], s=18, color=color)
        if chosen is not None:
            ax.scatter(
                [chosen[0]], [chosen[1]], marker="*", s=180, color="black", zorder=5, label="chosen"
            )
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        if title:
            ax.set_title(title, fontsize=10)
        fig.tight_layout()
        fig.savefig(path, dpi=PLOT_DPI)
    finally:
        plt.close(fig)
    return path
