"""The ``tierflow`` command line: the app, built from one module per command group.

Settings are read once, at the entry point, and passed down. Output for people goes to
stderr (progress) and stdout (answers); ``--json`` puts exactly one JSON document on stdout.
Commands raise ``TierflowError``; the app ends the command with its message, hint and
``exit_code`` (2 for usage errors), never a traceback.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from tierflow.cli.adapters import adapters_app
from tierflow.cli.batch import jobs_app, summarize
from tierflow.cli.calibrate import calibrate
from tierflow.cli.config import show_config
from tierflow.cli.console import serve_console
from tierflow.cli.eval import eval_app
from tierflow.cli.export import export_app
from tierflow.cli.learn import learn_command
from tierflow.cli.memory import memory_app
from tierflow.cli.models import models_app
from tierflow.cli.run import resume, run_task
from tierflow.cli.runs import runs_app
from tierflow.cli.serve import serve_slm
from tierflow.cli.support import err, fail, out, state
from tierflow.errors import TierflowError
from tierflow.version import __version__
from typer.core import TyperGroup

__all__ = ["app", "main"]


class _Commands(TyperGroup):
    """The app's command group: the one place a ``TierflowError`` from any command ends it."""

    def invoke(self, ctx: Any) -> Any:  # a typer.Context; its base class is private to typer
        try:
            return super().invoke(ctx)
        except TierflowError as exc:
            fail(exc)


app = typer.Typer(
    cls=_Commands,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="tierflow: tasks routed between a local SLM and a large LLM, fully traced.",
)
app.command("summarize")(summarize)
app.command("run")(run_task)
app.command("resume")(resume)
app.command("calibrate")(calibrate)
app.command("learn")(learn_command)
app.command("config")(show_config)
app.command("ui")(serve_console)
app.command("serve-slm")(serve_slm)
app.add_typer(runs_app, name="runs")
app.add_typer(models_app, name="models")
app.add_typer(memory_app, name="memory")
app.add_typer(eval_app, name="eval")
app.add_typer(export_app, name="export")
app.add_typer(jobs_app, name="jobs")
app.add_typer(adapters_app, name="adapters")


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


def main() -> None:
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")  # before anything imports onnxruntime
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # lets runs close their trace
    try:
        app()
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]: the run so far is stored (tierflow runs list).")
        sys.exit(130)
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
