"""Replaying one recorded model call on the other tier: the same messages, output schema and
token cap, sent to the other model. The replay is a run of its own (graph ``replay``) whose
``parent_run_id`` is the original run, so both stay side by side in the trace store."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tierflow.agents.protocol import CURRENT_NODE, Tier
from tierflow.agents.tiers import Tiers
from tierflow.errors import LocalOnlyError, TierflowError
from tierflow.memory.traces import TraceStore
from tierflow.memory.traces.recorder import RunRecorder
from tierflow.records import ModelCallRecord, StoredModelCall

__all__ = ["Replay", "replay_call", "other_tier"]

DEFAULT_MAX_TOKENS = 256  # for calls recorded before the cap was stored


def other_tier(tier: str) -> Tier:
    return "llm" if tier == "slm" else "slm"


@dataclass(frozen=True)
class Replay:
    run_id: str
    original: StoredModelCall
    replayed: StoredModelCall


def _parsed(text: str, schema: dict[str, Any] | None) -> Any:
    if schema is None:
        return text.strip() or None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def replay_call(store: TraceStore, tiers: Tiers, call_id: int, tier: Tier | None = None) -> Replay:
    """Send model call ``call_id`` again, to ``tier`` (default: the other one), and trace it."""
    original = store.get_model_call(call_id)
    target: Tier = tier or other_tier(original.tier)
    if target == "llm" and store.is_local_only(original.run_id):
        raise LocalOnlyError(
            f"run {original.run_id} was local-only: its prompts may not be sent to the LLM",
            hint="Replay it on the SLM, or run the task again without --local-only.",
        )
    model = tiers.model(target)
    run_id = store.start_run(
        f"replay of {original.node} (call {call_id}) on the {target}",
        graph="replay",
        parent_run_id=original.run_id,
        policy={original.node: target},
        slm_model=tiers.slm.name,
        llm_model=tiers.llm.name,
        settings={"replayed_call_id": call_id},
    )
    recorder = RunRecorder(store, run_id)
    schema = original.output_schema
    record = ModelCallRecord(
        node=original.node,
        tier=target,
        model=model.name,
        messages=original.messages,
        output_schema=schema,
        max_tokens=original.max_tokens or DEFAULT_MAX_TOKENS,
    )
    status, error = "failed", None
    try:
        with recorder.step(original.node) as step:
            step.model_call(record)
            token = CURRENT_NODE.set(record.node)
            try:
                completion = model.complete(record.messages, schema=schema, max_tokens=record.max_tokens or 0)
            except TierflowError as exc:
                error = record.error = exc.message
                step.summary = f"failed: {error}"
            else:
                record.model, record.raw_output = completion.model, completion.text
                record.parsed = _parsed(completion.text, schema)
                record.prompt_tokens = completion.prompt_tokens
                record.completion_tokens = completion.completion_tokens
                record.latency_ms, record.finish_reason = completion.latency_ms, completion.finish_reason
                record.confidence = completion.confidence
                step.summary = completion.text[:300]
                status = "succeeded"
            finally:
                CURRENT_NODE.reset(token)
    finally:
        store.finish_run(run_id, status, answer=None, error=error)
    replayed = store.get_run(run_id).steps[0].model_calls[0]
    return Replay(run_id, original, replayed)
