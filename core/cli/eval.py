"""``tierflow eval ...``: evaluations and benchmarks; results go to the settings' results
directory. ``eval routing`` is in ``eval_routing``; what the commands share in ``eval_support``."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from tierflow.cli.calibrate import MaxLossOption, SlmShareOption, one_target
from tierflow.cli.eval_routing import eval_priors, eval_routing
from tierflow.cli.eval_support import (
    EvalPolicyOption,
    OutOption,
    eval_settings,
    eval_store,
    fresh_memory,
    metrics,
    parse_policies,
    show_results,
)
from tierflow.cli.support import JsonOption, err, progress_display, settings
from tierflow.errors import ConfigError, TaskInputError, TierflowError
from tierflow.settings import TierPolicy

if TYPE_CHECKING:
    from tierflow.evals.memory_qa import QuestionSet

__all__ = ["eval_app"]

eval_app = typer.Typer(
    no_args_is_help=True,
    help="Evaluations; results go to TIERFLOW_RESULTS_DIR: evals/results/ in a checkout, else "
    "<data dir>/results.",
)


@eval_app.command("tools")
def eval_tools(
    suite: Annotated[str | None, typer.Option(help="bfcl:CATEGORY, e.g. bfcl:simple_python.")] = None,
    cases: Annotated[Path | None, typer.Option(help="Your own cases: BFCL-format JSON lines.")] = None,
    answers: Annotated[Path | None, typer.Option(help="Answers for --cases, if not inline.")] = None,
    policy: EvalPolicyOption = [],  # noqa: B006
    limit: Annotated[int | None, typer.Option(min=1, help="Evaluate N cases drawn with --seed.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the --limit draw.")] = 0,
    out_dir: OutOption = None,
    traces: Annotated[Path | None, typer.Option(help="SQLite file for the items' traces.")] = None,
    learn: Annotated[
        bool,
        typer.Option(
            "--learn", help="Online learning: each policy starts from an empty memory and learns as it goes."
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Tool selection and argument extraction on BFCL (or your cases), scored by BFCL's checker."""
    from tierflow.app import App
    from tierflow.cli.render import ProgressDisplay
    from tierflow.evals.tool_suite import evaluate_tools, load_suite, sample, tools_markdown

    name, loaded = load_suite(suite, cases, answers)
    chosen = sample(loaded, limit, seed)
    chosen_policies = parse_policies(policy)
    if learn:
        chosen_policies = {f"{label}+learn": rule for label, rule in chosen_policies.items()}
    conf = eval_settings()
    store, trace_path = eval_store(conf, traces)
    with ProgressDisplay(err) as progress, App(conf, on_progress=progress) as tierflow_app:
        path, data = evaluate_tools(
            name,
            chosen,
            tierflow_app.tiers,
            chosen_policies,
            store,
            seed=seed,
            out_dir=out_dir or settings().resolved_results_dir(),
            settings=conf.masked(),
            on_progress=progress,
            memory_for=partial(fresh_memory, conf, name) if learn else None,
            relevance=tierflow_app.relevance,
        )
    show_results(
        as_json,
        metrics(data, chosen_policies),
        tools_markdown(data),
        f"{path} (items traced in {trace_path})",
    )


@eval_app.command("confidence")
def eval_confidence(
    results: Annotated[
        list[Path],
        typer.Argument(help="Suite result files with slm and llm policies (default: BFCL's three)."),
    ] = [],  # noqa: B006
    out_dir: OutOption = None,
    as_json: JsonOption = False,
) -> None:
    """Calibrate the confidence threshold for escalation and draw the share/accuracy curve."""
    from tierflow.evals.curve import confidence_markdown, confidence_report
    from tierflow.evals.report import environment, write_results

    directory = out_dir or settings().resolved_results_dir()
    paths = results or [directory / f"bfcl_{c}.json" for c in ("simple_python", "multiple", "irrelevance")]
    report = confidence_report(paths)
    report["environment"] = environment(settings().masked())
    markdown = confidence_markdown(report)
    write_results(directory / "confidence.json", report, markdown)
    show_results(as_json, report, markdown)


