"""``make bench`` (load): N task runs at once sharing one SLM, as the console's sessions or a
service's threads would: throughput, latency (p50/p95) and fairness as N grows.

Every run goes through the real task graph, tracing to one SQLite file, with the real SLM
for select_tool, extract_args and answer (the SLM serialises calls behind its lock, so
concurrent runs queue for it). The plan comes from a scripted LLM, so the figures measure
tierflow and the SLM, not a remote endpoint's own queue. Each level runs the same number of
tasks; fairness is the slowest run's latency over the fastest's.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langgraph.checkpoint.memory import InMemorySaver
from tierflow.agents.scripted import ScriptedModel
from tierflow.agents.slm import LlamaCppModel
from tierflow.agents.tiers import Tiers
from tierflow.evals.report import markdown_table
from tierflow.evals.toolcalls import percentile
from tierflow.graphs.runner import TaskRunner
from tierflow.memory.traces import TraceStore
from tierflow.results import fmt
from tierflow.settings import TierPolicy
from tierflow.tools.builtins import default_registry

__all__ = ["LEVELS", "concurrent_runs", "load_runner", "load_levels", "load_markdown"]

LEVELS = (1, 2, 4, 8)
TASK = "What is 17 * 23 + 4?"
PLAN = '{"steps": ["Compute 17 * 23 + 4 with the calculator"], "answer": ""}'
POLICY = TierPolicy(default="slm", nodes={"plan": "llm"})


def concurrent_runs(runner: TaskRunner, workers: int, tasks: int) -> dict[str, Any]:
    """Run ``tasks`` tasks on ``workers`` threads sharing ``runner``; what each took."""
    latencies: list[float] = []
    statuses: list[str] = []
    lock = threading.Lock()
    counter = iter(range(tasks))

    def work() -> None:
        while True:
            with lock:
                if next(counter, None) is None:
                    return
            started = time.perf_counter()
            result = runner.run(TASK)
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed * 1000)
                statuses.append(result.status)

    started = time.perf_counter()
    threads = [threading.Thread(target=work, name=f"load-{n}") for n in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    return {
        "workers": workers,
        "tasks": len(latencies),
        "succeeded": statuses.count("succeeded"),
        "wall_s": wall,
        "tasks_per_minute": 60 * len(latencies) / wall,
        "p50_ms": percentile(latencies, 0.5),
        "p95_ms": percentile(latencies, 0.95),
        "fairness": max(latencies) / min(latencies) if latencies else None,
        "mean_ms": statistics.fmean(latencies) if latencies else None,
    }


def load_runner(slm: LlamaCppModel, store: TraceStore, workspace: Path, tasks: int) -> TaskRunner:
    plan = ScriptedModel(tier="llm", name="scripted-planner", by_node={"plan": [PLAN] * tasks})
    return TaskRunner(
        Tiers(slm, plan), default_registry(workspace), store, policy=POLICY, checkpointer=InMemorySaver()
    )


def load_levels(
    model_path: Path, levels: Sequence[int] = LEVELS, tasks: int = 8, n_threads: int | None = None
) -> dict[str, Any]:
    slm = LlamaCppModel(model_path, n_threads=n_threads)
    slm.load()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = TraceStore.from_url(f"sqlite:///{Path(tmp) / 'load.db'}")
        load_runner(slm, store, Path(tmp), 1).run(TASK)  # warm: model pages and caches in
        for workers in levels:
            rows.append(concurrent_runs(load_runner(slm, store, Path(tmp), tasks), workers, tasks))
        stored = len(store.list_runs(limit=10_000))
        store.engine.dispose()
    return {"levels": rows, "runs_stored": stored, "runs_started": 1 + tasks * len(levels)}


def load_markdown(data: dict[str, Any]) -> str:
    rows = [
        [
            str(level["workers"]),
            f"{level['succeeded']}/{level['tasks']}",
            f"{level['tasks_per_minute']:.1f}",
            fmt(level["p50_ms"], "s"),
            fmt(level["p95_ms"], "s"),
            f"{level['fairness']:.2f}",
        ]
        for level in data["levels"]
    ]
    return (
        "## Load: concurrent task runs sharing one SLM\n\n"
        "Each level runs the same tasks on N threads through one TaskRunner (real SLM for "
        "select_tool, extract_args and answer; scripted planner), traced to one SQLite file.\n\n"
        + markdown_table(
            ["concurrent runs", "succeeded", "tasks/min", "p50 latency", "p95 latency", "slowest/fastest"],
            rows,
        )
        + f"\nRuns stored: {data['runs_stored']} of {data['runs_started']} started.\n"
    )
