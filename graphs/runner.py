"""Running one task through the task graph, as ``run_graph`` runs any graph: traced as it
goes, with the same statuses (``succeeded``, ``failed``, ``budget_exceeded``,
``interrupted``), every finished step kept."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from tierflow.agents.budget import Budget, BudgetMeter, Prices
from tierflow.agents.calibration import StepScorers
from tierflow.agents.policy import TierPolicy
from tierflow.agents.scoring import EscalationScorer
from tierflow.agents.tiers import Tiers
from tierflow.errors import RunNotResumableError, TaskInputError
from tierflow.graphs.introspect import check_policy
from tierflow.graphs.running import RunSpec, execute, redactor_for
from tierflow.graphs.state import TaskInput
from tierflow.graphs.task import build_task_graph
from tierflow.memory.traces import TraceStore
from tierflow.records import Event, RunStatus
from tierflow.tools.limits import DEFAULT_LIMITS, ToolLimits
from tierflow.tools.registry import ToolRegistry

if TYPE_CHECKING:
    from tierflow.graphs.recall import Recall
    from tierflow.memory.decisions import OutputMemory

__all__ = ["TaskRunner", "RunResult", "MAX_TASK_CHARS", "TASK_GRAPH", "check_task", "check_text"]

TASK_GRAPH = "task"
"""The name the task graph's runs are stored under (and its calibrated scorers)."""

MAX_TASK_CHARS = 20_000


@dataclass(frozen=True)
class RunResult:
    run_id: str
    status: RunStatus
    answer: str | None = None
    error: str | None = None
    hint: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "status": self.status,
            "answer": self.answer,
            "error": self.error,
            "hint": self.hint,
        }


def check_task(task: str) -> str:
    """The task, stripped; ``TaskInputError`` when it is empty or too long."""
    return check_text(
        task,
        "task",
        limit=MAX_TASK_CHARS,
        example='tierflow run "What is 2 + 2?"',
        too_long="Put long material in a workspace file and refer to it in the task.",
    )


def check_text(text: str, what: str, *, limit: int, example: str, too_long: str = "Shorten it.") -> str:
    """A text a user gave (a task, a query, a question), stripped: ``TaskInputError`` when it
    is not UTF-8 (bytes of another encoding arrive as surrogates), empty, or over ``limit``."""
    stripped = text.strip()
    try:
        stripped.encode("utf-8")
    except UnicodeEncodeError:
        raise TaskInputError(
            f"the {what} is not valid UTF-8 text (it holds bytes of another encoding)",
            hint="Give it as UTF-8, e.g. convert it with iconv -t utf-8.",
        ) from None
    if not stripped:
        raise TaskInputError(f"the {what} is empty", hint=f"Give one, e.g. {example}")
    if len(stripped) > limit:
        raise TaskInputError(
            f"the {what} is {len(stripped):,} characters long (at most {limit:,})", hint=too_long
        )
    return stripped


