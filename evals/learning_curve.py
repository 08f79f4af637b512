"""``tierflow eval learn``: the SLM's learning curve, from the LLM's decisions to a LoRA adapter.

BFCL live requests run as the kit graph of ``tierflow eval kit --suite bfcl`` (``choose_tool``
and ``write_args``), split by source group (the id's middle number; never a reserved id):

1. The LLM runs the graph on requests of the routing split's **train** groups, through
   ``App.run_graph`` with the ``llm`` policy, until it has made the most decisions a point
   asks for. Its decisions are the lessons (``tierflow.memory.lessons``), in run order.
2. For each point (100, 200 and 400 decisions) an adapter is trained on the first N lessons
   with ``tierflow learn``'s own code (``train_adapter``, one pass, ``max_minutes`` at most),
   in a process of its own so that its time and peak memory are its own, and written as a
   GGUF LoRA adapter.
3. On requests of the **test** groups, the base SLM (point 0) and each adapted SLM run the
   graph under ``slm`` and ``tiered``. ``tiered`` judges both steps with the shipped priors'
   fitted thresholds at every point (an adapted SLM is a new model pair, which would
   otherwise get the strictest thresholds; the curve compares the SLM, not the fallback).
   The memory of decisions and of verified outputs is off, so only the adapter differs.

A ``Design`` says what the adapters learn from and how fast: every LLM decision (``all``), or
only the ones BFCL's checker marks right (``verified``, standing in for a user's decisions a
tool confirmed: the right tool for ``choose_tool``, a call that passes for ``write_args``), at
a learning rate. The base SLM's point is shared by every design; the adapters and their
results are kept per design.

Every run is stored and every result line kept: a stopped evaluation goes on where it ended.
"""

from __future__ import annotations

import json
import multiprocessing
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tierflow.agents.calibration import StepScorer, StepScorers, shipped_priors
from tierflow.evals.kit import BfclSuite, KitItem, item_line, kit_metrics
from tierflow.memory.lessons import Lesson, LessonSummary, lessons
from tierflow.records import OnProgress, Progress
from tierflow.results import curve_design, curve_points

__all__ = ["CURVE_SAMPLE", "POINTS", "LESSONS", "Design", "learning_curve", "curve_markdown"]

CURVE_SAMPLE = {
    "train": {"live_multiple": 240, "live_simple": 60, "live_irrelevance": 60},
    "test": {"live_multiple": 40, "live_simple": 20, "live_irrelevance": 20},
}
"""Requests drawn per split and category: enough train requests for 400 LLM decisions."""

POINTS = (0, 100, 200, 400)
MODES = ("slm", "tiered")
TASK = "curve"
LESSONS = ("all", "verified")
"""What a design's adapters may learn from (``Design.lessons``)."""
CHECKED_BY = {"choose_tool": "tool", "write_args": "call"}
"""The BFCL check that verifies each node's decision (``Design.lessons == "verified"``)."""


@dataclass(frozen=True)
class Design:
    """What the curve's adapters learn from (``all`` of the LLM's decisions, or the
    ``verified`` ones) and at which learning rate."""

    lessons: str = "all"
    learning_rate: float = 5e-4

    def __post_init__(self) -> None:
        if self.lessons not in LESSONS:
            raise ValueError(f"lessons must be all or verified, not {self.lessons!r}")

    @property
    def tag(self) -> str:
        """The design's folder suffix (none for the first design, so its work is reused)."""
        return "" if self == Design() else f"-{self.lessons}-lr{self.learning_rate:g}"