@eval_app.command("kit")
def eval_kit(
    suite: Annotated[
        str,
        typer.Option(
            "--suite",
            help="triage (the triage example on 90 labelled reports) | bfcl (BFCL live requests "
            "as choose_tool and write_args steps).",
        ),
    ] = "triage",
    mode: Annotated[
        list[str],
        typer.Option(
            "--mode",
            help="slm | llm | tiered-validation | tiered-priors | tiered-calibrated | tiered-share; "
            "repeatable (default: all, side by side).",
        ),
    ] = [],  # noqa: B006
    limit: Annotated[int | None, typer.Option(min=1, help="Run only the first N test items.")] = None,
    draw: Annotated[
        int,
        typer.Option(
            "--draw",
            min=0,
            help="bfcl: a fresh draw of test requests, leaving out those of draws 0 to N-1 (for a design "
            "that has looked at the earlier ones).",
        ),
    ] = 0,
    max_loss: Annotated[
        float,
        typer.Option(
            "--max-loss", min=0.0, max=1.0, help="The loss calibrate fits tiered-calibrated's thresholds for."
        ),
    ] = 0.02,
    slm_share: Annotated[
        float,
        typer.Option(
            "--slm-share", min=0.5, max=1.0, help="The SLM share of calls calibrate fits tiered-share's for."
        ),
    ] = 0.6,
    restart: Annotated[
        bool, typer.Option("--restart", help="Forget a stopped evaluation's runs and start over.")
    ] = False,
    out_dir: OutOption = None,
    as_json: JsonOption = False,
) -> None:
    """Escalation in a graph of kit steps (the triage example's classify and extract_fields on
    90 labelled reports, or BFCL live requests as choose_tool and write_args): validation
    only, the shipped priors and after calibrate, side by side with slm and llm. Resumable:
    the same command goes on where a stopped one ended."""
    import shutil

    from tierflow.app import App
    from tierflow.cli.render import ProgressDisplay
    from tierflow.evals.kit import MODES, SUITES, kit_eval, kit_markdown, suite_named
    from tierflow.evals.report import models_environment, write_results

    unknown = [m for m in mode if m not in MODES]
    if unknown:
        raise TaskInputError(
            f"unknown mode {', '.join(map(repr, unknown))}", hint=f"Modes: {', '.join(MODES)}."
        )
    if suite not in SUITES:
        raise TaskInputError(f"unknown suite {suite!r}", hint=f"Suites: {', '.join(SUITES)}.")
    if draw and suite != "bfcl":
        raise TaskInputError("--draw is for --suite bfcl", hint="The triage suite has one fixed test split.")
    conf = eval_settings()
    work = conf.resolved_data_dir() / "eval-kit" / suite
    if restart:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    kit_conf = conf.model_copy(update={"data_dir": work})
    env = models_environment(conf)
    name = "kit.json" if suite == "triage" else f"kit_{suite}.json"
    path = (out_dir or settings().resolved_results_dir()) / name
    with ProgressDisplay(err) as progress, App(kit_conf, on_progress=progress) as tierflow_app:
        chosen = [m for m in MODES if m in mode] or list(MODES)
        data = kit_eval(
            tierflow_app,
            work,
            suite=suite_named(suite, draw),
            modes=chosen,
            max_loss=max_loss,
            slm_share=slm_share,
            limit=limit,
            on_progress=progress,
        )
    data["environment"] = env
    write_results(path, data, kit_markdown(data))
    show_results(as_json, {k: v for k, v in data.items() if k != "items"}, kit_markdown(data), str(path))


