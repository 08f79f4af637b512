"""What every ``tierflow`` command shares: the consoles, settings read once, the error exit,
JSON output, tier-policy parsing, model-download progress and the report of a finished run."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated, Any, Literal, NoReturn, TextIO, cast

import typer
from rich.console import Console
from rich.markup import escape
from tierflow.cli.render import ProgressDisplay, stats_line
from tierflow.errors import TaskInputError, TierflowError
from tierflow.records import RunStatus
from tierflow.secrets import scrub, scrub_value
from tierflow.settings import (
    POLICY_PRESETS,
    Settings,
    TierChoice,
    TierPolicy,
    load_settings,
    unknown_env,
)

if TYPE_CHECKING:
    from tierflow.graphs.runner import RunResult
    from tierflow.graphs.running import GraphResult
    from tierflow.records import RunTrace

__all__ = [
    "out",
    "err",
    "state",
    "JsonOption",
    "PolicyOption",
    "StatusOption",
    "fail",
    "settings",
    "emit_json",
    "parse_tiers",
    "progress_display",
    "report_run",
    "remote_secret",
]


PolicyOption = Annotated[
    Literal["settings", "tiered", "slm", "llm"],
    typer.Option(help="tiered | slm | llm, or the settings' policy."),
]
StatusOption = Annotated[RunStatus | None, typer.Option(help="Only runs with this status.")]


class _Scrubbed:
    """A text stream that scrubs secrets from everything written to it (the last line of
    defence: messages are scrubbed where they are made too)."""

    def __init__(self, name: str) -> None:
        self._name = name

    @property
    def _stream(self) -> TextIO:
        stream: TextIO = getattr(sys, self._name)  # looked up each time: tests swap sys.stdout
        return stream

    def write(self, text: str) -> int:
        self._stream.write(scrub(text))
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


# Piped output is read by people and scripts alike: do not squeeze it to 80 columns.
def _console(name: str) -> Console:
    stream = getattr(sys, name)
    return Console(
        file=cast(TextIO, _Scrubbed(name)),
        stderr=name == "stderr",
        highlight=False,
        soft_wrap=True,
        width=None if stream.isatty() else 160,
    )


out, err = _console("stdout"), _console("stderr")

state: dict[str, Any] = {}
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]


def fail(exc: TierflowError) -> NoReturn:
    """End the command with the error's message and hint on stderr, and its exit code. The app
    calls it for every ``TierflowError`` a command raises; commands raise, they do not call it."""
    err.print(f"[bold red]error:[/] {escape(scrub(exc.message))}", markup=True, highlight=False)
    if exc.hint:
        err.print(f"[dim]{escape(scrub(exc.hint))}[/]")
    raise typer.Exit(exc.exit_code)


def settings(**overrides: Any) -> Settings:
    if "settings" not in state or overrides:
        state["settings"] = load_settings(state.get("config_file"), **overrides)
        if not state.get("warned"):
            state["warned"] = True
            for problem in unknown_env():
                err.print(f"[yellow]warning:[/] {escape(problem)}; it is ignored.")
    result: Settings = state["settings"]
    return result


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(scrub_value(data), ensure_ascii=False, indent=2, default=str) + "\n")


def parse_tiers(preset: str, overrides: list[str]) -> TierPolicy:
    """The policy of ``--policy PRESET`` (or ``settings``) with ``--tier NODE=TIER`` overrides;
    the graph that runs checks that the nodes exist."""
    configured = settings().policy
    if preset != "settings" and preset not in POLICY_PRESETS:
        raise TaskInputError(
            f"unknown policy {preset!r}", hint=f"Use one of: settings, {', '.join(POLICY_PRESETS)}."
        )
    policy = configured if preset == "settings" else configured.as_preset(preset)
    values: dict[str, TierChoice] = {}
    for item in overrides:
        node, sep, tier = item.partition("=")
        if not sep or not node or tier not in POLICY_PRESETS:
            raise TaskInputError(
                f"--tier {item!r} is not NODE=TIER",
                hint="TIER is one of slm, llm, tiered; NODE is a node of the graph (e.g. answer).",
            )
        values[node] = tier
    return policy.with_overrides(values)


def progress_display() -> ProgressDisplay:
    """The progress display on stderr (model downloads, documents added, ...)."""
    return ProgressDisplay(err)


def report_run(result: RunResult | GraphResult, trace: RunTrace, answer: str, as_json: bool) -> None:
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


_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def remote_secret(address: str, remote: bool, given: str | None, *, what: str, needs: str) -> str:
    """The secret every client of ``what`` served on ``address`` must give: none on loopback;
    otherwise the one ``given`` or a random one, and only with ``--remote`` (``needs`` says
    who then gives which secret)."""
    import secrets

    if address in _LOOPBACK:
        return ""
    if not remote:
        raise TaskInputError(
            f"{address} would let other machines reach {what}",
            hint=f"Add --remote to allow it ({needs}), or leave --host out to stay on 127.0.0.1.",
        )
    return given or secrets.token_urlsafe(24)
