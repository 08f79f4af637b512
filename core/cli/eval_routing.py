"""``tierflow eval routing``: the escalation score on paired SLM/LLM runs of BFCL."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from tierflow.cli.eval_support import OutOption, eval_settings, eval_store, fresh_memory, show_results
from tierflow.cli.support import JsonOption, emit_json, err, progress_display, settings
from tierflow.settings import Settings

if TYPE_CHECKING:
    from tierflow.evals.bfcl import Case

__all__ = ["eval_routing", "eval_priors"]


WarmOption = Annotated[
    bool,
    typer.Option(
        "--warm-memory",
        help="With --collect: also run the SLM on the live test items with a memory of the LLM's "
        "decisions on the train and calib splits.",
    ),
]
FreshOption = Annotated[
    bool,
    typer.Option(
        "--fresh",
        help="With --collect: also run both tiers on a second draw of live items outside the "
        "routing set (reported, never trained or calibrated on).",
    ),
]
RunsOption = Annotated[
    Path | None,
    typer.Option(
        "--runs", help="The paired runs (JSON lines; default: routing/runs.jsonl in the results dir)."
    ),
]
ScorerOption = Annotated[
    Path | None,
    typer.Option(
        "--scorer",
        help="The scorer file to write or read (default: routing/escalation_scorer.json in the "
        "results dir; read: else TIERFLOW_ESCALATION_SCORER, else the shipped one).",
    ),
]


def eval_routing(
    collect: Annotated[
        bool, typer.Option("--collect", help="Run the SLM and the LLM on items not yet run.")
    ] = False,
    train: Annotated[
        bool, typer.Option("--train", help="Refit the escalation score and its thresholds.")
    ] = False,
    warm: WarmOption = False,
    fresh: FreshOption = False,
    max_loss: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="Report at this max_loss (default: the policy's).")
    ] = None,
    runs_file: RunsOption = None,
    scorer_file: ScorerOption = None,
    out_dir: OutOption = None,
    traces: Annotated[Path | None, typer.Option(help="SQLite file for the collected runs' traces.")] = None,
    as_json: JsonOption = False,
) -> None:
    """The escalation score on paired SLM/LLM runs of BFCL: AUROC per node, share/accuracy curves.
    Everything it writes goes to the results dir (or the files given), never into tierflow's
    own package: a scorer it trains is used once TIERFLOW_ESCALATION_SCORER names it."""
    from tierflow.evals.report import write_results
    from tierflow.evals.routing import routing_markdown
    from tierflow.evals.routing_data import routing_cases

    conf = eval_settings()
    paths = RoutingFiles.of(conf, runs_file, scorer_file, train=train, collect=collect)
    cases = {case.id: case for case in routing_cases()}
    if collect:
        _collect(conf, cases, paths, traces, warm=warm, fresh=fresh)
    chosen_loss = conf.policy.loss_or_default if max_loss is None else max_loss
    report = _report(conf, cases, paths, train=train, max_loss=chosen_loss, with_fresh=runs_file is None)
    markdown = routing_markdown(report)
    path = (out_dir or settings().resolved_results_dir()) / "routing.json"
    write_results(path, report, markdown)
    show_results(as_json, {k: report[k] for k in ("auroc", "groups", "thresholds")}, markdown, str(path))


@dataclass(frozen=True)
class RoutingFiles:
    """Where ``eval routing`` reads and writes: the paired runs, the fresh runs, the scorer."""

    runs: Path
    fresh: Path
    scorer: Path

    @classmethod
    def of(
        cls, conf: Settings, runs: Path | None, scorer: Path | None, *, train: bool, collect: bool
    ) -> RoutingFiles:
        """The files given, else the results dir's. Collecting there starts from copies of
        the runs shipped with tierflow (so ``--collect`` runs only what is missing); without
        a copy of its own, the shipped runs are read. A scorer is read from the results dir,
        ``escalation_scorer`` or the shipped one, whichever comes first."""
        from tierflow.agents.scoring import SCORER_FILE
        from tierflow.evals.routing_data import FRESH_FILE, RUNS_FILE

        folder = conf.resolved_results_dir() / "routing"
        files = cls(
            runs or folder / "runs.jsonl",
            folder / "fresh_runs.jsonl",
            scorer or folder / "escalation_scorer.json",
        )
        if collect:
            for ours, shipped in ((files.runs, RUNS_FILE), (files.fresh, FRESH_FILE)):
                if not ours.exists() and shipped.exists() and (runs is None or ours is files.fresh):
                    ours.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(shipped, ours)
        else:
            files = replace(
                files,
                runs=files.runs if runs or files.runs.exists() else RUNS_FILE,
                fresh=files.fresh if files.fresh.exists() else FRESH_FILE,
            )
        if scorer is None and not train and not files.scorer.exists():
            return replace(files, scorer=conf.escalation_scorer or SCORER_FILE)
        return files


def _collect(
    conf: Settings,
    cases: dict[str, Case],
    paths: RoutingFiles,
    traces: Path | None,
    *,
    warm: bool,
    fresh: bool,
) -> None:
    """Run both tiers on the routing items not yet run (and, asked for, the SLM with a warm
    memory, and both tiers on a fresh draw of live items)."""
    from tierflow.app import App
    from tierflow.cli.render import ProgressDisplay
    from tierflow.evals.routing_data import MEMORY_POLICY, collect_runs, fresh_cases, seed_memory

    runs_path = paths.runs
    store, trace_path = eval_store(conf, traces)
    with ProgressDisplay(err) as progress, App(conf, on_progress=progress) as tierflow_app:
        items, tiers = list(cases.values()), tierflow_app.tiers
        collect_runs(items, tiers, store, path=runs_path, on_progress=progress)
        if warm:
            recall = fresh_memory(conf, "routing", "warm")
            seeded = seed_memory(recall, cases, runs_path)
            recall.learn = False  # a fixed memory: test items must not teach each other
            err.print(f"[dim]memory: {seeded} LLM decisions from the train and calib splits[/]")
            collect_runs(
                items,
                tiers,
                store,
                path=runs_path,
                policies=(MEMORY_POLICY,),
                recall=recall,
                stage="warm",
                on_progress=progress,
            )
        if fresh:
            collect_runs(
                fresh_cases(),
                tiers,
                store,
                path=paths.fresh,
                split="fresh",
                stage="fresh",
                on_progress=progress,
            )
    err.print(f"[dim]runs: {runs_path} (traced in {trace_path})[/]")


def _report(
    conf: Settings,
    cases: dict[str, Case],
    paths: RoutingFiles,
    *,
    train: bool,
    max_loss: float,
    with_fresh: bool,
) -> dict[str, Any]:
    """Score the runs (refitting the scorer first with ``train``) and build the report: the
    paired runs, the warm-memory runs and, with ``with_fresh``, the fresh ones if they were collected."""
    from tierflow.agents.scoring import EscalationScorer
    from tierflow.app import load_embeddings
    from tierflow.evals.report import git_commit
    from tierflow.evals.routing import routing_report, score_runs, train_scorer
    from tierflow.evals.routing_data import MEMORY_POLICY, fresh_cases, read_runs
    from tierflow.memory.embeddings import Relevance

    runs_path, scorer_path = paths.runs, paths.scorer
    relevance = Relevance(load_embeddings(conf, progress_display()))
    if train:
        scorer, scored = train_scorer(cases, relevance, runs_path=runs_path, commit=git_commit())
        scorer.save(scorer_path)
        err.print(f"[dim]scorer: {scorer_path} (use it: TIERFLOW_ESCALATION_SCORER={scorer_path})[/]")
    else:
        scorer = EscalationScorer.load(scorer_path)
        scored = score_runs(scorer, cases, relevance, runs_path)
    warm_scored = score_runs(scorer, cases, relevance, runs_path, MEMORY_POLICY)
    fresh_scored = (
        score_runs(scorer, {case.id: case for case in fresh_cases()}, relevance, paths.fresh)
        if with_fresh and paths.fresh.exists()
        else []
    )
    memory_size = sum(1 for run in read_runs(runs_path) if run["policy"] == "llm" and run["split"] != "test")
    return routing_report(scorer, scored, max_loss, warm_scored, memory_size, fresh_scored)


def eval_priors(
    out: Annotated[
        Path | None,
        typer.Option(
            help="Where to write the priors (default: routing/step_priors.json in the results dir)."
        ),
    ] = None,
    runs_file: RunsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Fit the kit's shipped choose and extract priors on the BFCL routing runs' train split
    (grouped by source group). tierflow ships them as agents/data/step_priors.json."""
    from tierflow.agents.calibration import save_priors
    from tierflow.evals.priors import MAX_LOSS, fit_priors
    from tierflow.evals.routing_data import RUNS_FILE, read_runs, routing_cases

    cases = {case.id: case for case in routing_cases()}
    priors, fits = fit_priors(read_runs(runs_file or RUNS_FILE), cases)
    path = out or settings().resolved_results_dir() / "routing" / "step_priors.json"
    save_priors(priors, path)
    rows = [
        {
            "kind": fit.kind,
            "labels": fit.labels,
            "slm_wrong": fit.slm_wrong,
            "threshold": round(fit.point.threshold, 4),
            "slm_share": round(fit.point.slm_share, 4),
            "loss": round(fit.point.loss, 4),
        }
        for fit in fits
    ]
    if as_json:
        emit_json({"path": str(path), "priors": rows})
        return
    for row in rows:
        out_line = ", ".join(f"{key} {value}" for key, value in row.items())
        err.print(f"{out_line} (out of fold, max_loss {MAX_LOSS})")
    err.print(f"[dim]priors: {path}[/]")
