"""``tierflow learn``: the SLM learns from the LLM's verified decisions (see
``tierflow.learning.learn``); this module parses options and prints."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from tierflow.cli.support import JsonOption, emit_json, err, out, settings
from tierflow.errors import ConfigError, TaskInputError

if TYPE_CHECKING:
    from tierflow.learning.learn import Dataset, LearnOptions, LearnOutcome

__all__ = ["learn_command"]

DROP_WORDS = {
    "local_only": "local-only run",
    "redacted": "private values replaced (--include-private uses the SLM's own prompt)",
    "failed_run": "run did not succeed",
    "error": "failed or rejected",
    "no_output": "empty output",
    "malformed": "malformed messages",
    "judge": "a judge's call",
    "unconfirmed": "SLM output nothing confirmed",
    "duplicate": "duplicate",
}


def learn_command(
    node: Annotated[
        list[str],
        typer.Option("--node", metavar="NODE", help="Only this node's lessons; repeat for several."),
    ] = [],  # noqa: B006
    from_file: Annotated[
        Path | None,
        typer.Option(
            "--from",
            metavar="FILE",
            help="Lessons from a JSON-lines file (chat lines as `tierflow export distill` writes) "
            "instead of the stored runs.",
        ),
    ] = None,
    from_runs: Annotated[
        bool, typer.Option("--from-runs", help="Lessons from the stored runs (the default).")
    ] = False,
    since: Annotated[
        str | None, typer.Option(metavar="DATE", help="Only runs started at or after this ISO date (UTC).")
    ] = None,
    include_private: Annotated[
        bool,
        typer.Option(
            "--include-private",
            help="Also learn from calls whose private values were redacted for the LLM (from the "
            "SLM's own prompt; training stays on this machine).",
        ),
    ] = False,
    max_minutes: Annotated[
        float,
        typer.Option("--max-minutes", min=0.1, help="Stop training after this long (it can go on later)."),
    ] = 60.0,
    max_steps: Annotated[
        int, typer.Option("--max-steps", min=1, help="At most this many lessons trained on.")
    ] = 400,
    learning_rate: Annotated[
        float,
        typer.Option("--learning-rate", min=1e-6, max=1e-2, help="The adapter's learning rate."),
    ] = 1e-4,
    held_out: Annotated[
        float,
        typer.Option("--held-out", min=0.05, max=0.9, help="The share of runs kept for the comparison."),
    ] = 0.2,
    margin: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="The gain on held-out decisions a promotion asks for.")
    ] = 0.05,
    min_held_out: Annotated[
        int, typer.Option("--min-held-out", min=1, help="The fewest held-out decisions a promotion rests on.")
    ] = 20,
    name: Annotated[str | None, typer.Option(help="The adapter's name (default: lora-DATE-TIME).")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only show what would be learned from, and what was left out.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Train a LoRA adapter on the SLM from the LLM's decisions and the SLM outputs a tool, a
    check or a shadow label confirmed; measure it against the base SLM on held-out decisions;
    make it the SLM's adapter only if it is better by --margin. Needs tierflow's train extra."""
    from tierflow.learning.learn import LearnOptions, gather
    from tierflow.learning.train import TrainOptions
    from tierflow.memory.distill import parse_since
    from tierflow.memory.traces import TraceStore

    if from_file is not None and from_runs:
        raise TaskInputError("--from and --from-runs name two sources", hint="Give one of them.")
    try:
        moment = parse_since(since) if since is not None else None
    except ConfigError as exc:
        raise TaskInputError(exc.message, hint=exc.hint) from None
    if from_file is not None and not from_file.is_file():
        raise TaskInputError(f"{from_file} is not a file", hint="Give a JSON-lines file of lessons.")
    options = LearnOptions(
        nodes=tuple(node),
        since=moment,
        include_private=include_private,
        from_file=from_file,
        held_out=held_out,
        margin=margin,
        min_held_out=min_held_out,
        name=name,
        train=TrainOptions(max_steps=max_steps, max_minutes=max_minutes, learning_rate=learning_rate),
    )
    conf = settings()
    if conf.slm_base_url and not dry_run:
        raise TaskInputError(
            "tierflow learn trains an adapter on the SLM's GGUF file, and the SLM is set to a server "
            "(TIERFLOW_SLM or TIERFLOW_SLM_BASE_URL)",
            hint="Run it with those unset and TIERFLOW_SLM_MODEL naming the file; `tierflow serve-slm` "
            "then serves the SLM with the promoted adapter.",
        )
    store = None if from_file is not None else TraceStore.from_url(conf.resolved_database_url())
    try:
        dataset = gather(store, options)
    finally:
        if store is not None:
            store.engine.dispose()
    if dry_run:
        if as_json:
            emit_json(dataset.to_json())
        else:
            _print_dataset(dataset)
        return
    dataset.check_trainable()
    outcome = _train(dataset, options, as_json)
    if as_json:
        emit_json(outcome.to_json())
    else:
        _print_outcome(outcome)
    if outcome.training is not None and outcome.training.ended == "interrupted":
        raise typer.Exit(130)


