"""``tierflow runs list/show``: the stored runs and their traces."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from tierflow.cli.render import print_run, runs_table
from tierflow.cli.support import JsonOption, StatusOption, emit_json, err, out, settings
from tierflow.errors import TaskInputError

__all__ = ["runs_app", "parse_since"]

runs_app = typer.Typer(no_args_is_help=True, help="Inspect stored runs.")

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

    started = parse_since(since) if since else None
    runs = TraceStore.from_url(settings().resolved_database_url()).list_runs(
        limit=limit, status=status, since=started, search=search
    )
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

    trace = TraceStore.from_url(settings().resolved_database_url()).get_run(run_id)
    if as_json:
        emit_json(trace.to_json())
    else:
        print_run(out, trace, full=full)
