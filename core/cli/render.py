"""How the CLI shows runs, traces and progress (rich, on a given console)."""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter
from typing import Any

from rich.console import Console
from rich.filesize import decimal
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text
from tierflow.memory.traces import RunSummary
from tierflow.paths import printable_name
from tierflow.records import Event, RunTrace, StepFailed, StepFinished, StepStarted
from tierflow.records import Progress as ProgressReport

__all__ = ["ProgressDisplay", "ProgressPrinter", "print_run", "runs_table", "stats_line", "TIER_STYLE"]

TIER_STYLE = {"slm": "green", "llm": "magenta"}
STATUS_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "interrupted": "yellow",
    "budget_exceeded": "yellow",
    "running": "cyan",
}


def _short(text: Any, limit: int = 100) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class ProgressPrinter:
    """Turns run events into one line per step on stderr, with a spinner while a step runs."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._status: Any = None

    def __call__(self, event: Event) -> None:
        if isinstance(event, StepStarted):
            self._stop()
            self._status = self.console.status(f"{event.node} …", spinner="dots")
            self._status.start()
            return
        self._stop()
        if isinstance(event, StepFinished):
            tiers = " ".join(f"[{TIER_STYLE.get(t, 'white')}]{t}[/]" for t in event.tiers)
            padding = " " * max(0, 8 - len(" ".join(event.tiers)))  # markup takes no columns
            summary = escape(_short(event.summary or ""))
            self.console.print(f"  [bold]{event.node:<13}[/] {tiers}{padding} {summary}", highlight=False)
        elif isinstance(event, StepFailed):
            self.console.print(f"  [bold]{event.node:<13}[/] [red]failed[/] {escape(_short(event.error))}")

    def _stop(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None


def stats_line(run: RunTrace) -> str:
    stats = run.stats
    share = f"{stats.slm_share:.0%}" if stats.slm_share is not None else "–"
    seconds = f"{run.duration_ms / 1000:.1f} s" if run.duration_ms is not None else "–"
    return (
        f"{stats.model_calls} model calls, {stats.slm_calls} on the SLM ({share}), "
        f"{stats.escalations} escalated; LLM tokens {stats.llm_prompt_tokens} in / "
        f"{stats.llm_completion_tokens} out; {seconds}"
    )


def runs_table(runs: list[RunSummary]) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("run", "status", "created (UTC)", "calls", "SLM share", "LLM tokens", "time", "task"):
        table.add_column(column, no_wrap=column != "task", overflow="ellipsis")
    for run in runs:
        share = f"{run.slm_share:.0%}" if run.slm_share is not None else "–"
        seconds = f"{run.duration_ms / 1000:.1f}s" if run.duration_ms is not None else "–"
        table.add_row(
            run.id,
            Text(run.status, style=STATUS_STYLE.get(run.status, "")),
            run.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            str(run.model_calls),
            share,
            str(run.llm_prompt_tokens + run.llm_completion_tokens),
            seconds,
            Text(_short(run.task, 60)),
        )
    return table


def print_run(console: Console, run: RunTrace, *, full: bool = False) -> None:
    """The trace of one run: its steps, model calls (tier, tokens, latency, escalation), tools."""
    style = STATUS_STYLE.get(run.status, "")
    console.print(Text.assemble(("run ", "bold"), run.run_id, "  ", (run.status, style)))
    console.print(Text.assemble(("task   ", "bold"), run.task))
    if run.answer:
        console.print(Text.assemble(("answer ", "bold"), run.answer))
    if run.error:
        console.print(Text.assemble(("error  ", "bold red"), run.error))
    console.print(Text(f"models SLM {run.slm_model}, LLM {run.llm_model}; " + stats_line(run), style="dim"))
    for step in run.steps:
        head = Text.assemble(
            (f"{step.seq:>3} {step.node}", "bold"),
            (f"  {step.status}", "red" if step.status == "failed" else "dim"),
        )
        console.print(head)
        for call in step.model_calls:
            line = Text.assemble(
                "      ",
                (call.tier, TIER_STYLE.get(call.tier, "")),
                f" {call.model}  ",
                f"{call.prompt_tokens}+{call.completion_tokens} tokens  {call.latency_ms:.0f} ms",
            )
            if call.p_wrong is not None:
                line.append(f"  P(wrong) {call.p_wrong:.2f}", style="dim")
            if call.missing_signals:
                line.append(f"  no {', '.join(call.missing_signals)} from the server", style="dim")
            if call.escalated:
                line.append(f"  escalated: {call.escalation_reason}", style="yellow")
            elif call.error:
                line.append(f"  rejected: {call.error}", style="red")
            console.print(line)
            if full:
                for message in call.messages:
                    console.print(Text(f"        [{message['role']}] {message['content']}", style="dim"))
                console.print(Text(f"        [output] {call.raw_output}", style="dim"))
        for tool in step.tool_calls:
            args = json.dumps(tool.arguments, ensure_ascii=False)
            outcome = (
                Text(f"error: {tool.error}", style="red") if tool.error else Text(_short(tool.result, 200))
            )
            console.print(Text.assemble("      tool ", (tool.tool, "cyan"), f"({args}) -> ", outcome))
        if step.summary and not step.tool_calls:
            console.print(Text(f"      {_short(step.summary, 200)}", style="dim"))
        if step.error:
            console.print(Text(f"      {step.error}", style="red"))


class ProgressDisplay:
    """The CLI's one display of long work (``tierflow.records.Progress`` reports), on stderr.

    On a terminal: a bar per stage with its amount, the outcomes counted so far, the time
    elapsed and left; a failed item prints its reason above the bars. The bars start with
    the first report and stop when every stage is complete, so a model download and the
    evaluation after it each get their own. Elsewhere (a log file, CI, ``nohup``) rich would
    draw bars only at the end, so each finished item prints one plain line. Notes print as
    they come."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._live = console.is_terminal
        self._bars = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[amount]}"),
            TextColumn("{task.fields[counts]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        self._stages: dict[str, TaskID] = {}
        self._counts: dict[str, Counter[str]] = {}
        self._started = time.monotonic()

    def __enter__(self) -> ProgressDisplay:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the bars (left on screen as they are)."""
        if self._stages:
            self._bars.stop()
            for task in self._stages.values():
                self._bars.remove_task(task)
            self._stages.clear()

    def __call__(self, report: ProgressReport) -> None:
        # a file name or a reason may hold a newline or a bidirectional override: shown escaped
        report = dataclasses.replace(
            report, item=printable_name(report.item), detail=printable_name(report.detail)
        )
        if report.note:
            self._console.print(report.note, markup=False, highlight=False)
        if not (report.done or report.total or report.outcome):
            return  # a note only
        counts = self._counts.setdefault(report.stage, Counter())
        if report.outcome:
            counts[report.outcome] += 1
        counted = " · ".join(f"{outcome} {n}" for outcome, n in counts.items())
        if self._live:
            self._draw(report, counted)
        elif report.outcome:
            what = " ".join(part for part in (report.outcome, report.item) if part)
            detail = f" ({report.detail})" if report.detail else ""
            elapsed = time.monotonic() - self._started
            self._console.print(
                f"{report.stage} {_amount(report)} · {what}{detail} · {counted} · {elapsed:.0f} s",
                markup=False,
                highlight=False,
            )

    def _draw(self, report: ProgressReport, counted: str) -> None:
        if report.outcome == "failed":
            self._console.print(
                Text.assemble(("failed ", "red"), report.item, f": {report.detail}" if report.detail else "")
            )
        if not self._stages:
            self._bars.start()
            self._counts = {report.stage: self._counts[report.stage]}  # stages of before are done
        if report.stage not in self._stages:
            self._stages[report.stage] = self._bars.add_task(report.stage, amount="", counts="")
        self._bars.update(
            self._stages[report.stage],
            completed=report.done,
            total=report.total or None,
            amount=_amount(report),
            counts=counted,
        )
        if all(task.finished for task in self._bars.tasks):
            self.close()


def _amount(report: ProgressReport) -> str:
    if report.unit == "bytes":
        return f"{decimal(report.done)}/{decimal(report.total)}" if report.total else decimal(report.done)
    return f"{report.done}/{report.total}" if report.total else str(report.done)
