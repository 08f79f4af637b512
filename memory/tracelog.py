"""A run's trace writes, kept in order so that another process can store them: a batch
worker (a child process or a Ray actor on another machine) runs a document's graph with a
``TraceLog``; the driver, which owns the database, replays the writes into its
``TraceStore`` when the document finishes. Given an ``inner`` store, the writes also go
straight to it (a worker in the driver's own process)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tierflow.memory.recorder import StepHandle
from tierflow.memory.records import CallRef, ModelCallRecord
from tierflow.memory.traces import TraceStore
from tierflow.secrets import scrub_value

__all__ = ["TraceLog", "TraceWrite", "replay"]


@dataclass(frozen=True)
class TraceWrite:
    """One call to a ``TraceStore`` writer: its name and arguments."""

    method: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)


class TraceLog(TraceStore):
    """A ``TraceStore`` for one process's runs whose writes are kept (see the module)."""

    def __init__(self, inner: TraceStore | None = None) -> None:  # no engine of its own
        self.inner = inner
        self.writes: list[TraceWrite] = []

    def _keep(self, method: str, *args: Any, **kwargs: Any) -> None:
        self.writes.append(TraceWrite(method, args, kwargs))
        if self.inner is not None:
            getattr(self.inner, method)(*args, **kwargs)

    def scrub(self, value: Any) -> Any:
        return scrub_value(value)

    def start_run(self, task: str, **fields: Any) -> str:
        run_id = str(fields.pop("id", None) or uuid.uuid4().hex[:16])
        self._keep("start_run", task, id=run_id, **fields)
        return run_id

    def write_step(
        self, run_id: str, step: StepHandle, *, status: str = "ok", error: str | None = None
    ) -> int:
        self._keep("write_step", run_id, step, status=status, error=error)
        return step.seq

    def mark_call(
        self, run_id: str, ref: CallRef, *, escalation_reason: str | None = None, refused: str | None = None
    ) -> None:
        self._keep("mark_call", run_id, ref, escalation_reason=escalation_reason, refused=refused)

    def finish_run(
        self, run_id: str, status: str, *, answer: str | None = None, error: str | None = None
    ) -> None:
        self._keep("finish_run", run_id, status, answer=answer, error=error)

    def resolve_id(self, run_id: str) -> str:
        return run_id

    def model_calls(self) -> list[ModelCallRecord]:
        """Every model call of the steps written so far, in order."""
        return [call for write in self.writes if write.method == "write_step" for call in write.args[1].calls]


def replay(store: TraceStore, writes: Sequence[TraceWrite]) -> None:
    """Store a ``TraceLog``'s writes, in order."""
    for write in writes:
        getattr(store, write.method)(*write.args, **write.kwargs)
