"""``mlpilot ui``: the chat, live runs, the runs list and each run's report in a browser.

A FastAPI app served by uvicorn on the loopback interface. FastAPI because its
pieces are what the pages need and nothing more: JSON endpoints the chat box posts
to, a server-sent-events stream (a plain ``text/event-stream`` response) that tails a
run's ``progress.jsonl`` while it runs, and server-rendered pages (Jinja, which the
reports use too) that work without a JavaScript build step or a CDN — the pages load
nothing from outside the machine.

What the server guards:

- It answers only requests whose ``Host`` is the address it was started on or a
  loopback name (so a web page elsewhere cannot reach it through DNS rebinding), and
  the chat endpoint takes JSON only (a cross-site form post cannot send that without
  the browser asking first, and the server never says yes).
- Files are served from run directories by name: a run is found by its folder name
  under the runs directory, and only its report and plot images are served.
- One chat turn at a time: a turn that starts a run answers when the run has
  finished; meanwhile the page watches the run's progress, and a second turn is
  refused with "busy" instead of queueing behind it.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.middleware.trustedhost import TrustedHostMiddleware

from mlpilot.agents.rundir import RUN_JSON, RunDir, read_progress
from mlpilot.api import Pilot, RunResult
from mlpilot.errors import ConfigError
from mlpilot.tools.metrics import get_metric

LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
STREAM_POLL_S = 0.5  # how often the event stream looks for new progress lines
STALE_S = 20.0  # a "running" run whose run.json is older than this has stopped
STOPPED = "stopped (its process ended; mlpilot run --resume carries on)"
RUN_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
SERVED = re.compile(r"^(report\.html|report\.md|plot-[a-z0-9_-]+\.png)$")


class UiState:
    """The server's one conversation and what it is running."""

    def __init__(
        self,
        pilot: Pilot,
        *,
        default_budget: float = 120.0,
        llm: Any = None,
        llm_timeout: float = 30.0,
        resume: bool = False,
    ) -> None:
        from mlpilot.chat import ChatSession

        self.pilot = pilot
        self.runs_dir = Path(pilot.runs_dir)
        self.live: Path | None = None  # the run a chat turn is running now
        self.turn_lock = threading.Lock()
        self.session = ChatSession(
            pilot,
            default_budget=default_budget,
            run=self._run,
            llm=llm,
            llm_timeout=llm_timeout,
            resume=resume,
            name="ui",
        )

    def _run(self, request: str, data: Path, **kwargs: Any) -> RunResult:
        path = self.pilot.new_run_dir(Path(str(data)).stem or "data")
        self.live = path
        try:
            return self.pilot.run(request, data, run_dir=path, **kwargs)
        finally:
            self.live = None

    def say(self, text: str) -> dict[str, Any] | None:
        """The turn's reply, or None when another turn is still running."""
        if not self.turn_lock.acquire(blocking=False):
            return None
        try:
            before = list(self.session.state.runs)
            reply = self.session.say(text)
            runs = self.session.state.runs
            started = Path(runs[-1]).name if runs and runs != before else None
            return {"reply": reply, "run": started, "by": self.session.chosen_by}
        finally:
            self.turn_lock.release()

    def find(self, name: str) -> RunDir:
        """The run directory called ``name`` under the runs directory, or ConfigError."""
        path = self.runs_dir / name
        if not RUN_NAME.match(name) or not (path / RUN_JSON).is_file():
            raise ConfigError(f"no run {name!r}")
        return RunDir(path)


