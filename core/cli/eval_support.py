"""What the ``tierflow eval`` commands share: their options, the store of the items' traces,
a fresh memory per policy and how results are shown."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from tierflow.cli.support import emit_json, err, out, parse_tiers, progress_display, settings
from tierflow.settings import Settings, TierPolicy

if TYPE_CHECKING:
    from tierflow.graphs.recall import Recall
    from tierflow.memory.traces import TraceStore

__all__ = [
    "EvalPolicyOption",
    "OutOption",
    "eval_store",
    "fresh_memory",
    "metrics",
    "parse_policies",
    "show_results",
]

EvalPolicyOption = Annotated[
    list[str],
    typer.Option("--policy", help="slm | llm | tiered; repeat to compare several on the same items."),
]
OutOption = Annotated[
    Path | None, typer.Option("--out", help="Results directory (default: the settings' results_dir).")
]


def eval_settings() -> Settings:
    """The user's settings as an evaluation runs with them (``evaluation_settings``)."""
    from tierflow.evals.report import evaluation_settings

    return evaluation_settings(settings())


def parse_policies(names: list[str]) -> dict[str, TierPolicy]:
    return {name: parse_tiers(name, []) for name in (names or ["tiered"])}


def eval_store(conf: Settings, traces: Path | None) -> tuple[TraceStore, Path]:
    """The store of the evaluated items' traces (``--traces``, or one in the data directory),
    and where it is."""
    from tierflow.memory.traces import TraceStore

    path = traces or conf.resolved_data_dir() / "eval-traces.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return TraceStore.from_url(f"sqlite:///{path}", secrets=conf.secrets()), path


def fresh_memory(conf: Settings, suite: str, label: str) -> Recall:
    """An empty, learning memory for one policy of an evaluation (in the data directory)."""
    import shutil

    from tierflow.app import open_recall

    directory = conf.resolved_data_dir() / "eval-memory" / f"{suite}-{label}".replace(":", "_")
    shutil.rmtree(directory, ignore_errors=True)
    return open_recall(conf.model_copy(update={"memory_dir": directory}), progress_display(), learn=True)


def metrics(data: dict[str, Any], chosen: dict[str, TierPolicy]) -> dict[str, Any]:
    return {label: data["policies"][label]["metrics"] for label in chosen}


def show_results(as_json: bool, document: Any, markdown: str, results: str | None = None) -> None:
    """With --json one JSON document on stdout, else the Markdown summary; then, on stderr,
    where the results were written."""
    if as_json:
        emit_json(document)
    else:
        out.print(markdown, markup=False)
    if results:
        err.print(f"[dim]results: {results}[/]")
