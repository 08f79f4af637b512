"""The typed records a run's trace is made of, from ``ask`` to the store, and the live
events whoever shows progress receives (the CLI's step lines, the console's live view)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from tierflow.agents.protocol import Message, Tier

__all__ = [
    "ModelCallRecord",
    "ToolCallRecord",
    "CallRef",
    "RunStatus",
    "RUN_STATUSES",
    "Event",
    "RunStarted",
    "StepStarted",
    "StepFinished",
    "StepFailed",
    "RunFinished",
]

RunStatus = Literal["running", "succeeded", "failed", "interrupted", "budget_exceeded"]
RUN_STATUSES: tuple[RunStatus, ...] = ("running", "succeeded", "failed", "interrupted", "budget_exceeded")


@dataclass(slots=True)
class ModelCallRecord:
    """One model call: what was sent, what came back, what it cost, and any escalation."""

    node: str
    tier: Tier
    model: str
    messages: list[Message]
    output_schema: dict[str, Any] | None = None
    max_tokens: int | None = None
    raw_output: str | None = None
    parsed: Any = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    finish_reason: str | None = None
    confidence: float | None = None
    escalated: bool = False
    escalation_reason: str | None = None
    escalation_refused: str | None = None  # why an escalation was not made (e.g. local_only)
    redacted: list[str] = field(default_factory=list)  # kinds of values replaced before sending
    error: str | None = None
    id: int | None = None  # set once stored
    run_id: str | None = None


@dataclass(slots=True)
class ToolCallRecord:
    tool: str
    arguments: dict[str, Any]
    result: str | None = None
    error: str | None = None
    latency_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class CallRef:
    """Where a model call sits in its run (step number, position in the step), known
    before the step is stored, so a later step can mark it (a tool rejected its output)."""

    step_seq: int
    index: int

    def __str__(self) -> str:
        return f"{self.step_seq}:{self.index}"

    @classmethod
    def parse(cls, text: str) -> CallRef:
        seq, _, index = text.partition(":")
        return cls(int(seq), int(index))


# Live events ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RunStarted:
    run_id: str
    task: str


@dataclass(frozen=True, slots=True)
class StepStarted:
    run_id: str
    node: str


@dataclass(frozen=True, slots=True)
class StepFinished:
    run_id: str
    node: str
    summary: str | None
    tiers: tuple[Tier, ...] = ()


@dataclass(frozen=True, slots=True)
class StepFailed:
    run_id: str
    node: str
    error: str


@dataclass(frozen=True, slots=True)
class RunFinished:
    run_id: str
    status: RunStatus
    answer: str | None = None
    error: str | None = None


Event = RunStarted | StepStarted | StepFinished | StepFailed | RunFinished