@eval_app.command("learn")
def eval_learn(
    point: Annotated[
        list[int],
        typer.Option(
            "--point",
            min=0,
            help="A number of LLM decisions to learn from; repeatable (default: 0 100 200 400).",
        ),
    ] = [],  # noqa: B006
    max_minutes: Annotated[
        float, typer.Option("--max-minutes", min=0.1, help="The most one training may take.")
    ] = 60.0,
    limit: Annotated[int | None, typer.Option(min=1, help="Run only the first N test requests.")] = None,
    lessons: Annotated[
        str,
        typer.Option(
            help="all (every LLM decision) | verified (only those BFCL's checker marks right, as a "
            "tool would confirm them)."
        ),
    ] = "all",
    learning_rate: Annotated[float, typer.Option(min=1e-6, help="The adapters' learning rate.")] = 5e-4,
    taught: Annotated[
        Path | None,
        typer.Option(
            "--taught",
            metavar="FILE",
            help="Learn from these lessons (the taught*.jsonl a collection writes in its work folder, "
            "or the one committed under evals/results/issue26) instead of collecting the LLM's decisions.",
        ),
    ] = None,
    restart: Annotated[
        bool,
        typer.Option("--restart", help="Forget a stopped evaluation's runs and adapters and start over."),
    ] = False,
    out_dir: OutOption = None,
    as_json: JsonOption = False,
) -> None:
    """The SLM's learning curve: BFCL live requests of train groups answered by the LLM, an
    adapter trained on the first 100, 200 and 400 of its decisions with tierflow learn's own
    code, and the SLM and tiered on requests of other groups at every point. Needs the train
    extra; hours on 2 cores; resumable."""
    import shutil

    from tierflow.cli.render import ProgressDisplay
    from tierflow.evals.learning_curve import LESSONS, POINTS, Design, curve_markdown, learning_curve
    from tierflow.evals.report import models_environment, write_results
    from tierflow.optional import require

    if lessons not in LESSONS:
        raise TaskInputError(f"--lessons must be {' or '.join(LESSONS)}, not {lessons!r}")
    design = Design(lessons, learning_rate)
    if taught is not None and not taught.is_file():
        raise TaskInputError(
            f"{taught} is not a file", hint="Give a JSON-lines file of lessons, or leave out --taught."
        )
    require("torch", "transformers", "peft", "gguf", "safetensors", purpose="tierflow eval learn")
    conf = eval_settings()
    work = conf.resolved_data_dir() / "eval-learn"
    if restart:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    env = models_environment(conf)
    path = (out_dir or settings().resolved_results_dir()) / f"learning_curve{design.tag}.json"
    with ProgressDisplay(err) as progress:
        data = learning_curve(
            conf,
            work,
            points=sorted(set(point)) or POINTS,
            max_minutes=max_minutes,
            limit=limit,
            on_progress=progress,
            design=design,
            taught_from=taught,
        )
    data["environment"] = env
    write_results(path, data, curve_markdown(data))
    show_results(as_json, {k: v for k, v in data.items() if k != "items"}, curve_markdown(data), str(path))


