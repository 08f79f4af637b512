"""``tierflow calibrate``: fit each node's escalation scorer for a graph on your own inputs
and your own model pair (see ``tierflow.graphs.calibrating``)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table
from tierflow.cli.support import JsonOption, emit_json, err, out, progress_display, settings
from tierflow.errors import TaskInputError

if TYPE_CHECKING:
    from tierflow.agents.calibration import NodeFit

__all__ = ["MaxLossOption", "SlmShareOption", "calibrate", "one_target"]

MaxLossOption = Annotated[
    float | None,
    typer.Option(
        "--max-loss",
        min=0.0,
        max=1.0,
        help="Accuracy each node's SLM outputs may lose against sending all to the LLM [default: 0.02].",
    ),
]
SlmShareOption = Annotated[
    float | None,
    typer.Option(
        "--slm-share",
        min=0.5,
        max=1.0,
        help="Instead of --max-loss: the graph's SLM share of model calls to reach, at the least "
        "estimated loss (every step calls the SLM, so 0.5 escalates all).",
    ),
]


def one_target(max_loss: float | None, slm_share: float | None) -> None:
    """A calibration is fitted for a loss or for a share, not both."""
    if max_loss is not None and slm_share is not None:
        raise TaskInputError(
            "--max-loss and --slm-share both set",
            hint="Give one: a loss to stay within, or a share to reach.",
        )


def calibrate(
    graph: Annotated[
        str,
        typer.Option(
            "--graph", help="The graph to calibrate: MODULE:ATTR, or task (the graph `tierflow run` runs)."
        ),
    ],
    inputs: Annotated[
        Path | None, typer.Option("--inputs", help="Sample inputs, one JSON object per line (JSONL).")
    ] = None,
    gold: Annotated[
        list[str] | None,
        typer.Option("--gold", help="An output key whose right value each input line carries; repeatable."),
    ] = None,
    max_loss: MaxLossOption = None,
    slm_share: SlmShareOption = None,
    from_runs: Annotated[
        bool, typer.Option("--from-runs", help="Fit on the labels stored runs gathered, without running.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Run both tiers on your sample inputs, label each SLM output right or wrong (by --gold
    values, else by agreement with the LLM), and fit per node a scorer and the threshold
    that keeps the most outputs on the SLM within --max-loss, or that reach --slm-share of
    the graph's model calls at the least loss. Resumable: the same command goes on where a
    stopped one ended. Runs of the graph then use these scorers and thresholds (a policy's
    max_loss, when set, overrides the thresholds)."""
    from tierflow.agents.calibration import fit_and_save, fitted_share

    one_target(max_loss, slm_share)
    from tierflow.app import App
    from tierflow.graphs.calibrating import check_gold_fields, collect_labels, read_inputs
    from tierflow.graphs.introspect import graph_key, load_graph
    from tierflow.graphs.runner import TASK_GRAPH

    if graph == TASK_GRAPH:  # tasks are not graph inputs: the shadow labels of its runs are
        if not from_runs or inputs is not None or gold:
            raise TaskInputError(
                "the task graph is calibrated from the labels its runs gathered",
                hint="Run tasks with TIERFLOW_SHADOW_RATE above 0, then: tierflow calibrate --graph "
                "task --from-runs.",
            )
        loaded, items, name = None, [], TASK_GRAPH
    else:
        loaded = load_graph(graph)
        gold_fields = gold or []
        check_gold_fields(loaded, gold_fields)
        if inputs is None and not from_runs:
            raise TaskInputError("nothing to calibrate on", hint="Give --inputs FILE.jsonl, or --from-runs.")
        items = read_inputs(inputs, loaded, gold_fields) if inputs is not None and not from_runs else []
        name = graph_key(loaded, graph)
    conf = settings()
    with progress_display() as progress, App(conf, on_progress=progress) as tierflow_app:
        if items:
            run, store, judge = tierflow_app.run_graph, tierflow_app.store, tierflow_app.tiers.llm
            ran = collect_labels(loaded, name, items, run, store, judge, on_progress=progress)
            err.print(f"[dim]{ran} input(s) run, {len(items) - ran} already run before[/]")
        slm, llm = tierflow_app.tiers.slm.name, tierflow_app.tiers.llm.name
        # runs of `tierflow run --graph` are named by the reference, those from Python by the name
        labels = tierflow_app.store.labels(graph=[name, graph], slm_model=slm, llm_model=llm)
    if not labels:
        raise TaskInputError(
            f"no labelled outputs of graph {name!r} for the models {slm} / {llm}",
            hint="Its steps must be kit steps (choose, extract, summarize, reason); give --inputs.",
        )
    path, fits = fit_and_save(
        labels, conf.scorers_dir(), graph=name, slm=slm, llm=llm, max_loss=max_loss, slm_share=slm_share
    )
    share = fitted_share(fits)
    if as_json:
        emit_json(
            {"graph": name, "path": str(path), "slm_share": share, "nodes": [asdict(fit) for fit in fits]}
        )
        return
    out.print(_fits_table(fits, max_loss, slm_share))
    err.print(
        f"estimated SLM share of the graph's model calls: {share:.0%}\n"
        f"scorers for {escape(name)} ({escape(slm)} / {escape(llm)}) written to {escape(str(path))}"
    )
    if conf.policy.max_loss is not None:
        err.print(
            f"[yellow]note:[/] the policy's max_loss ({conf.policy.max_loss}) overrides these thresholds "
            "in runs; unset TIERFLOW_POLICY__MAX_LOSS to use them"
        )


def _fits_table(fits: list[NodeFit], max_loss: float | None, slm_share: float | None) -> Table:
    from tierflow.agents.calibration import CALIBRATE_MAX_LOSS, METHODS

    table = Table(box=None, header_style="bold")
    columns = ("node", "kind", "labels", "SLM wrong", "score", "threshold", "kept on SLM", "est. loss (90%)")
    for column in columns:
        table.add_column(column)
    for fit in fits:
        point = fit.point
        table.add_row(
            fit.node,
            fit.kind,
            str(fit.labels),
            f"{fit.slm_wrong / fit.labels:.0%}" if fit.labels else "–",
            METHODS[fit.method],
            f"{point.threshold:.2f}",
            f"{point.slm_share:.0%}",
            f"{point.loss:+.1%} ({point.loss_low:+.1%} to {point.loss_high:+.1%})",
        )
    target = (
        f"an SLM share of at least {slm_share:.0%} of model calls"
        if slm_share is not None
        else f"a loss of at most {CALIBRATE_MAX_LOSS if max_loss is None else max_loss:.1%} against all-LLM"
    )
    table.caption = (
        f"thresholds for {target}, measured out of fold; score: the shipped prior rescaled to your labels, "
        "or refit on them, whichever predicted held-out labels better"
    )
    return table
