"""Stored rows read back as records: a run's summary (what ``runs list`` shows), its model
and tool calls, and the ``signals`` column of a model call, written and read."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from tierflow.agents.scoring import top_options
from tierflow.memory.traces.tables import ModelCall, Run, ToolCall
from tierflow.records import (
    Message,
    ModelCallRecord,
    StoredModelCall,
    Tier,
    TokenSignals,
    ToolCallRecord,
    slm_share,
)

__all__ = [
    "RunSummary",
    "aware",
    "elapsed_ms",
    "run_summary",
    "stored_call",
    "stored_tool_call",
    "signals_column",
]


@dataclass(frozen=True)
class RunSummary:
    id: str
    task: str
    status: str
    created_at: datetime
    duration_ms: float | None
    model_calls: int
    slm_calls: int
    llm_prompt_tokens: int
    llm_completion_tokens: int
    escalations: int
    graph: str = "task"
    policy: dict[str, Any] | None = None
    parent_run_id: str | None = None
    slm_prompt_tokens: int = 0
    slm_completion_tokens: int = 0

    @property
    def slm_share(self) -> float | None:
        return slm_share(self.slm_calls, self.model_calls)


def aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def elapsed_ms(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((aware(end) - aware(start)).total_seconds() * 1000, 1)


def run_summary(run: Run, calls: list[ModelCall]) -> RunSummary:
    llm = [c for c in calls if c.tier == "llm"]
    return RunSummary(
        id=run.id,
        task=run.task,
        status=run.status,
        created_at=run.created_at,
        duration_ms=elapsed_ms(run.created_at, run.finished_at),
        model_calls=len(calls),
        slm_calls=len(calls) - len(llm),
        llm_prompt_tokens=sum(c.prompt_tokens for c in llm),
        llm_completion_tokens=sum(c.completion_tokens for c in llm),
        escalations=sum(1 for c in calls if c.escalated),
        graph=run.graph,
        policy=run.policy,
        parent_run_id=run.parent_run_id,
        slm_prompt_tokens=sum(c.prompt_tokens for c in calls if c.tier == "slm"),
        slm_completion_tokens=sum(c.completion_tokens for c in calls if c.tier == "slm"),
    )


def stored_call(call: ModelCall) -> StoredModelCall:
    assert call.id is not None  # a stored row
    return StoredModelCall(
        id=call.id,
        run_id=call.run_id,
        node=call.node,
        tier=cast(Tier, call.tier),  # written from ModelCallRecord.tier
        model=call.model,
        prompt_tokens=call.prompt_tokens,
        completion_tokens=call.completion_tokens,
        latency_ms=round(call.latency_ms, 1),
        finish_reason=call.finish_reason,
        confidence=call.confidence,
        max_tokens=call.max_tokens,
        escalated=call.escalated,
        escalation_reason=call.escalation_reason,
        escalation_refused=call.escalation_refused,
        redacted=call.redacted or [],
        error=call.error,
        messages=cast(list[Message], call.messages),  # written from ModelCallRecord.messages
        output_schema=call.output_schema,
        raw_output=call.raw_output,
        parsed=call.parsed,
        signals=token_signals_of(call.signals),
        choice_probabilities=(call.signals or {}).get("choice"),
        p_wrong=_p_wrong(call.signals),
        recall=(call.signals or {}).get("recall"),
        step_kind=(call.signals or {}).get("kind"),
        features=(call.signals or {}).get("features"),
        scorer=(call.signals or {}).get("scorer"),
        into=(call.signals or {}).get("into"),
        missing_signals=(call.signals or {}).get("missing"),
    )


def signals_column(record: ModelCallRecord) -> dict[str, Any] | None:
    """The ``signals`` column: the token signals' fields, and ``choice`` (the most probable
    options of a choice with their probabilities) when the call was one."""
    stored: dict[str, Any] = record.signals.to_json() if record.signals else {}
    if record.choice_probabilities is not None:
        kept = top_options(record.choice_probabilities.probabilities)
        stored["choice"] = {option: round(p, 5) for option, p in kept.items()}
        stored["greedy_choice"] = record.choice_probabilities.greedy_choice
    if record.p_wrong is not None:
        stored["p_wrong"] = round(record.p_wrong, 4)
    if record.recall:
        stored["recall"] = record.recall
    if record.features is not None:
        stored["kind"] = record.step_kind
        if record.into:
            stored["into"] = record.into
        stored["features"] = {name: round(value, 5) for name, value in record.features.items()}
    if record.scorer is not None:
        stored["scorer"] = record.scorer
    if record.missing_signals:
        stored["missing"] = record.missing_signals
    return stored or None


def token_signals_of(stored: dict[str, Any] | None) -> TokenSignals | None:
    if not stored or "tokens" not in stored:
        return None
    return TokenSignals(**{name: stored[name] for name in TokenSignals.__dataclass_fields__})


def stored_tool_call(call: ToolCall) -> ToolCallRecord:
    return ToolCallRecord(
        tool=call.tool,
        arguments=call.arguments,
        result=call.result,
        error=call.error,
        latency_ms=round(call.latency_ms, 1),
    )


def _p_wrong(stored: dict[str, Any] | None) -> float | None:
    """P(wrong) as the ``signals`` column holds it (``score`` in rows written before 0.2)."""
    value = (stored or {}).get("p_wrong", (stored or {}).get("score"))
    return float(value) if value is not None else None
