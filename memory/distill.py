"""Distillation data: the LLM's accepted answers from stored runs, as chat fine-tuning lines.

Each exported call is one JSON line in OpenAI's chat fine-tuning format: the messages exactly
as they were sent to the LLM (already redacted when the run redacted them, with secrets
scrubbed by the store) and the LLM's raw output as the last, ``assistant`` message, so that a
small model can be fine-tuned on the traffic it should learn to serve::

    {"messages": [{"role": "system", ...}, {"role": "user", ...}, {"role": "assistant", ...}],
     "metadata": {"run_id": ..., "node": ..., "escalated_from_slm": true, ...}}

Only accepted answers teach: a call that failed, whose output was rejected, or that came
back empty is skipped, and so are, by default, the calls of runs that did not succeed.
Local-only runs are never exported, and identical (messages, answer) pairs are written once.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from sqlmodel import Session, col, select
from tierflow.agents.protocol import Message
from tierflow.errors import ConfigError
from tierflow.memory.traces import TraceStore
from tierflow.memory.traces.tables import Run
from tierflow.records import RunTrace, StoredModelCall

__all__ = [
    "DistillExample",
    "DistillSummary",
    "SkipReason",
    "distill_examples",
    "export_distill",
    "parse_since",
]

SkipReason = Literal["local_only", "failed_run", "error", "no_output", "malformed", "duplicate"]
ROLES = frozenset({"system", "user", "assistant"})


@dataclass(frozen=True, slots=True)
class DistillExample:
    """One exported LLM call: the messages as sent, with its raw output appended."""

    messages: list[Message]
    run_id: str
    node: str
    model: str
    escalated_from_slm: bool  # the step's SLM answer was rejected and this call replaced it
    escalation_reason: str | None  # why the SLM's answer was rejected
    created_at: datetime  # when the step that made the call started
    redacted: list[str]  # kinds of values replaced before the call was sent

    def to_json(self, *, metadata: bool = True) -> dict[str, Any]:
        line: dict[str, Any] = {"messages": self.messages}
        if metadata:
            line["metadata"] = {
                "run_id": self.run_id,
                "node": self.node,
                "model": self.model,
                "escalated_from_slm": self.escalated_from_slm,
                "escalation_reason": self.escalation_reason,
                "created_at": _iso(self.created_at),
                "redacted": self.redacted,
            }
        return line


@dataclass(slots=True)
class DistillSummary:
    """What an export read, wrote and skipped (``skipped`` counts LLM calls by reason)."""

    path: Path | None = None  # None until a file is written
    runs: int = 0
    exported: int = 0
    redacted: int = 0  # exported calls whose messages had values replaced
    by_node: Counter[str] = field(default_factory=Counter)
    skipped: Counter[SkipReason] = field(default_factory=Counter)
    llm_nodes: set[str] = field(default_factory=set)  # nodes with LLM calls, before --node

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path) if self.path else None,
            "runs": self.runs,
            "exported": self.exported,
            "redacted": self.redacted,
            "by_node": dict(sorted(self.by_node.items())),
            "skipped": dict(self.skipped),
        }


def parse_since(text: str) -> datetime:
    """An ISO date or time (``2025-01-31``, ``2025-01-31T09:00``, with an optional offset);
    one without an offset is UTC, as ``runs show`` prints times."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(
            f"--since {text!r} is not a date",
            hint="Give an ISO date or time, e.g. 2025-01-31 or 2025-01-31T09:00.",
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def distill_examples(
    store: TraceStore,
    summary: DistillSummary,
    *,
    nodes: Sequence[str] = (),
    since: datetime | None = None,
    run_ids: Sequence[str] = (),
    include_failed_runs: bool = False,
) -> Iterator[DistillExample]:
    """The exportable LLM calls of the stored runs, oldest run first, counted in ``summary``
    as they are read (run ids may be prefixes or ``last``)."""
    seen: set[str] = set()
    for run_id in run_ids_since(store, since, run_ids):
        summary.runs += 1
        trace = store.get_run(run_id)
        local_only = store.is_local_only(run_id)
        for call, source, started_at in _llm_calls(trace):
            summary.llm_nodes.add(call.node)
            if nodes and call.node not in nodes:
                continue
            reason = _skip_reason(call, trace, local_only=local_only, include_failed_runs=include_failed_runs)
            messages = _messages(call) if reason is None else []
            key = _key(messages)
            if reason is None and key in seen:
                reason = "duplicate"
            if reason is not None:
                summary.skipped[reason] += 1
                continue
            seen.add(key)
            summary.exported += 1
            summary.by_node[call.node] += 1
            summary.redacted += bool(call.redacted)
            yield DistillExample(
                messages=messages,
                run_id=trace.run_id,
                node=call.node,
                model=call.model,
                escalated_from_slm=source is not None,
                escalation_reason=source.escalation_reason if source else None,
                created_at=started_at,
                redacted=list(call.redacted),
            )