@eval_app.command("large-job")
def eval_large_job(
    documents: Annotated[
        int, typer.Option(min=30, help="Documents in the job: the 22 and passages of them.")
    ] = 1000,
    kill_after: Annotated[
        int, typer.Option(min=1, help="Kill the job (SIGKILL) after this many documents, then resume it.")
    ] = 50,
    ray: Annotated[
        bool,
        typer.Option("--ray/--no-ray", help="Run it once more on a Ray cluster started with `ray start`."),
    ] = True,
    ray_documents: Annotated[
        int, typer.Option(min=1, help="Documents of the Ray run: the first N of the job's.")
    ] = 100,
    shortest: Annotated[
        int, typer.Option(min=100, help="Characters of the shortest passage made of an original.")
    ] = 1500,
    longest: Annotated[
        int, typer.Option(min=100, help="Characters of the longest passage made of an original.")
    ] = 9000,
    policy: Annotated[str | None, typer.Option(help="The job's policy (default: the settings').")] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Go on with the evaluation a stopped one left (its runs so far kept, its job resumed).",
        ),
    ] = False,
    out_dir: OutOption = None,
    as_json: JsonOption = False,
) -> None:
    """A large job through `tierflow summarize`, as a user runs it: the batch corpus's 22
    documents and passages of them, with throughput, memory over time, database size and the
    time to resume after kill -9; then part of it on a two-node local Ray cluster. Hours: an
    evaluation that is stopped goes on with --resume."""
    import json
    import shutil

    from tierflow.cli.render import ProgressDisplay
    from tierflow.evals.batch_corpus import CORPUS_DIR, load_manifest
    from tierflow.evals.large_job import (
        RAY_ENV,
        SAMPLE_S,
        corpus_sizes,
        derived_corpus,
        kept_environment,
        large_job,
        large_job_markdown,
        ray_cluster,
    )
    from tierflow.evals.report import models_environment, write_results
    from tierflow.records import Progress

    if shortest > longest:
        raise TaskInputError(
            f"--shortest {shortest} is longer than --longest {longest}", hint="Give --shortest <= --longest."
        )
    conf = eval_settings()
    env = models_environment(conf)  # at the start
    work = conf.resolved_data_dir() / "eval-large-job"
    done = work / "runs.json"
    if resume and not work.exists():
        raise TaskInputError(
            f"there is no stopped large-job evaluation in {work}", hint="Start one without --resume."
        )
    if not resume:
        shutil.rmtree(work, ignore_errors=True)
    runs: dict[str, Any] = json.loads(done.read_text(encoding="utf-8")) if done.exists() else {}
    env = kept_environment(work, env)
    corpus, ray_corpus = work / "corpus", work / "corpus-ray"
    if not corpus.exists():
        originals = [CORPUS_DIR / entry["file"] for entry in load_manifest()]
        with err.status(f"writing {documents} documents …"):
            files = derived_corpus(corpus, originals, count=documents, sizes=(shortest, longest))
        ray_corpus.mkdir()
        for path in files[:ray_documents]:
            shutil.copyfile(path, ray_corpus / path.name)
    documents = sum(1 for _ in corpus.iterdir())  # a resumed evaluation's, whatever was asked now

    def keep(label: str, run: dict[str, Any]) -> None:
        runs[label] = run
        done.write_text(json.dumps(runs), encoding="utf-8")

    options = ["--policy", policy] if policy else []
    with ProgressDisplay(err) as progress:
        if "local, 1 worker" not in runs:
            progress(
                Progress("", note=f"the large job, killed (-9) after {kill_after} documents and resumed")
            )
            run = large_job(
                corpus,
                work / "local",
                options=options,
                kill_after=kill_after,
                on_progress=progress,
                stage="local",
            )
            keep("local, 1 worker", run)
        if ray and "Ray, 2 nodes" not in runs:
            progress(
                Progress("", note="its first documents on a two-node Ray cluster started with `ray start`")
            )
            with ray_cluster() as address:
                ray_options = [*options, "--backend", "ray", "--workers", "2", "--ray-address", address]
                run = large_job(
                    ray_corpus,
                    work / "ray",
                    options=ray_options,
                    env=RAY_ENV,
                    on_progress=progress,
                    stage="Ray",
                )
                keep("Ray, 2 nodes", run)
    data = {
        "suite": "large_job",
        "documents": documents,
        "sizes": corpus_sizes(corpus),
        "sample_s": SAMPLE_S,
        "runs": runs,
        "environment": env,
    }
    path = (out_dir or settings().resolved_results_dir()) / "large_job.json"
    write_results(path, data, large_job_markdown(data))
    summary = {label: {k: v for k, v in run.items() if k != "samples"} for label, run in runs.items()}
    show_results(as_json, summary, large_job_markdown(data), str(path))


@eval_app.command("servers")
def eval_servers(
    limit: Annotated[int, typer.Option(min=2, help="Documents of the batch corpus to summarize.")] = 8,
    out_dir: OutOption = None,
    as_json: JsonOption = False,
) -> None:
    """A shared SLM server against a copy of the SLM per worker (`tierflow summarize --workers 2`
    with and without --shared-slm, side by side: throughput and peak memory), and what
    log-probabilities cost a llama.cpp server per call. Half an hour on 2 cores."""
    import shutil

    from tierflow.app import model_file
    from tierflow.evals.batch_corpus import CORPUS_DIR, load_manifest
    from tierflow.evals.report import models_environment, write_results
    from tierflow.evals.servers import logits_cost, servers_markdown, shared_slm_runs

    conf = eval_settings()
    env = models_environment(conf)  # at the start
    work = conf.resolved_data_dir() / "eval-servers"
    shutil.rmtree(work, ignore_errors=True)
    originals = [CORPUS_DIR / entry["file"] for entry in load_manifest()][:limit]
    runs = shared_slm_runs(originals, work, lambda label: err.print(f"[dim]{label} …[/]"))
    costs = []
    for spec, setting in (
        (conf.slm_model, "TIERFLOW_SLM_MODEL"),
        (conf.embedded_llm_model, "TIERFLOW_EMBEDDED_LLM_MODEL"),
    ):
        path = model_file(conf, spec, setting, progress_display())
        with err.status(f"log-probabilities on a server of {spec}, and without …"):
            costs.append(logits_cost(path, work, lambda label: None, n_threads=conf.slm_threads))
    data = {
        "suite": "servers",
        "documents": len(originals),
        "runs": runs,
        "logits_cost": costs,
        "environment": env,
    }
    path = (out_dir or settings().resolved_results_dir()) / "servers.json"
    write_results(path, data, servers_markdown(data))
    show_results(as_json, data, servers_markdown(data), str(path))