def _train(dataset: Dataset, options: LearnOptions, as_json: bool) -> LearnOutcome:
    from tierflow.agents.slm import LlamaCppModel
    from tierflow.app import adapter_store, model_file, slm_name
    from tierflow.cli.render import ProgressDisplay
    from tierflow.learning.learn import learn
    from tierflow.optional import require

    require(
        "torch", "transformers", "peft", "gguf", "safetensors", purpose="tierflow learn (training an adapter)"
    )
    require("llama_cpp", purpose="tierflow learn (measuring the adapter on the SLM)")
    conf = settings()
    if not as_json:
        _print_dataset(dataset)
    with ProgressDisplay(err) as progress:
        base = model_file(conf, conf.slm_model, "TIERFLOW_SLM_MODEL", progress)

        def slm(lora: Path | None) -> LlamaCppModel:
            return LlamaCppModel(
                base, name=slm_name(conf), n_ctx=conf.slm_n_ctx, n_threads=conf.slm_threads, lora_path=lora
            )

        return learn(
            dataset,
            options,
            base_gguf=base,
            base_model=conf.slm_model,
            adapters=adapter_store(conf),
            work_root=conf.resolved_data_dir() / "learn",
            slm=slm,
            on_progress=progress,
        )


def _print_dataset(dataset: Dataset) -> None:
    summary = dataset.summary
    kept = ", ".join(f"{count} {source}" for source, count in sorted(summary.kept.items())) or "none"
    out.print(f"lessons from {summary.runs} runs: {kept}", markup=False)
    out.print(
        f"  {len(dataset.train)} to train on, {len(dataset.held_out)} held out "
        f"({dataset.comparable_held_out} choices and extractions to compare on)",
        markup=False,
    )
    for node, count in sorted(summary.by_node.items()):
        out.print(f"  {node}: {count}", markup=False)
    if summary.dropped:
        dropped = ", ".join(
            f"{count} {DROP_WORDS.get(reason, reason)}" for reason, count in summary.dropped.most_common()
        )
        out.print(f"left out: {dropped}", markup=False)


def _print_outcome(outcome: LearnOutcome) -> None:
    training = outcome.training
    if training is None:
        return
    if training.ended == "interrupted":
        err.print(
            f"[yellow]interrupted after {training.steps} of {training.planned} steps; the checkpoint is "
            "kept: the same command goes on from it[/]"
        )
        return
    limit = (
        " (stopped at --max-minutes; the same command trains on)" if training.ended == "time_limit" else ""
    )
    out.print(
        f"trained {training.steps} of {training.planned} steps in {training.seconds / 60:.1f} min on the "
        f"{training.device}, peak memory {training.peak_memory_mb:,.0f} MiB{limit}",
        markup=False,
    )
    if training.left_out_too_long:
        out.print(
            f"  {training.left_out_too_long} lessons longer than the sequence limit were left out",
            markup=False,
        )
    card = outcome.card
    if card is None:
        return
    if outcome.promoted:
        out.print(f"[green]promoted[/]: the SLM loads [bold]{escape(card.name)}[/] from the next run on")
    else:
        out.print(f"[yellow]not promoted[/]: {escape(card.name)} is kept but not used")
    out.print(f"  {escape(outcome.verdict)}")
    if not outcome.promoted:
        out.print(f"  [dim]tierflow adapters use {escape(card.name)} --force uses it anyway[/]")
    else:
        from tierflow.app import slm_name
        from tierflow.learning.learn import stale_scorers

        conf = settings()
        stale = stale_scorers(conf.resolved_data_dir() / "scorers", slm_name(conf))
        if stale:
            nodes = escape(", ".join(stale))
            out.print(
                f"  [yellow]{len(stale)} calibrated nodes were fitted on the base SLM ({nodes}): they "
                "judge the adapted SLM by their strictest threshold until `tierflow calibrate "
                "--from-runs` refits them[/]"
            )