def export_distill(
    store: TraceStore,
    out: Path,
    *,
    nodes: Sequence[str] = (),
    since: datetime | None = None,
    run_ids: Sequence[str] = (),
    include_failed_runs: bool = False,
    metadata: bool = True,
    force: bool = False,
) -> DistillSummary:
    """Write the exportable calls to ``out`` as JSON lines, atomically (a temporary file in
    the same directory, renamed); parent directories are created. With nothing to export no
    file is written and ``summary.path`` stays None. The file is readable by its owner only:
    it holds the users' prompts."""
    _check_target(out, force)
    summary = DistillSummary()
    examples = distill_examples(
        store, summary, nodes=nodes, since=since, run_ids=run_ids, include_failed_runs=include_failed_runs
    )
    first = next(examples, None)
    if first is None:
        return summary
    lines = (
        json.dumps(e.to_json(metadata=metadata), ensure_ascii=False)
        for e in itertools.chain([first], examples)
    )
    _write_atomically(out, lines, force)
    summary.path = out
    return summary


def run_ids_since(store: TraceStore, since: datetime | None, run_ids: Sequence[str] = ()) -> list[str]:
    """The stored runs' ids, oldest first: all, or those named (ids, prefixes or ``last``),
    created at or after ``since``."""
    wanted = list(dict.fromkeys(store.resolve_id(run_id) for run_id in run_ids))
    query = select(Run.id).order_by(col(Run.created_at), col(Run.id))
    if wanted:
        query = query.where(col(Run.id).in_(wanted))
    if since is not None:
        query = query.where(col(Run.created_at) >= since.astimezone(UTC))
    with Session(store.engine) as session:
        return [str(run_id) for run_id in session.exec(query).all()]


def _llm_calls(trace: RunTrace) -> Iterator[tuple[StoredModelCall, StoredModelCall | None, datetime]]:
    """Each LLM call with the escalated SLM call it replaced, if any (in the same step, or in
    an earlier step when a tool rejected the SLM's output), and its step's start."""
    escalated: dict[str, StoredModelCall] = {}  # node -> its last SLM call, escalated
    for step in trace.steps:
        for call in step.model_calls:
            if call.tier == "llm":
                yield call, escalated.pop(call.node, None), step.started_at
            elif call.escalated:
                escalated[call.node] = call
            else:
                escalated.pop(call.node, None)


def _skip_reason(
    call: StoredModelCall, trace: RunTrace, *, local_only: bool, include_failed_runs: bool
) -> SkipReason | None:
    if local_only:
        return "local_only"
    if trace.status != "succeeded" and not include_failed_runs:
        return "failed_run"
    if call.error is not None or call.escalated:  # failed, or its output was rejected
        return "error"
    if not call.raw_output or not call.raw_output.strip() or call.parsed is None:
        return "no_output"
    if not call.messages or not all(valid_message(m) for m in call.messages):
        return "malformed"
    return None


def valid_message(message: Any) -> bool:
    return (
        isinstance(message, dict) and message.get("role") in ROLES and isinstance(message.get("content"), str)
    )


def _messages(call: StoredModelCall) -> list[Message]:
    sent: list[Message] = [{"role": m["role"], "content": m["content"]} for m in call.messages]
    return [*sent, {"role": "assistant", "content": call.raw_output or ""}]


def _key(messages: list[Message]) -> str:
    text = json.dumps(messages, ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _iso(moment: datetime) -> str:
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _check_target(out: Path, force: bool) -> None:
    if out.is_dir():
        raise ConfigError(f"{out} is a directory", hint="Give a file path, e.g. --out distill.jsonl.")
    if out.exists() and not force:
        raise ConfigError(
            f"{out} already exists", hint="Add --force to replace it, or give another --out path."
        )


def _write_atomically(out: Path, lines: Iterable[str], force: bool) -> None:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    except OSError as exc:
        raise ConfigError(
            f"cannot write {out}: {exc.strerror}", hint="Give an --out path you can write."
        ) from None
    temporary = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            for line in lines:
                handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        _check_target(out, force)  # appeared while the export ran
        os.replace(temporary, out)
    except OSError as exc:
        raise ConfigError(
            f"cannot write {out}: {exc.strerror}", hint="Give an --out path you can write."
        ) from None
    finally:
        temporary.unlink(missing_ok=True)
