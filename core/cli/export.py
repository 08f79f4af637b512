"""``tierflow export ...``: stored runs as data for other tools (the work is in
``tierflow.memory.distill``; this module parses and prints)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from tierflow.cli.support import JsonOption, emit_json, out, settings
from tierflow.errors import ConfigError, TaskInputError, TierflowError

if TYPE_CHECKING:
    from tierflow.memory.distill import DistillSummary

__all__ = ["export_app"]

export_app = typer.Typer(no_args_is_help=True, help="Export stored runs as data for other tools.")

SKIP_WORDS = {
    "local_only": "local-only run",
    "failed_run": "run did not succeed",
    "error": "failed or rejected",
    "no_output": "empty output",
    "malformed": "malformed messages",
    "duplicate": "duplicate",
}


@export_app.command("distill")
def export_distill_command(
    out_path: Annotated[Path, typer.Option("--out", metavar="FILE", help="The JSON-lines file to write.")],
    node: Annotated[
        list[str], typer.Option("--node", metavar="NODE", help="Only this node's calls; repeat for several.")
    ] = [],  # noqa: B006
    since: Annotated[
        str | None,
        typer.Option(metavar="DATE", help="Only runs started at or after this ISO date or time (UTC)."),
    ] = None,
    run: Annotated[
        list[str],
        typer.Option("--run", metavar="RUN_ID", help="Only this run (id, prefix or 'last'); repeat."),
    ] = [],  # noqa: B006
    include_failed_runs: Annotated[
        bool, typer.Option(help="Also export from runs that did not succeed.")
    ] = False,
    metadata: Annotated[
        bool, typer.Option(help='A metadata object on each line; --no-metadata: pure {"messages": [...]}.')
    ] = True,
    force: Annotated[bool, typer.Option(help="Replace --out if it exists.")] = False,
    as_json: JsonOption = False,
) -> None:
    """The LLM's accepted answers from stored runs, as OpenAI chat fine-tuning lines: data to
    fine-tune your own SLM on your own traffic."""
    from tierflow.memory.distill import export_distill, parse_since
    from tierflow.memory.traces import TraceStore

    try:
        moment = parse_since(since) if since is not None else None
    except ConfigError as exc:  # a bad option value: a usage error, exit status 2
        raise TaskInputError(exc.message, hint=exc.hint) from None
    store = TraceStore.from_url(settings().resolved_database_url())
    try:
        summary = export_distill(
            store,
            out_path,
            nodes=node,
            since=moment,
            run_ids=run,
            include_failed_runs=include_failed_runs,
            metadata=metadata,
            force=force,
        )
    finally:
        store.engine.dispose()
    if as_json:
        emit_json(summary.to_json())
    elif summary.path is not None:
        _print_summary(summary)
    if summary.path is None:
        filters = [*([f"--since {since}"] if since else []), *(f"--run {r}" for r in run)]
        raise _nothing_exported(summary, filters=" ".join(filters), nodes=node)


def _print_summary(summary: DistillSummary) -> None:
    redacted = f" ({summary.redacted} with redacted values)" if summary.redacted else ""
    out.print(
        f"exported {summary.exported} LLM calls from {summary.runs} runs to {summary.path}{redacted}",
        markup=False,
    )
    width = max(len(name) for name in summary.by_node)
    for name, count in sorted(summary.by_node.items()):
        out.print(f"  {name:<{width}}  {count}", markup=False)
    if summary.skipped:
        out.print(f"skipped {sum(summary.skipped.values())} LLM calls: {_reasons(summary)}", markup=False)


def _reasons(summary: DistillSummary) -> str:
    return ", ".join(f"{count} {SKIP_WORDS[reason]}" for reason, count in summary.skipped.most_common())


def _nothing_exported(summary: DistillSummary, *, filters: str, nodes: list[str]) -> TierflowError:
    """Why nothing was written, and what to change."""
    if summary.runs == 0:
        if filters:
            return TierflowError(
                f"no runs match {filters}", hint="`tierflow runs list` shows the stored runs."
            )
        return TierflowError(
            "no runs stored yet: nothing to export",
            hint='Run some tasks first, e.g. tierflow run "Plan my week".',
        )
    if not summary.skipped:
        if nodes and summary.llm_nodes:
            return TierflowError(
                f"no LLM calls of node {', '.join(nodes)} in {summary.runs} runs",
                hint=f"Nodes with LLM calls: {', '.join(sorted(summary.llm_nodes))}.",
            )
        return TierflowError(
            f"the {summary.runs} runs hold no LLM calls: nothing to export",
            hint="Only the LLM's answers are exported; steps served by the SLM have none.",
        )
    hint = (
        "Add --include-failed-runs to export from runs that did not succeed."
        if "failed_run" in summary.skipped
        else "`tierflow runs show RUN --full` shows the calls and why they were skipped."
    )
    return TierflowError(f"nothing to export: every LLM call was skipped ({_reasons(summary)})", hint=hint)