def learning_curve(
    conf: Any,
    work: Path,
    *,
    points: Sequence[int] = POINTS,
    modes: Sequence[str] = MODES,
    max_minutes: float = 60.0,
    limit: int | None = None,
    on_progress: OnProgress | None = None,
    tiers: Any = None,
    design: Design = Design(),
    taught_from: Path | None = None,
) -> dict[str, Any]:
    """Collect the LLM's decisions, train an adapter per point of ``design``, run the test
    requests at every point; the results (``conf``: the settings; ``work``: the data folder
    of the runs; ``tiers``: given tiers instead of the configured models, for tests).

    The lessons the design learns from are written to ``work/taught<tag>.jsonl`` in the order
    they were collected; ``taught_from`` (such a file, e.g. a committed one) skips the
    collection and learns from its lessons instead."""
    from tierflow.app import App, model_file
    from tierflow.learning.learn import read_lessons, write_lessons

    report: OnProgress = on_progress or (lambda _: None)
    suite = BfclSuite(CURVE_SAMPLE)
    train_items, test_items = suite.items("train"), suite.items("test")[:limit]
    quiet = conf.model_copy(update={"data_dir": work, "memory": False, "learn": False, "shadow_rate": 0.0})
    wanted = max(points)
    with App(quiet.model_copy(update={"slm_adapter": "none"}), on_progress=report, tiers=tiers) as app:
        if taught_from is None:
            _collect(app, suite, train_items, wanted, report, work / VERIFIED, design)
            taught = _taught(app.store, work / VERIFIED, design)[:wanted]
            write_lessons(work / f"taught{design.tag}.jsonl", taught)
        else:
            taught = read_lessons(taught_from)[:wanted]
        base = model_file(quiet, quiet.slm_model, "TIERFLOW_SLM_MODEL", report) if max(points) else None
    base_results, results_file = work / "curve.jsonl", work / f"curve{design.tag}.jsonl"
    done = _done(base_results) | {key: line for key, line in _done(results_file).items() if key[0]}
    curve: dict[str, Any] = {}
    for point in points:
        entry: dict[str, Any] = {"lessons": min(point, len(taught))}
        adapter = None
        if point and base is not None:
            folder = work / f"point-{point}{design.tag}"
            needed = any((point, mode, item.id) not in done for mode in modes for item in test_items)
            adapter, entry["training"] = _adapter(
                base, taught[:point], folder, max_minutes, design, report, needed=needed
            )
        served = adapter is not None and adapter.exists()
        settings = quiet.model_copy(update={"slm_adapter": str(adapter) if served else "none"})
        with App(settings, on_progress=report, tiers=tiers) as app:
            scorers = StepScorers({}, _priors_for(app.tiers.slm.name, app.tiers.llm.name))
            for mode in modes:
                for number, item in enumerate(test_items, start=1):
                    key = (point, mode, item.id)
                    if key not in done:
                        done[key] = _run(app, suite, item, point, mode, scorers)
                        with (results_file if point else base_results).open("a", encoding="utf-8") as handle:
                            handle.write(json.dumps(done[key], default=str) + "\n")
                    outcome = "right" if done[key]["right"] else "wrong"
                    report(Progress(f"point {point}: {mode}", number, len(test_items), outcome, item.id))
        entry["modes"] = {
            mode: _by_kind([done[(point, mode, item.id)] for item in test_items], suite.checks)
            for mode in modes
        }
        curve[str(point)] = entry
    return {
        "suite": "learning_curve",
        "graph": suite.title,
        "split": {
            "train_requests": len(train_items),
            "test": len(test_items),
            "lessons": len(taught),
            "lessons_from": str(taught_from) if taught_from else "collected",
        },
        "design": {"lessons": design.lessons, "learning_rate": design.learning_rate},
        "points": curve,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": multiprocessing.cpu_count()},
    }


VERIFIED = "verified.jsonl"
"""Each train run's BFCL checks, as the LLM's runs are collected."""


def _collect(
    app: Any,
    suite: BfclSuite,
    items: Sequence[KitItem],
    wanted: int,
    report: OnProgress,
    checked: Path,
    design: Design,
) -> None:
    """Run the LLM on train requests, in order, until it has made ``wanted`` decisions the
    design learns from; each run's BFCL checks go to ``checked``."""
    prefix = f"{TASK}:llm:"
    ran = set(app.store.run_tasks(graph=suite.graph_name, status="succeeded", prefix=prefix))
    made = len(_taught(app.store, checked, design))
    for item in items:
        if made >= wanted:
            return
        if prefix + item.id in ran:
            continue
        result = app.run_graph(
            suite.graph(item), item.input, policy="llm", name=suite.graph_name, task=prefix + item.id
        )
        calls = [call for step in app.store.get_run(result.run_id).steps for call in step.model_calls]
        checks = item_line(app.store, suite, "llm", item, result)["checks"]
        with checked.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"run_id": result.run_id, "id": item.id, "checks": checks}) + "\n")
        taught = sum(
            call.tier == "llm"
            and call.error is None
            and call.parsed is not None
            and (design.lessons == "all" or _verified(call.node, checks))
            for call in calls
        )
        made += taught
        # an outcome per run, so that a log (nohup, CI) gets a line for each, not only a terminal
        outcome = "taught" if taught else "left out"
        report(Progress("the LLM's decisions on train requests", min(made, wanted), wanted, outcome, item.id))


def _lessons(store: Any) -> list[Lesson]:
    return list(lessons(store, LessonSummary()))


def _taught(store: Any, checked: Path, design: Design) -> list[Lesson]:
    """The lessons the design learns from, in run order: all of them, or only those whose
    node's BFCL check passed in their run (a run collected without its checks has none)."""
    every = _lessons(store)
    if design.lessons == "all":
        return every
    text = checked.read_text(encoding="utf-8") if checked.exists() else ""
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    checks = {line["run_id"]: line["checks"] for line in lines}
    return [lesson for lesson in every if _verified(lesson.node, checks.get(lesson.run_id, {}))]


def _verified(node: str, checks: Mapping[str, bool]) -> bool:
    """Whether BFCL's checks of a run confirm its decision at ``node``."""
    return node in CHECKED_BY and checks.get(CHECKED_BY[node]) is True


