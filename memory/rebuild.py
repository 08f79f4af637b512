"""The memory of verified decisions, rebuilt from stored runs: every decision the runs' traces
show the LLM made or corrected, and every SLM call whose tool then ran without error.

The traces keep each model call's exact messages and parsed output, so nothing is lost when
the memory is: ``tierflow memory rebuild`` refills it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from tierflow.memory.decisions import DecisionMemory, Provenance, VerifiedDecision
from tierflow.memory.traces import TraceStore
from tierflow.records import RunTrace, StepTrace, StoredModelCall

__all__ = ["decisions_in", "rebuild_decisions"]

_STEP = "Step: "


@dataclass
class _Choice:
    request: str
    tools: tuple[str, ...]
    tool: str
    corrected: bool  # an SLM output of this decision was escalated
    slm_arguments: dict[str, Any] | None = None  # waiting for the tool to accept them


def _accepted(step: StepTrace) -> StoredModelCall | None:
    kept = [c for c in step.model_calls if not c.escalated and c.error is None and c.parsed is not None]
    return kept[-1] if kept else None


def _request(call: StoredModelCall) -> str | None:
    """The step a tool-call prompt was about (its user message ends with ``Step: ...``)."""
    user = next((m["content"] for m in reversed(call.messages) if m["role"] == "user"), "")
    at = user.rfind(_STEP)
    return user[at + len(_STEP) :].strip() or None if at >= 0 else None


def _offered(call: StoredModelCall) -> tuple[str, ...]:
    schema = call.output_schema or {}
    options = ((schema.get("properties") or {}).get("tool") or {}).get("enum") or []
    return tuple(option for option in options if option != "none")


def _provenance(tier: str, corrected: bool) -> Provenance:
    if tier != "llm":
        return "slm_confirmed"
    return "llm_corrected" if corrected else "llm"


def decisions_in(trace: RunTrace) -> Iterator[VerifiedDecision]:
    """The verified decisions of one run, in order."""
    pending: _Choice | None = None
    for step in trace.steps:
        call = _accepted(step) if step.model_calls else None
        escalated = any(c.escalated for c in step.model_calls)
        if step.node == "select_tool":
            pending = None
            request = _request(call) if call else None
            if call is None or request is None or not isinstance(call.parsed, dict):
                continue
            tool, tools = str(call.parsed.get("tool")), _offered(call)
            if tool == "none":
                if call.tier == "llm":
                    yield VerifiedDecision(
                        request, tools, None, None, _provenance("llm", escalated), trace.run_id
                    )
                continue
            pending = _Choice(request, tools, tool, escalated)
        elif step.node == "extract_args" and pending is not None:
            if call is None or not isinstance(call.parsed, dict):
                pending = None if not escalated else pending
                continue
            corrected = pending.corrected or escalated
            if call.tier == "llm":
                provenance = _provenance("llm", corrected)
                yield VerifiedDecision(
                    pending.request, pending.tools, pending.tool, call.parsed, provenance, trace.run_id
                )
                pending = None
            else:
                pending.slm_arguments = call.parsed
        elif step.node == "act" and pending is not None and pending.slm_arguments is not None:
            if step.tool_calls and step.tool_calls[-1].error is None:
                arguments = pending.slm_arguments
                yield VerifiedDecision(
                    pending.request, pending.tools, pending.tool, arguments, "slm_confirmed", trace.run_id
                )
            pending = None


def rebuild_decisions(store: TraceStore, memory: DecisionMemory, *, limit: int = 100_000) -> tuple[int, int]:
    """Add the verified decisions of every stored run; returns (runs read, decisions added)."""
    runs = store.list_runs(limit=limit)
    added = 0
    for summary in runs:
        added += _add_all(memory, decisions_in(store.get_run(summary.id)))
    return len(runs), added


def _add_all(memory: DecisionMemory, decisions: Iterable[VerifiedDecision]) -> int:
    before = memory.count()
    for decision in decisions:
        memory.add(decision)
    return memory.count() - before
