"""``tierflow run`` (a task through the task graph, or your own graph) and ``tierflow resume``."""

from __future__ import annotations

import json
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from tierflow.cli.render import ProgressPrinter
from tierflow.cli.support import (
    JsonOption,
    PolicyOption,
    err,
    parse_tiers,
    progress_display,
    report_run,
    settings,
)
from tierflow.errors import TaskInputError
from tierflow.settings import Settings, TierPolicy

if TYPE_CHECKING:
    from tierflow.agents.budget import Budget
    from tierflow.app import App
    from tierflow.graphs.runner import RunResult
    from tierflow.graphs.running import GraphResult
    from tierflow.records import RunTrace

__all__ = ["run_task", "resume"]


@dataclass(frozen=True)
class _RunOptions:
    """What ``tierflow run`` applies to either kind of run."""

    policy: str
    tiers: list[str]
    workspace: Path | None
    local_only: bool
    redact: bool
    max_llm_tokens: int | None
    max_cost: float | None

    def read_settings(self) -> Settings:
        return settings(**({"workspace": self.workspace} if self.workspace else {}))

    def tier_policy(self) -> TierPolicy:
        return parse_tiers(self.policy, self.tiers)

    def budget(self) -> Budget:
        from tierflow.agents.budget import Budget

        return Budget(max_llm_tokens=self.max_llm_tokens, max_cost_usd=self.max_cost)