@eval_app.command("tasks")
def eval_tasks(
    policy: EvalPolicyOption = [],  # noqa: B006
    limit: Annotated[int | None, typer.Option(min=1, help="Run only the first N tasks.")] = None,
    only: Annotated[str | None, typer.Option(help="Only tasks of this category.")] = None,
    heldout: Annotated[
        bool,
        typer.Option(
            "--heldout", help="The held-out tasks (evals/data/tasks_heldout.json, with their documents)."
        ),
    ] = False,
    tasks_file: Annotated[
        Path | None,
        typer.Option(
            "--tasks",
            help="A task suite file of your own (the JSON of evals/data/tasks.json); its results "
            "are named after the file.",
        ),
    ] = None,
    out_dir: OutOption = None,
    traces: Annotated[Path | None, typer.Option(help="SQLite file for the runs' traces.")] = None,
    as_json: JsonOption = False,
) -> None:
    """The end-to-end task suite through the real task graph, checked by code."""
    from tierflow.app import App
    from tierflow.cli.render import ProgressDisplay
    from tierflow.evals.report import evaluate_policies
    from tierflow.evals.tasks import (
        HELDOUT_FILE,
        TASKS_FILE,
        TaskResult,
        load_tasks,
        run_tasks,
        summarize_tasks,
        tasks_markdown,
    )

    if heldout and tasks_file is not None:
        raise TaskInputError("--heldout and --tasks name two suites", hint="Give one of them.")
    suite_file = tasks_file or (HELDOUT_FILE if heldout else TASKS_FILE)
    suite = load_tasks(suite_file)
    tasks = [t for t in suite.tasks if only is None or t.category == only][:limit]
    if not tasks:
        raise ConfigError(
            f"no tasks of category {only!r}",
            hint="Categories: " + ", ".join(sorted({t.category for t in suite.tasks})),
        )
    chosen_policies = parse_policies(policy)
    conf = eval_settings()
    store, trace_path = eval_store(conf, traces)
    name = suite_file.stem
    path = (out_dir or settings().resolved_results_dir()) / f"{name}.json"
    with ProgressDisplay(err) as progress, App(conf, on_progress=progress) as tierflow_app:
        tiers = tierflow_app.tiers
        documents = _task_documents(tierflow_app, suite.documents) if suite.documents else None

        def run(label: str, chosen: TierPolicy) -> list[TaskResult]:
            relevance = tierflow_app.relevance
            return run_tasks(
                suite,
                tasks,
                tiers,
                chosen,
                store,
                relevance=relevance,
                documents=documents,
                stage=label,
                on_progress=progress,
            )

        data = evaluate_policies(
            path,
            name,
            "tasks",
            tiers,
            chosen_policies,
            run=run,
            summarize=summarize_tasks,
            fields={"task_ids": [t.id for t in tasks]},
            settings=conf.masked(),
            markdown=tasks_markdown,
        )
    show_results(
        as_json, metrics(data, chosen_policies), tasks_markdown(data), f"{path} (runs traced in {trace_path})"
    )


def _task_documents(app: Any, folder: Path) -> Any:
    """A fresh in-memory document memory holding ``folder``'s files."""
    from tierflow.memory.documents import DocumentMemory

    memory = DocumentMemory.open(None, app.embeddings)
    for file in sorted(folder.iterdir()):
        added = memory.add(file)
        if added.status == "failed":
            raise ConfigError(f"cannot add {file} to the task documents: {added.reason}")
    return memory


