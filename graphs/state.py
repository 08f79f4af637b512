"""The task graph's state: a small TypedDict, with a narrower input schema."""

from __future__ import annotations

from typing import Any

from typing_extensions import TypedDict

__all__ = ["TaskInput", "TaskState", "Observation", "Escalation"]


class Escalation(TypedDict):
    node: str
    reason: str


class Observation(TypedDict):
    step: str
    tool: str | None
    arguments: dict[str, Any] | None
    result: str | None
    error: str | None


class TaskInput(TypedDict):
    task: str


class TaskState(TypedDict, total=False):
    task: str
    steps: list[str]
    step_index: int
    tool: str | None  # the current step's tool, once chosen
    arguments: dict[str, Any] | None  # its arguments, once extracted
    args_tier: str | None  # the tier that wrote them
    args_call: str | None  # the model call that wrote them, as a CallRef (marked if the tool rejects them)
    observations: list[Observation]
    pending_summary: bool
    escalation: Escalation | None  # a node to run again on the LLM, and why
    choice_features: list[float] | None  # what the escalation score read of the SLM's tool choice
    choice_call: str | None  # the model call that chose the tool, as a CallRef
    call_on_llm: bool  # the LLM took this step's decision over: it writes the call too
    plan_reused: bool  # the steps are a past successful run's plan (no model planned them)
    local_only_data: bool  # a tool result holds local-only data: no later step may use the LLM
    answer: str | None
