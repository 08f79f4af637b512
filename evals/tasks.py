"""The end-to-end task suite: multi-step tasks with answers code can check, run through the
real task graph (plan, tools, escalation, answer) under a tier policy.

The tasks live in ``evals/data/tasks.json`` with their checks, a fixture workspace the file
tools read, and a fixed clock so that date questions have one right answer. A check is one
of:

- ``{"type": "number", "value": V, "rel_tol": R}``: some number in the answer is within
  ``R`` (relative; 0 means exact) of ``V``; thousands separators are understood.
- ``{"type": "contains_any", "values": [...]}`` / ``contains_all``: the answer contains any /
  all of the values as whole words, ignoring case.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tierflow.agents.tiers import Tiers
from tierflow.errors import TaskInputError
from tierflow.evals.report import markdown_table
from tierflow.graphs.runner import TaskRunner
from tierflow.memory.traces import TraceStore
from tierflow.records import OnProgress, Progress
from tierflow.results import fmt, ordered_policies
from tierflow.settings import TierPolicy
from tierflow.tools.builtins import default_registry

if TYPE_CHECKING:
    from tierflow.memory.documents import DocumentMemory

__all__ = [
    "TASKS_FILE",
    "HELDOUT_FILE",
    "Task",
    "TaskResult",
    "TaskSuite",
    "load_tasks",
    "passes",
    "run_tasks",
    "summarize_tasks",
]

TASKS_FILE = Path(__file__).resolve().parent / "data" / "tasks.json"
HELDOUT_FILE = TASKS_FILE.with_name("tasks_heldout.json")
"""Tasks written for issue 24's failure kinds (general knowledge, unit words, the user's
documents), run once at the end of that work: never tuned on."""

_NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?")


@dataclass(frozen=True)
class Task:
    id: str
    category: str
    task: str
    check: dict[str, Any]


@dataclass(frozen=True)
class TaskSuite:
    tasks: list[Task]
    workspace: Path
    clock: datetime
    documents: Path | None = None
    """A folder of documents the tasks ask about (put in a fresh document memory)."""


def _check_spec(where: str, check: Any) -> dict[str, Any]:
    kinds = ("number", "contains_any", "contains_all")
    if not isinstance(check, dict) or check.get("type") not in kinds:
        raise TaskInputError(f"{where}: check must be an object with type one of {', '.join(kinds)}")
    if check["type"] == "number" and not isinstance(check.get("value"), int | float):
        raise TaskInputError(f'{where}: a number check needs a numeric "value"')
    if check["type"] != "number" and not (
        isinstance(check.get("values"), list)
        and check["values"]
        and all(isinstance(v, str) for v in check["values"])
    ):
        raise TaskInputError(f'{where}: a {check["type"]} check needs "values", a list of strings')
    return check


def load_tasks(path: Path = TASKS_FILE) -> TaskSuite:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        tasks = [
            Task(t["id"], t["category"], t["task"], _check_spec(f"{path}, task {t.get('id')!r}", t["check"]))
            for t in data["tasks"]
        ]
        clock = datetime.fromisoformat(data["clock"])
        documents = (path.parent / data["documents"]).resolve() if data.get("documents") else None
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise TaskInputError(
            f"cannot read the task suite {path}: {exc}",
            hint="It is JSON: {clock, workspace, documents?, tasks: [{id, category, task, check}]}.",
        ) from None
    if len({t.id for t in tasks}) != len(tasks):
        raise TaskInputError(f"{path}: task ids must be unique")
    return TaskSuite(tasks, (path.parent / data.get("workspace", "workspace")).resolve(), clock, documents)


def _numbers(text: str) -> list[float]:
    return [float(match.replace(",", "")) for match in _NUMBER.findall(text)]


def passes(check: dict[str, Any], answer: str) -> bool:
    """Whether ``answer`` satisfies ``check`` (see the module's docstring)."""
    if check["type"] == "number":
        value, tolerance = float(check["value"]), float(check.get("rel_tol", 0.0))
        return any(
            math.isclose(found, value, rel_tol=tolerance, abs_tol=1e-9 if tolerance == 0 else 0.0)
            for found in _numbers(answer)
        )
    found = [
        re.search(rf"(?<!\w){re.escape(v)}(?!\w)", answer, re.IGNORECASE) is not None for v in check["values"]
    ]
    return any(found) if check["type"] == "contains_any" else all(found)


@dataclass
class TaskResult:
    id: str
    category: str
    passed: bool
    status: str
    answer: str
    error: str | None
    wall_ms: float
    run_id: str
    model_calls: int
    slm_calls: int
    llm_prompt_tokens: int
    llm_completion_tokens: int
    escalation_reasons: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_tasks(
    suite: TaskSuite,
    tasks: Sequence[Task],
    tiers: Tiers,
    policy: TierPolicy,
    store: TraceStore,
    *,
    relevance: Callable[[str, Sequence[str]], list[float]] | None = None,
    documents: DocumentMemory | None = None,
    stage: str = "tasks",
    on_progress: OnProgress | None = None,
) -> list[TaskResult]:
    """Run each task through the task graph; ``relevance`` is the request-to-tool similarity
    the escalation score reads under ``tiered`` (the app's offline embeddings); with
    ``documents``, the graph has the ``search_memory`` tool over them.
    ``on_progress`` hears of each task as ``stage``, ``passed`` or ``failed``."""
    registry = default_registry(suite.workspace, clock=lambda: suite.clock)
    if documents is not None:
        from tierflow.graphs.citing import search_memory_tool

        registry.register(search_memory_tool(documents))
    runner = TaskRunner(tiers, registry, store, policy=policy, relevance=relevance)
    results = []
    for task in tasks:
        started = time.perf_counter()
        result = runner.run(task.task)
        wall_ms = (time.perf_counter() - started) * 1000
        trace = store.get_run(result.run_id)
        calls = [call for step in trace.steps for call in step.model_calls]
        llm = [call for call in calls if call.tier == "llm"]
        item = TaskResult(
            id=task.id,
            category=task.category,
            passed=result.status == "succeeded" and passes(task.check, result.answer or ""),
            status=result.status,
            answer=result.answer or "",
            error=result.error,
            wall_ms=wall_ms,
            run_id=result.run_id,
            model_calls=len(calls),
            slm_calls=len(calls) - len(llm),
            llm_prompt_tokens=sum(call.prompt_tokens for call in llm),
            llm_completion_tokens=sum(call.completion_tokens for call in llm),
            escalation_reasons=[
                (call.escalation_reason or "").split(":")[0] for call in calls if call.escalated
            ],
        )
        results.append(item)
        if on_progress is not None:
            outcome = "passed" if item.passed else "failed"
            on_progress(Progress(stage, len(results), len(tasks), outcome, task.id, item.error or ""))
    return results


def summarize_tasks(items: Sequence[TaskResult]) -> dict[str, Any]:
    n = len(items)
    calls = sum(item.model_calls for item in items)
    by_category: dict[str, list[bool]] = {}
    for item in items:
        by_category.setdefault(item.category, []).append(item.passed)
    walls = [item.wall_ms for item in items]
    return {
        "tasks": n,
        "success_rate": sum(item.passed for item in items) / n if n else None,
        "slm_share": sum(item.slm_calls for item in items) / calls if calls else None,
        "model_calls_per_task": calls / n if n else None,
        "llm_tokens_per_task": sum(item.llm_prompt_tokens + item.llm_completion_tokens for item in items) / n
        if n
        else None,
        "wall_ms_mean": statistics.fmean(walls) if walls else None,
        "wall_ms_median": statistics.median(walls) if walls else None,
        "failed_runs": sum(item.status != "succeeded" for item in items),
        "escalation_reasons": dict(
            Counter(r for item in items for r in item.escalation_reasons).most_common()
        ),
        "success_by_category": {c: sum(v) / len(v) for c, v in sorted(by_category.items())},
    }


def tasks_markdown(data: dict[str, Any]) -> str:
    policies = data.get("policies", {})
    rows = []
    for label in ordered_policies(policies):
        m = policies[label]["metrics"]
        rows.append(
            [
                label,
                str(m["tasks"]),
                fmt(m["success_rate"], "%"),
                fmt(m["slm_share"], "%"),
                f"{m['llm_tokens_per_task']:.0f}" if m["llm_tokens_per_task"] is not None else "–",
                fmt(m["wall_ms_mean"], "s"),
                ", ".join(f"{k} {v}" for k, v in m["escalation_reasons"].items()) or "none",
            ]
        )
    categories = sorted({c for p in policies.values() for c in p["metrics"]["success_by_category"]})
    by_category = [
        [label] + [fmt(policies[label]["metrics"]["success_by_category"].get(c), "%") for c in categories]
        for label in ordered_policies(policies)
    ]
    return (
        "# End-to-end tasks by tier policy\n\n"
        + markdown_table(
            [
                "policy",
                "tasks",
                "success",
                "SLM share of calls",
                "LLM tokens / task",
                "wall / task",
                "escalations",
            ],
            rows,
        )
        + "\n## Success by category\n\n"
        + markdown_table(["policy", *categories], by_category)
    )