@eval_app.command("summaries")
def eval_summaries(
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N documents.")] = None,
    prepare: Annotated[
        bool, typer.Option("--prepare", help="Rebuild the documents from python3.11-doc first.")
    ] = False,
    out_dir: OutOption = None,
    as_json: JsonOption = False,
) -> None:
    """SLM and LLM summaries of long documents: key-fact coverage, faithfulness, length, ROUGE-L."""
    from tierflow.app import App
    from tierflow.cli.render import ProgressDisplay
    from tierflow.evals.documents import load_documents, prepare_documents
    from tierflow.evals.report import environment, tier_models, write_results
    from tierflow.evals.summaries import evaluate_summaries, summaries_markdown, summaries_results

    if prepare:
        prepare_documents()
    documents = load_documents()[:limit]
    conf = eval_settings()
    with ProgressDisplay(err) as progress, App(conf, on_progress=progress) as tierflow_app:
        tiers = tierflow_app.tiers
        tiers.load()
        env = environment(conf.masked(), tier_models(tiers))
        cache = (out_dir or conf.resolved_results_dir()) / "summaries"
        scores = evaluate_summaries(tiers, documents, cache=cache, on_progress=progress)
    data = summaries_results(scores, documents, env)
    path = (out_dir or settings().resolved_results_dir()) / "summaries.json"
    write_results(path, data, summaries_markdown(data))
    show_results(as_json, data["metrics"], summaries_markdown(data), str(path))


@eval_app.command("bench")
def eval_bench(
    runs: Annotated[int, typer.Option(min=5, help="Scripted task runs for the overhead measure.")] = 60,
    out_dir: OutOption = None,
    as_json: JsonOption = False,
) -> None:
    """Benchmarks: orchestration overhead, SLM throughput, tool-selection latency, peak memory,
    and N = 1, 2, 4, 8 concurrent runs sharing one SLM (throughput, p50/p95, fairness)."""
    from tierflow.app import model_file
    from tierflow.evals import bench, load
    from tierflow.evals.report import models_environment, write_results

    conf = eval_settings()
    slm_path = model_file(conf, conf.slm_model, "TIERFLOW_SLM_MODEL", progress_display())
    env = models_environment(conf)
    data: dict[str, Any] = {}
    with err.status("orchestration overhead …"):
        data["orchestration"] = bench.orchestration_overhead(runs)
    with err.status("SLM throughput …"):
        data["slm_throughput"] = bench.slm_throughput(slm_path, n_threads=conf.slm_threads)
    with err.status("tool-selection latency …"):
        data["selection"] = bench.selection_latency(slm_path, n_threads=conf.slm_threads)
    with err.status("escalation score and memory recall …"):
        data["decision_costs"] = bench.decision_costs(conf.resolved_models_dir())
    with err.status("signals of a kit step's output …"):
        data["signal_costs"] = bench.signal_costs()
    with err.status("the nearest verified output of a step …"):
        data["past_output_costs"] = bench.past_output_costs(conf.resolved_models_dir())
    with err.status("peak memory of a task run …"):
        data["memory"] = bench.peak_memory()
    with err.status("concurrent task runs sharing one SLM …"):
        data["load"] = load.load_levels(slm_path, n_threads=conf.slm_threads)
    data["environment"] = env
    path = (out_dir or settings().resolved_results_dir()) / "bench.json"
    write_results(path, data, bench.bench_markdown(data))
    show_results(as_json, data, bench.bench_markdown(data), str(path))


@eval_app.command("batch")
def eval_batch(
    judge_only: Annotated[
        bool, typer.Option("--judge-only", help="Only judge the summaries already in batch.json.")
    ] = False,
    out_dir: OutOption = None,
    as_json: JsonOption = False,
) -> None:
    """The batch job's benchmark: the 22-document corpus summarized with 1 and 2 local
    workers, 2 Ray workers and all on the LLM; documents per minute, parallel efficiency,
    SLM share, LLM tokens, and the tiered summaries' quality against the all-LLM ones. The
    runs are written before they are judged, so a failed judgement loses no run."""
    from tierflow.evals.batch_bench import batch_markdown, batch_quality, batch_runs
    from tierflow.evals.report import models_environment, read_results, write_results

    path = (out_dir or settings().resolved_results_dir()) / "batch.json"
    conf = eval_settings()
    with err.status("batch benchmark …") as status:

        def progress(step: str) -> None:
            status.update(f"batch benchmark: {step} …")

        if judge_only:
            data = read_results(path)
            if not data:
                raise TierflowError(f"no runs in {path} to judge", hint="Run `tierflow eval batch` first.")
        else:
            env = models_environment(conf)
            data = {**batch_runs(conf, progress), "environment": env}  # the commit the runs began at
            write_results(path, data, batch_markdown(data))
        data["quality"] = batch_quality(conf, data, progress)
    write_results(path, data, batch_markdown(data))
    show_results(as_json, {k: v for k, v in data.items() if k != "runs"}, batch_markdown(data), str(path))