def _pages() -> Environment:
    return Environment(
        loader=PackageLoader("mlpilot.ui", "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )


def create_app(state: UiState, *, host: str = "127.0.0.1") -> FastAPI:
    """The web app over ``state`` (served by :func:`serve`; tests mount it directly)."""
    from mlpilot.runs import compare, list_runs

    pages = _pages()
    app = FastAPI(title="mlpilot", docs_url=None, redoc_url=None, openapi_url=None)
    hosts = sorted({*LOOPBACK, host.strip("[]"), host})
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=hosts)
    static = Path(__file__).parent / "static"
    app.mount("/static", StaticFiles(directory=static), name="static")

    def page(template: str, **values: Any) -> HTMLResponse:
        return HTMLResponse(pages.get_template(template).render(**values))

    def run_or_404(name: str) -> RunDir:
        try:
            return state.find(name)
        except ConfigError as e:
            raise HTTPException(404, str(e)) from e

    @app.get("/", response_class=HTMLResponse)
    def chat_page() -> HTMLResponse:
        return page("chat.html", active="chat", turns=state.session.state.turns)

    @app.get("/api/chat")
    def chat_state() -> dict[str, Any]:
        turns = [{"you": a, "mlpilot": b} for a, b in state.session.state.turns]
        live = state.live.name if state.live is not None else None
        return {"turns": turns, "busy": state.turn_lock.locked(), "live": live}

    @app.post("/api/chat")
    async def chat_turn(request: Request) -> JSONResponse:
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            raise HTTPException(415, 'send JSON: {"text": "..."}')
        try:
            body = await request.json()
            text = str(body["text"])
        except (ValueError, KeyError, TypeError) as e:
            raise HTTPException(400, 'send JSON: {"text": "..."}') from e
        try:
            answer = await asyncio.to_thread(state.say, text)
        except Exception as e:  # a bug must reach the page as words, not a bare 500
            return JSONResponse({"error": f"that failed: {type(e).__name__}: {e}"}, 500)
        if answer is None:
            return JSONResponse({"error": "busy: the last request is still running"}, 409)
        return JSONResponse(answer)

    @app.get("/api/live")
    def live() -> dict[str, Any]:
        return {"run": state.live.name if state.live is not None else None}

    @app.get("/runs", response_class=HTMLResponse)
    def runs_page() -> HTMLResponse:
        found = list_runs(state.runs_dir) if state.runs_dir.is_dir() else []
        return page("runs.html", active="runs", runs=list(reversed(found)))

    @app.get("/compare", response_class=HTMLResponse)
    def compare_page(a: str, b: str) -> HTMLResponse:
        from mlpilot.runs import RunInfo

        ra, rb = run_or_404(a), run_or_404(b)
        rows = compare(RunInfo(ra.path, ra.meta()), RunInfo(rb.path, rb.meta()))
        return page("compare.html", active="runs", a=a, b=b, rows=rows)

    @app.get("/runs/{name}", response_class=HTMLResponse)
    def run_page(name: str) -> HTMLResponse:
        run = run_or_404(name)
        meta = run.meta()
        from mlpilot.prompts.chat_actions import PLOTS

        plots = [
            (p.name, PLOTS.get(p.stem.removeprefix("plot-"), p.stem).capitalize())
            for p in sorted(run.path.glob("plot-*.png"))
        ]
        return page(
            "run.html",
            active="runs",
            name=name,
            meta=meta,
            plots=plots,
            has_report=run.path.joinpath("report.html").is_file(),
            storage=run.storage_url,
        )

    @app.get("/runs/{name}/files/{file}")
    def run_file(name: str, file: str) -> FileResponse:
        run = run_or_404(name)
        path = run.path / file
        if not SERVED.match(file) or not path.is_file():
            raise HTTPException(404, f"run {name} has no file {file!r} to show")
        return FileResponse(path)

    @app.get("/api/runs/{name}/events")
    async def events(name: str) -> StreamingResponse:
        run = run_or_404(name)
        return StreamingResponse(
            _stream(run),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )

    return app


async def _stream(run: RunDir) -> AsyncIterator[str]:
    """Server-sent events: the run's facts, then every progress event so far and each
    new one as it is written, then ``done`` with the outcome once the run has ended."""
    meta = run.meta()
    try:
        greater = get_metric(meta.metric).greater_is_better
    except ConfigError:
        greater = True
    head = {
        "name": run.path.name,
        "metric": meta.metric,
        "greater_is_better": greater,
        "budget": meta.time_budget,
    }
    yield _sse("meta", head)
    offset = 0
    while True:
        found, offset = read_progress(run.progress_path, offset)
        for event in found:
            yield _sse("progress", event)
        meta = run.meta()
        if meta.status == "running" and _stale(run):
            yield _sse("done", {**_outcome(meta), "status": STOPPED})
            return
        if meta.status != "running":
            found, offset = read_progress(run.progress_path, offset)
            for event in found:
                yield _sse("progress", event)
            yield _sse("done", _outcome(meta))
            return
        yield ": waiting\n\n"  # a comment line: keeps proxies and the browser patient
        await asyncio.sleep(STREAM_POLL_S)


def _stale(run: RunDir) -> bool:
    """Whether a run marked running has stopped: a live run saves its spent time every
    second, so a run.json untouched for ``STALE_S`` belongs to a process that died."""
    try:
        return time.time() - (run.path / RUN_JSON).stat().st_mtime > STALE_S
    except OSError:
        return True


def _outcome(meta: Any) -> dict[str, Any]:
    return {
        "status": meta.status,
        "holdout_score": meta.holdout_score,
        "best_family": meta.best_family,
        "best_score": meta.best_score,
        "spent_s": meta.spent_s,
    }


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, default=str)}\n\n"


def check_host(host: str, allow_remote: bool) -> None:
    """Refuses a non-loopback address unless the user asked for one in so many words:
    the UI starts runs on files of this machine for whoever can reach it."""
    if host.strip("[]") in {h.strip("[]") for h in LOOPBACK} or allow_remote:
        return
    raise ConfigError(
        f"mlpilot ui serves on the loopback interface only (127.0.0.1); {host!r} would let "
        "other machines start runs on this one's files. Pass --allow-remote to do it anyway."
    )


def serve(
    state: UiState,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    allow_remote: bool = False,
    ready: threading.Event | None = None,
) -> None:
    """Serves the UI until interrupted (blocking); ``ready`` is set once it listens."""
    import uvicorn

    check_host(host, allow_remote)
    config = uvicorn.Config(
        create_app(state, host=host), host=host, port=port, log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    if ready is not None:

        def mark() -> None:
            while not server.started and not server.should_exit:
                time.sleep(0.05)
            ready.set()

        threading.Thread(target=mark, daemon=True).start()
    server.run()
