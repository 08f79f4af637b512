"""Helpers for whole-graph tests on scripted tiers (deterministic, no model loaded)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from langgraph.checkpoint.memory import InMemorySaver
from tierflow.agents.scripted import Reply, ScriptedModel
from tierflow.agents.tiers import Tiers
from tierflow.graphs.runner import TaskRunner
from tierflow.memory import TraceStore
from tierflow.records import RunTrace, StoredModelCall, ToolCallRecord
from tierflow.settings import TierPolicy
from tierflow.tools import default_registry

# The task graph's node names: scripted models answer by node, never by prompt wording.
PLAN, SELECT, EXTRACT, SUMMARIZE, ANSWER = ("plan", "select_tool", "extract_args", "summarize", "answer")


def scripted_runner(
    store: TraceStore,
    workspace: Path,
    *,
    slm: dict[str, list[Reply]] | None = None,
    llm: dict[str, list[Reply]] | None = None,
    policy: TierPolicy | None = None,
    slm_finish_reason: str = "stop",
    **kwargs: Any,
) -> tuple[TaskRunner, ScriptedModel, ScriptedModel]:
    small = ScriptedModel(tier="slm", name="tiny", by_node=slm or {}, finish_reason=slm_finish_reason)
    large = ScriptedModel(tier="llm", name="big", by_node=llm or {})
    runner = TaskRunner(
        Tiers(small, large),
        default_registry(workspace),
        store,
        policy=policy,
        checkpointer=InMemorySaver(),
        **kwargs,
    )
    return runner, small, large


def model_calls(trace: RunTrace) -> list[StoredModelCall]:
    return [call for step in trace.steps for call in step.model_calls]


def tool_calls(trace: RunTrace) -> list[ToolCallRecord]:
    return [call for step in trace.steps for call in step.tool_calls]


def nodes(trace: RunTrace) -> list[str]:
    return [step.node for step in trace.steps]