def run_task(
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
    if (graph is None) == (task is None):
        raise TaskInputError(
            "give a TASK, or --graph MODULE:ATTR with --input",
            hint='e.g. tierflow run "What is 2 + 2?", or tierflow run --graph pkg.mod:graph --input @in.json',
        )
    options = _RunOptions(policy, tier, workspace, local_only, redact, max_llm_tokens, max_cost)
    if graph is not None:
        report_run(*_run_graph(graph, input_, options), as_json)
        return
    if input_ is not None:
        raise TaskInputError("--input goes with --graph", hint="Give the task as the argument instead.")
    assert task is not None
    report_run(*_run_one_task(task, options), as_json)


def _run_one_task(task: str, options: _RunOptions) -> tuple[RunResult, RunTrace, str]:
    """The task through the task graph: the result, its trace and the answer."""
    from tierflow.graphs.runner import check_task

    if task == "-":
        task = sys.stdin.read().strip()
    check_task(task)  # before any model loads
    conf = options.read_settings()
    chosen = options.tier_policy()
    with _opened_app(conf, chosen, options.local_only) as tierflow_app:
        result = tierflow_app.runner.run(
            task,
            policy=chosen,
            on_event=ProgressPrinter(err),
            budget=options.budget(),
            local_only=options.local_only,
            redact=options.redact,
        )
        return result, tierflow_app.store.get_run(result.run_id), result.answer or ""


def _run_graph(reference: str, text: str | None, options: _RunOptions) -> tuple[GraphResult, RunTrace, str]:
    """The graph ``MODULE:ATTR`` on the ``--input``: the result, its trace and the final state
    as JSON."""
    from tierflow.graphs.introspect import check_policy

    loaded, data = _load_graph_input(reference, text)
    conf = options.read_settings()
    chosen = options.tier_policy()
    check_policy(loaded, chosen)  # before any model loads
    with _opened_app(conf, chosen, options.local_only) as tierflow_app:
        result = tierflow_app.run_graph(
            loaded,
            data or {},
            policy=chosen,
            name=reference,
            on_event=ProgressPrinter(err),
            budget=options.budget(),
            local_only=options.local_only,
            redact=options.redact,
        )
        return result, tierflow_app.store.get_run(result.run_id), _state_text(result.state)


@contextmanager
def _opened_app(conf: Settings, chosen: TierPolicy, local_only: bool) -> Iterator[App]:
    """The app, with the SLM loaded first when the run will use it."""
    from tierflow.app import App

    with App(conf, on_progress=progress_display()) as tierflow_app:
        if local_only or "slm" in chosen.tiers_used():
            with err.status("loading the SLM …"):
                tierflow_app.tiers.load("slm")
        yield tierflow_app


def _load_graph_input(reference: str, text: str | None) -> tuple[Any, dict[str, Any]]:
    from tierflow.graphs.introspect import check_input, load_graph

    loaded = load_graph(reference)
    if text is None:
        raise TaskInputError("--graph needs --input", hint="Give the input as JSON, or @FILE.")
    source = "--input"
    if text.startswith("@"):
        path = Path(text[1:]).expanduser()
        source = str(path)
        text = _input_file(path)
    if len(text) > MAX_INPUT_BYTES:
        raise TaskInputError(
            f"{source} is {len(text):,} characters, over the {MAX_INPUT_BYTES:,} a graph input may be",
            hint="Pass large documents as files the graph reads, not inside its input.",
        )
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TaskInputError(
            f"{source} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}",
            hint='Give a JSON object, e.g. --input \'{"text": "..."}\'',
        ) from None
    except RecursionError:
        data = None  # nested past what the reader follows: refused below
    if data is None or _depth(data) > MAX_INPUT_DEPTH:
        raise TaskInputError(
            f"{source} nests deeper than {MAX_INPUT_DEPTH} levels", hint="Give a flatter JSON object."
        )
    check_input(loaded, data)
    return loaded, data


MAX_INPUT_BYTES = 10 * 2**20
"""The most a graph's ``--input`` may be (inline or ``@FILE``): 10 MiB."""
MAX_INPUT_DEPTH = 64
"""The deepest nesting of arrays and objects a graph's ``--input`` may have."""


def _input_file(path: Path) -> str:
    """An ``@FILE`` input: a regular UTF-8 file of at most ``MAX_INPUT_BYTES`` (a device, a
    FIFO or a folder is refused before anything is read)."""
    hint = "Give a UTF-8 JSON file."
    try:
        info = path.stat()
    except OSError as exc:
        raise TaskInputError(f"cannot read {path}: {exc.strerror or exc}", hint=hint) from None
    if not stat.S_ISREG(info.st_mode):
        raise TaskInputError(f"cannot read {path}: not a regular file", hint=hint)
    if info.st_size > MAX_INPUT_BYTES:
        raise TaskInputError(
            f"{path} is {info.st_size:,} bytes, over the {MAX_INPUT_BYTES:,} a graph input may be",
            hint="Pass large documents as files the graph reads, not inside its input.",
        )
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_INPUT_BYTES + 1)
        if len(data) > MAX_INPUT_BYTES:  # it grew while being read
            raise TaskInputError(f"{path} is over the {MAX_INPUT_BYTES:,} bytes a graph input may be")
        return data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TaskInputError(f"cannot read {path}: {exc}", hint=hint) from None


def _depth(value: Any) -> int:
    """How deep arrays and objects nest in a JSON value (without recursion)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if level <= MAX_INPUT_DEPTH:
                stack.extend(
                    (child, level + 1) for child in (item.values() if isinstance(item, dict) else item)
                )
    return deepest


def _state_text(state: dict[str, Any]) -> str:
    from pydantic_core import to_jsonable_python

    return json.dumps(to_jsonable_python(state, fallback=str), ensure_ascii=False, indent=2)


def resume(
    run_id: Annotated[str, typer.Argument(help="The stopped run (any unique prefix of its id).")],
    as_json: JsonOption = False,
) -> None:
    """Continue an interrupted or failed task run from its last checkpoint: finished steps
    and tool calls are not run again; the policy, privacy options and budget are the run's."""
    from tierflow.app import App

    with App(settings(), on_progress=progress_display()) as tierflow_app:
        result = tierflow_app.runner.resume(run_id, on_event=ProgressPrinter(err))
        trace = tierflow_app.store.get_run(result.run_id)
    report_run(result, trace, result.answer or "", as_json)
