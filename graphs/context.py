"""What a task-graph run depends on, injected per run as LangGraph's ``Runtime.context``,
and ``ask``: the one way a node calls a model (tier choice, parsing, tracing, escalation)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from tierflow.agents.escalation import Rejected, can_escalate, choose_tier
from tierflow.agents.protocol import Completion, Message, Tier
from tierflow.agents.tiers import Tiers
from tierflow.errors import TierflowError
from tierflow.graphs.state import Escalation, TaskState
from tierflow.memory.recorder import RunRecorder
from tierflow.settings import TierPolicy
from tierflow.tools.registry import ToolRegistry

__all__ = ["TaskContext", "Answer", "ask"]

T = TypeVar("T")


@dataclass(frozen=True)
class TaskContext:
    tiers: Tiers
    tools: ToolRegistry
    policy: TierPolicy
    recorder: RunRecorder
    max_steps: int = 6
    summarize_over_chars: int = 1200


@dataclass(frozen=True)
class Answer(Generic[T]):
    """A node's model call: the parsed value, or why it was rejected and whether to escalate."""

    value: T | None
    tier: Tier
    completion: Completion
    call_id: int
    rejection: Rejected | None = None
    escalate: bool = False

    @property
    def reason(self) -> str:
        return self.rejection.reason if self.rejection else ""

    def escalation(self, node: str) -> dict[str, Escalation]:
        return {"escalation": Escalation(node=node, reason=self.reason)}


def ask(
    ctx: TaskContext,
    node: str,
    state: TaskState,
    messages: Sequence[Message],
    parse: Callable[[Completion], T],
    *,
    max_tokens: int,
    schema: dict[str, Any] | None = None,
) -> Answer[T]:
    """Call the model that serves ``node`` now, parse its reply, record the call."""
    choice = ctx.policy.for_node(node)
    pending = state.get("escalation")
    tier = choose_tier(choice, escalated=pending is not None and pending["node"] == node)
    model = ctx.tiers.model(tier)
    record: dict[str, Any] = {
        "node": node,
        "tier": tier,
        "model": model.name,
        "messages": list(messages),
        "output_schema": schema,
        "max_tokens": max_tokens,
    }
    try:
        completion = model.complete(messages, schema=schema, max_tokens=max_tokens)
    except TierflowError as exc:
        ctx.recorder.model_call(**record, error=str(exc))
        raise
    record.update(
        model=completion.model,
        raw_output=completion.text,
        prompt_tokens=completion.prompt_tokens,
        completion_tokens=completion.completion_tokens,
        latency_ms=completion.latency_ms,
        finish_reason=completion.finish_reason,
    )
    try:
        value = parse(completion)
    except Rejected as rejection:
        escalate = can_escalate(choice, tier)
        call_id = ctx.recorder.model_call(
            **record,
            escalated=escalate,
            escalation_reason=rejection.reason if escalate else None,
            error=rejection.reason,
        )
        return Answer(None, tier, completion, call_id, rejection, escalate)
    parsed = value.model_dump() if hasattr(value, "model_dump") else value
    confidence = completion.extra.get("confidence")
    record.update(parsed=parsed, confidence=confidence)
    if confidence is not None and can_escalate(choice, tier) and confidence < ctx.policy.min_confidence:
        unsure = Rejected(
            "low_confidence",
            f"the SLM gave its choice probability {confidence:.2f}, below {ctx.policy.min_confidence:.2f}",
        )
        call_id = ctx.recorder.model_call(**record, escalated=True, escalation_reason=unsure.reason)
        return Answer(None, tier, completion, call_id, unsure, escalate=True)
    call_id = ctx.recorder.model_call(**record)
    return Answer(value, tier, completion, call_id)
