"""Running one task through the task graph, with its trace written as it goes.

The run row is created before the first node and closed in ``finally``: a finished run is
``succeeded``; a failure of a tier or of the configuration is ``failed`` with its message;
Ctrl-C leaves it ``interrupted``. Every step already done stays in the trace.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from tierflow.agents.tiers import Tiers
from tierflow.errors import TaskInputError, TierflowError
from tierflow.graphs.context import TaskContext
from tierflow.graphs.state import TaskInput
from tierflow.graphs.task import build_task_graph
from tierflow.memory.recorder import Event, RunRecorder
from tierflow.memory.traces import TraceStore
from tierflow.settings import TierPolicy
from tierflow.tools.registry import ToolRegistry

__all__ = ["TaskRunner", "RunResult", "MAX_TASK_CHARS", "check_task"]

MAX_TASK_CHARS = 20_000


@dataclass(frozen=True)
class RunResult:
    run_id: str
    status: str  # succeeded | failed | interrupted
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
    text = task.strip()
    if not text:
        raise TaskInputError("the task is empty", hint='Give a task, e.g. tierflow run "What is 2 + 2?"')
    if len(text) > MAX_TASK_CHARS:
        raise TaskInputError(
            f"the task is {len(text):,} characters long (at most {MAX_TASK_CHARS:,})",
            hint="Put long material in a workspace file and refer to it in the task.",
        )
    return text


class TaskRunner:
    """Runs tasks on one compiled graph; safe to share between threads."""

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
        settings_snapshot: dict[str, Any] | None = None,
    ) -> None:
        self.tiers = tiers
        self.tools = tools
        self.store = store
        self.policy = policy or TierPolicy()
        self.max_steps = max_steps
        self.summarize_over_chars = summarize_over_chars
        self._settings_snapshot = settings_snapshot or {}
        self.graph = build_task_graph(checkpointer)

    def run(
        self,
        task: str,
        *,
        policy: TierPolicy | None = None,
        on_event: Callable[[Event], None] | None = None,
        max_steps: int | None = None,
    ) -> RunResult:
        """Run ``task``; tier and model failures come back as a ``failed`` result.

        ``max_steps`` caps the plan's steps for this run (the runner's default otherwise)."""
        text = check_task(task)
        chosen = policy or self.policy
        run_id = self.store.start_run(
            text,
            policy=chosen.model_dump(),
            slm_model=self.tiers.slm.name,
            llm_model=self.tiers.llm.name,
            settings=self._settings_snapshot,
        )
        recorder = RunRecorder(self.store, run_id, on_event=on_event)
        steps = max_steps or self.max_steps
        context = TaskContext(
            tiers=self.tiers,
            tools=self.tools,
            policy=chosen,
            recorder=recorder,
            max_steps=steps,
            summarize_over_chars=self.summarize_over_chars,
        )
        config: RunnableConfig = {
            "configurable": {"thread_id": run_id},
            "recursion_limit": 12 + 10 * steps,
        }
        result = RunResult(run_id, "interrupted", error="the run was interrupted")
        recorder.emit("run_started", task=text)
        try:
            final = self.graph.invoke(TaskInput(task=text), config, context=context)
            result = RunResult(run_id, "succeeded", answer=final.get("answer") or "")
        except TierflowError as exc:
            result = RunResult(run_id, "failed", error=exc.message, hint=exc.hint or None)
        except Exception as exc:  # a bug of ours: keep the trace, then let it surface
            result = RunResult(run_id, "failed", error=f"internal error: {type(exc).__name__}: {exc}")
            raise
        finally:
            self.store.finish_run(run_id, result.status, answer=result.answer, error=result.error)
            recorder.emit("run_finished", status=result.status, answer=result.answer, error=result.error)
        return result