class TaskRunner:
    """Runs tasks on one compiled task graph; safe to share between threads."""

    def __init__(
        self,
        tiers: Tiers,
        tools: ToolRegistry,
        store: TraceStore,
        *,
        policy: TierPolicy | None = None,
        checkpointer: BaseCheckpointSaver[Any] | None = None,
        max_steps: int = 6,
        summarize_over_chars: int = 1200,
        tool_limits: ToolLimits = DEFAULT_LIMITS,
        settings_snapshot: dict[str, Any] | None = None,
        prices: Prices | None = None,
        recall: Recall | None = None,
        relevance: Callable[[str, Sequence[str]], list[float]] | None = None,
        scorer: EscalationScorer | None = None,
        scorers: Callable[[], StepScorers] | None = None,
        outputs: Callable[[], OutputMemory | None] | None = None,
    ) -> None:
        self.tiers = tiers
        self.recall = recall
        self.relevance = relevance
        self.scorer = scorer
        self.scorers = scorers  # the task graph's calibrated step scorers, read for each run
        self.outputs = outputs  # opens the memory of verified step outputs
        self.tools = tools
        self.store = store
        self.policy = policy or TierPolicy()
        self.max_steps = max_steps
        self.summarize_over_chars = summarize_over_chars
        self.tool_limits = tool_limits
        self.prices = prices or Prices()
        self._settings_snapshot = settings_snapshot or {}
        self.graph = build_task_graph(checkpointer)

    def resume(self, run_id: str, *, on_event: Callable[[Event], None] | None = None) -> RunResult:
        """Continue a stopped task run from its last checkpoint, with the policy, privacy
        options and budget it started with (the LLM tokens it already used count against
        the budget). Finished steps, tool calls included, are not run again."""
        trace = self.store.get_run(run_id)
        if trace.graph != TASK_GRAPH:
            raise RunNotResumableError(
                f"run {trace.run_id} ran the graph {trace.graph!r}, not the task graph",
                hint="Continue it from Python: run_graph(graph, {}, resume=RUN_ID) with the same graph.",
            )
        if trace.status in ("running", "succeeded"):
            what = "is still running" if trace.status == "running" else "has already succeeded"
            raise RunNotResumableError(f"run {trace.run_id} {what}", hint="`tierflow runs list` shows it.")
        options = self.store.run_settings(trace.run_id).get("run", {})
        meter = BudgetMeter(Budget(**options.get("budget", {})), self.prices)
        meter.prompt_tokens = trace.stats.llm_prompt_tokens
        meter.completion_tokens = trace.stats.llm_completion_tokens
        spec = RunSpec(
            policy=TierPolicy.model_validate(trace.policy or {}),
            meter=meter,
            local_only=bool(options.get("local_only")),
            redactor=redactor_for(bool(options.get("redact"))),
            name=TASK_GRAPH,
            task=trace.task,
            context=self._context(self.max_steps),
            config={"recursion_limit": 12 + 10 * self.max_steps},
            on_event=on_event,
            snapshot=self._settings_snapshot,
            resume=trace.run_id,
        )
        result = execute(self.graph, {}, spec, tiers=self.tiers, store=self.store)
        answer = (result.state.get("answer") or "") if result.ok else None
        return RunResult(result.run_id, result.status, answer=answer, error=result.error, hint=result.hint)

    def _context(self, steps: int) -> dict[str, Any]:
        return {
            "tools": self.tools,
            "max_steps": steps,
            "summarize_over_chars": self.summarize_over_chars,
            "tool_limits": self.tool_limits,
            "recall": self.recall,
            "relevance": self.relevance,
            "scorer": self.scorer,
            "scorers": self.scorers() if self.scorers is not None else None,
            "outputs": self.outputs,
        }

    def run(
        self,
        task: str,
        *,
        policy: TierPolicy | None = None,
        on_event: Callable[[Event], None] | None = None,
        max_steps: int | None = None,
        budget: Budget | None = None,
        local_only: bool = False,
        redact: bool | Iterable[str] = False,
        cancel: threading.Event | None = None,
    ) -> RunResult:
        """Run ``task``; tier and model failures come back as a ``failed`` result.

        ``max_steps`` caps the plan's steps for this run (the runner's default otherwise).
        ``cancel``, once set from another thread, stops the run before its next step."""
        text = check_task(task)
        chosen = policy or self.policy
        check_policy(self.graph, chosen)
        steps = max_steps or self.max_steps
        spec = RunSpec(
            policy=chosen,
            meter=BudgetMeter(budget, self.prices),
            local_only=local_only,
            redactor=redactor_for(redact),
            name=TASK_GRAPH,
            task=text,
            context=self._context(steps),
            config={"recursion_limit": 12 + 10 * steps},
            on_event=on_event,
            snapshot=self._settings_snapshot,
            cancel=cancel,
        )
        result = execute(self.graph, dict(TaskInput(task=text)), spec, tiers=self.tiers, store=self.store)
        answer = (result.state.get("answer") or "") if result.ok else None
        return RunResult(result.run_id, result.status, answer=answer, error=result.error, hint=result.hint)