@eval_app.command("memory")
def eval_memory(
    policies: Annotated[
        list[str] | None,
        typer.Option("--policy", help="Policies to answer with (default: slm, tiered, llm)."),
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N questions (a quick look).")] = None,
    question_set: Annotated[
        str,
        typer.Option(
            "--set",
            help="main (22 real documents, 68 questions) | dev (10 Python HOWTOs, 24 questions for "
            "trying changes without tuning on main) | heldout (the main corpus's 45 held-out questions, "
            "answered: run once at the end of a round of work) | calibration (70 other questions on the "
            "HOWTOs, for --calibrate).",
        ),
    ] = "main",
    retrieval: Annotated[
        bool, typer.Option("--retrieval/--no-retrieval", help="Measure the rankings too.")
    ] = True,
    slm_chunks: Annotated[
        int | None,
        typer.Option("--slm-chunks", min=1, help="Show the SLM only the best N chunks (default: all 4)."),
    ] = None,
    calibrate_on: Annotated[
        str | None,
        typer.Option(
            "--calibrate",
            help="First calibrate the answer step on this set's questions (calibration: 70 questions "
            "on the HOWTOs), as tierflow calibrate does on a user's own (for --max-loss or "
            "--slm-share), and judge tiered's SLM answers by its scorer. Resumable.",
        ),
    ] = None,
    max_loss: MaxLossOption = None,
    slm_share: SlmShareOption = None,
    out_dir: OutOption = None,
    as_json: JsonOption = False,
) -> None:
    """The document memory on 22 real documents and 68 questions written for them:
    retrieval (hit@1, hit@3, MRR, with and without the SLM's reranking) and cited answers
    (correctness, citation accuracy, SLM share, LLM tokens) per policy."""
    from tierflow.cli.render import ProgressDisplay
    from tierflow.evals.memory_qa import POLICIES, calibrate_answers, memory_eval, memory_markdown
    from tierflow.evals.report import models_environment, write_results

    one_target(max_loss, slm_share)
    chosen = _question_set(question_set)
    calibration = _question_set(calibrate_on) if calibrate_on is not None else None
    if calibration is not None and calibration.questions == chosen.questions:
        raise TaskInputError(
            f"--calibrate {calibrate_on} would calibrate on the questions it is measured on",
            hint="Calibrate on other questions: --calibrate calibration.",
        )
    path = (out_dir or settings().resolved_results_dir()) / chosen.results
    conf = eval_settings()
    # the code as it is now, not after the commits made during the hour it runs
    env = models_environment(conf)
    with ProgressDisplay(err) as progress:
        fitted = (
            calibrate_answers(
                conf,
                calibration,
                conf.resolved_data_dir() / f"eval-memory-calibrate-{calibration.name}",
                progress,
                max_loss=max_loss,
                slm_share=slm_share,
            )
            if calibration is not None
            else None
        )
        data = memory_eval(
            conf,
            progress,
            policies=policies or POLICIES,
            limit=limit,
            question_set=chosen,
            retrieval_ranks=retrieval,
            slm_chunks=slm_chunks,
            scorers=Path(fitted["scorers"]) if fitted is not None else None,
        )
    data["calibration"] = fitted
    data["environment"] = env
    write_results(path, data, memory_markdown(data))
    show_results(as_json, {k: v for k, v in data.items() if k != "answers"}, memory_markdown(data), str(path))


def _question_set(name: str) -> QuestionSet:
    from tierflow.evals.memory_qa import QUESTION_SETS

    if name not in QUESTION_SETS:
        raise TaskInputError(f"unknown question set {name!r}", hint=f"Sets: {', '.join(QUESTION_SETS)}.")
    return QUESTION_SETS[name]


@eval_app.command("readme")
def eval_readme(
    readme: Annotated[Path, typer.Option(help="The README to update.")] = Path("README.md"),
) -> None:
    """Regenerate the README's headline table from evals/results/ (the documentation's
    evaluations page reads every table from there when it is built)."""
    from tierflow.evals.readme import update_readme

    update_readme(readme)
    err.print(f"[dim]updated the results table of {readme}[/]")


eval_app.command("routing")(eval_routing)
eval_app.command("priors")(eval_priors)
