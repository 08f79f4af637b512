"""What the SLM can learn from the stored runs: verified decisions, as the SLM sees them.

``tierflow learn`` trains a LoRA adapter on these lessons. Each is one step's prompt, exactly
as the SLM is sent it, with the output it should have written:

* ``llm``: the LLM's decision where the step went to the LLM first;
* ``correction``: the LLM's decision after the SLM's output was rejected (escalated);
* ``shadow``: the LLM's reference output of a shadow call (whether or not the SLM agreed);
* ``slm_verified``: an SLM output that a label (shadow or gold) or a tool that ran on it
  confirmed.

Left out, each counted under its rule: local-only runs (``local_only``), calls whose
messages had private values replaced (``redacted``, unless ``include_private``: the SLM's own
unredacted prompt of the step is then used, and the data never leaves the machine), runs
that did not succeed, failed or rejected calls, empty outputs, malformed messages, judge
calls (the LLM grading a text is not SLM work), SLM outputs nothing confirmed, and
duplicates. ``held_out`` sets aside a share of runs (by a hash of the run id, so a run's
lessons stay together) that training never sees, for the promotion comparison.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

from tierflow.agents.protocol import Message
from tierflow.memory.distill import run_ids_since, valid_message
from tierflow.memory.traces import TraceStore
from tierflow.records import RunTrace, StoredModelCall

__all__ = ["Lesson", "LessonSource", "LessonSummary", "DropReason", "lessons", "is_held_out"]

LessonSource = Literal["llm", "correction", "shadow", "slm_verified"]
DropReason = Literal[
    "local_only",
    "redacted",
    "failed_run",
    "error",
    "no_output",
    "malformed",
    "judge",
    "unconfirmed",
    "duplicate",
]
SHADOW, JUDGE = ":shadow", ":judge"


@dataclass(frozen=True)
class Lesson:
    """One step's prompt as the SLM sees it, and the verified output it should write."""

    messages: list[Message]
    target: str  # the output's raw text (JSON for a choice or an extraction)
    schema: dict[str, Any] | None  # the output schema the step asked for (the SLM's grammar)
    kind: str | None  # choose, extract or text: how two outputs are compared
    node: str
    run_id: str
    source: LessonSource

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Lesson:
        return cls(**data)

    def chat(self) -> list[Message]:
        """The messages with the target as the assistant's reply (a fine-tuning line)."""
        return [*self.messages, {"role": "assistant", "content": self.target}]


@dataclass
class LessonSummary:
    """How many lessons each source gave, per node, and how many each rule dropped."""

    runs: int = 0
    kept: Counter[str] = field(default_factory=Counter)  # by source
    by_node: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)  # by rule

    def to_json(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "kept": dict(sorted(self.kept.items())),
            "by_node": dict(sorted(self.by_node.items())),
            "dropped": dict(sorted(self.dropped.items())),
        }


def is_held_out(run_id: str, share: float) -> bool:
    """Whether a run's lessons belong to the held-out slice (a stable hash of its id)."""
    digest = int(hashlib.sha256(run_id.encode()).hexdigest()[:8], 16)
    return digest / 0xFFFFFFFF < share


def lessons(
    store: TraceStore,
    summary: LessonSummary,
    *,
    nodes: Sequence[str] = (),
    since: datetime | None = None,
    include_private: bool = False,
) -> Iterator[Lesson]:
    """The lessons of the stored runs, oldest run first, counted in ``summary`` as read."""
    seen: set[str] = set()
    for run_id in run_ids_since(store, since):
        summary.runs += 1
        trace = store.get_run(run_id)
        local_only = store.is_local_only(run_id)
        right = _labelled_right(store, run_id)
        for lesson_or_reason in _run_lessons(
            trace, right, local_only=local_only, include_private=include_private
        ):
            if isinstance(lesson_or_reason, str):
                summary.dropped[lesson_or_reason] += 1
                continue
            lesson = lesson_or_reason
            if nodes and lesson.node not in nodes:
                continue
            key = hashlib.sha256(json.dumps(lesson.chat(), sort_keys=True).encode()).hexdigest()
            if key in seen:
                summary.dropped["duplicate"] += 1
                continue
            seen.add(key)
            summary.kept[lesson.source] += 1
            summary.by_node[lesson.node] += 1
            yield lesson


def _labelled_right(store: TraceStore, run_id: str) -> set[int]:
    """The ids of the run's SLM calls a label says were right."""
    return {label.model_call_id for label in store.labels(run_id=run_id) if label.slm_right}


def _run_lessons(
    trace: RunTrace, right: set[int], *, local_only: bool, include_private: bool
) -> Iterator[Lesson | DropReason]:
    for step in trace.steps:
        tools_ran = bool(step.tool_calls) and all(call.error is None for call in step.tool_calls)
        slm_messages: dict[str, list[Message]] = {}  # node -> the SLM's own prompt in this step
        escalated: set[str] = set()
        for call in step.model_calls:
            node = call.node.removesuffix(SHADOW)
            if call.node.endswith(JUDGE):
                yield "judge"
                continue
            if call.tier == "slm" and _messages_ok(call):
                slm_messages[node] = _prompt(call)
            reason = _drop_reason(call, trace, local_only=local_only)
            if call.tier == "slm":
                if call.escalated:  # rejected: the LLM's output after it is the lesson
                    escalated.add(node)
                    yield reason or "error"
                elif reason is not None:
                    yield reason
                elif call.id in right or tools_ran:
                    yield _lesson(call, node, _prompt(call), trace, "slm_verified")
                else:
                    yield "unconfirmed"
                continue
            if reason is not None:
                yield reason
                continue
            messages = _prompt(call)
            if call.redacted:  # the LLM saw placeholders: learn from the SLM's own prompt, if allowed
                if not include_private or node not in slm_messages:
                    yield "redacted"
                    continue
                messages = slm_messages[node]
            source: LessonSource = (
                "shadow" if call.node.endswith(SHADOW) else "correction" if node in escalated else "llm"
            )
            yield _lesson(call, node, messages, trace, source)


def _drop_reason(call: StoredModelCall, trace: RunTrace, *, local_only: bool) -> DropReason | None:
    if local_only:
        return "local_only"
    if trace.status != "succeeded":
        return "failed_run"
    if call.error is not None:
        return "error"
    if not call.raw_output or not call.raw_output.strip() or call.parsed is None:
        return "no_output"
    if not _messages_ok(call):
        return "malformed"
    return None


def _messages_ok(call: StoredModelCall) -> bool:
    return bool(call.messages) and all(valid_message(m) for m in call.messages)


def _prompt(call: StoredModelCall) -> list[Message]:
    return [{"role": m["role"], "content": m["content"]} for m in call.messages]


def _lesson(
    call: StoredModelCall, node: str, messages: list[Message], trace: RunTrace, source: LessonSource
) -> Lesson:
    return Lesson(
        messages=messages,
        target=(call.raw_output or "").strip(),
        schema=call.output_schema,
        kind=call.step_kind,
        node=node,
        run_id=trace.run_id,
        source=source,
    )
