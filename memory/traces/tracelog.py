"""A run's trace writes, kept in order so that another process can store them: a batch
worker (a child process or a Ray actor on another machine) runs a document's graph on a
store with a ``TraceLog`` listening; the driver, which owns the database, replays the writes
into its ``TraceStore`` when the document finishes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tierflow.memory.traces.store import TraceStore
from tierflow.records import CallRef, ModelCallRecord, StepHandle

__all__ = ["TraceLog", "TraceWrite", "replay"]


@dataclass(frozen=True)
class TraceWrite:
    """One call to a ``TraceStore`` writer: its name and arguments."""

    method: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)


class TraceLog:
    """A ``TraceListener`` that keeps the writes it sees, as the ``TraceStore`` calls that
    store them again (``replay``)."""

    def __init__(self) -> None:
        self.writes: list[TraceWrite] = []

    def run_started(
        self, run_id: str, task: str, fields: Mapping[str, Any], *, resumed: bool = False
    ) -> None:
        self.writes.append(TraceWrite("start_run", (task,), {"id": run_id, **fields}))

    def step_written(
        self, run_id: str, step: StepHandle, *, status: str, error: str | None, finished_at: datetime
    ) -> None:
        self.writes.append(TraceWrite("write_step", (run_id, step), {"status": status, "error": error}))

    def call_marked(
        self, run_id: str, ref: CallRef, *, escalation_reason: str | None, refused: str | None
    ) -> None:
        kwargs = {"escalation_reason": escalation_reason, "refused": refused}
        self.writes.append(TraceWrite("mark_call", (run_id, ref), kwargs))

    def run_finished(self, run_id: str, status: str, *, answer: str | None, error: str | None) -> None:
        self.writes.append(TraceWrite("finish_run", (run_id, status), {"answer": answer, "error": error}))

    @property
    def run_id(self) -> str | None:
        """The id of the run it saw start (``None`` before one did)."""
        started = [write for write in self.writes if write.method == "start_run"]
        return str(started[0].kwargs["id"]) if started else None

    def model_calls(self) -> list[ModelCallRecord]:
        """Every model call of the steps written so far, in order."""
        return [call for write in self.writes if write.method == "write_step" for call in write.args[1].calls]


def replay(store: TraceStore, writes: Sequence[TraceWrite]) -> None:
    """Store a ``TraceLog``'s writes, in order."""
    for write in writes:
        getattr(store, write.method)(*write.args, **write.kwargs)