def _adapter(
    base: Path,
    taught: Sequence[Lesson],
    work: Path,
    max_minutes: float,
    design: Design,
    report: OnProgress,
    *,
    needed: bool = True,
) -> tuple[Path, dict[str, Any]]:
    """Train (or reuse) the point's adapter in a process of its own; its GGUF file and what
    the training measured. A point whose test runs are all done (not ``needed``) needs only
    the training's record, so that its results, copied with the record to another machine,
    go on without the adapter's file."""
    gguf = work / "adapter.gguf"
    record = work / "training.json"
    if record.exists() and (gguf.exists() or not needed):
        return gguf, json.loads(record.read_text(encoding="utf-8"))
    work.mkdir(parents=True, exist_ok=True)
    report(Progress(f"training on {len(taught)} lessons", note=f"in {work}"))
    context = multiprocessing.get_context("spawn")
    worker = context.Process(
        target=_train_worker,
        args=(str(base), [x.to_json() for x in taught], str(work), max_minutes, design.learning_rate),
    )
    worker.start()
    worker.join()
    if worker.exitcode != 0 or not record.exists():
        raise RuntimeError(f"training the adapter in {work} failed (exit {worker.exitcode})")
    return gguf, json.loads(record.read_text(encoding="utf-8"))


def _train_worker(
    base: str, taught: list[dict[str, Any]], work: str, max_minutes: float, learning_rate: float
) -> None:
    from tierflow.learning.convert import to_gguf_adapter
    from tierflow.learning.train import TrainOptions, train_adapter

    folder = Path(work)
    items = [Lesson.from_json(data) for data in taught]
    options = TrainOptions(max_steps=len(items), max_minutes=max_minutes, learning_rate=learning_rate)
    result = train_adapter(Path(base), items, folder, options)
    written = to_gguf_adapter(result.adapter_dir, Path(base), folder / "adapter.gguf")
    data = {**result.to_json(), **written}
    (folder / "training.json").write_text(json.dumps(data, indent=1), encoding="utf-8")


def _priors_for(slm: str, llm: str) -> dict[Any, StepScorer]:
    """The shipped priors, taken as fitted for this pair (see the module's docstring)."""
    return {
        kind: replace(scorer, trained_on={**scorer.trained_on, "slm": slm, "llm": llm})
        for kind, scorer in shipped_priors().items()
    }


def _run(
    app: Any, suite: BfclSuite, item: KitItem, point: int, mode: str, scorers: StepScorers
) -> dict[str, Any]:
    result = app.run_graph(
        suite.graph(item),
        item.input,
        policy=mode,
        name=suite.graph_name,
        task=f"{TASK}:{point}:{mode}:{item.id}",
        context={"scorers": scorers if mode == "tiered" else StepScorers(), "shadow_rate": 0.0},
    )
    return {**item_line(app.store, suite, mode, item, result), "point": point}


def _done(path: Path) -> dict[tuple[int, str, str], dict[str, Any]]:
    if not path.exists():
        return {}
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {(int(line["point"]), line["mode"], line["id"]): line for line in lines}


def _by_kind(lines: Sequence[Mapping[str, Any]], checks: Sequence[str]) -> dict[str, Any]:
    kinds = sorted({str(line["kind"]) for line in lines})
    return {
        **kit_metrics(lines, checks),
        "by_kind": {kind: kit_metrics([ln for ln in lines if ln["kind"] == kind], checks) for kind in kinds},
    }


def curve_markdown(data: Mapping[str, Any]) -> str:
    """The curve as a table: per point, the SLM's accuracy (all and live_multiple), tiered's
    accuracy, SLM share and LLM tokens, and the training's minutes and peak memory."""
    rows = [
        "| decisions learned | slm | slm, live_multiple | tiered | tiered: SLM share "
        "| tiered: LLM tokens per item | training | peak memory |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in curve_points(dict(data)):
        minutes = row["training minutes"]
        trained = f"{minutes:.0f} min, {row['training steps']} steps" if minutes is not None else "–"
        memory = f"{row['peak memory MiB']:,.0f} MiB" if row["peak memory MiB"] is not None else "–"
        rows.append(
            f"| {row['decisions learned']} | {_pct(row['slm'])} | {_pct(row['slm, live_multiple'])} | "
            f"{_pct(row['tiered'])} | {_pct(row['tiered: SLM share'])} | "
            f"{row['tiered: LLM tokens per item'] or 0:.0f} | {trained} | {memory} |"
        )
    split = data["split"]
    learned, rate = curve_design(dict(data))
    return (
        f"# {data['graph']}: the SLM's learning curve\n\n"
        f"{split['lessons']} {learned} on {split['train_requests']} train requests, learning rate "
        f"{rate:g}; "
        f"{split['test']} test requests from other source groups.\n\n" + "\n".join(rows) + "\n"
    )


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"
