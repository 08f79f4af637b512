"""One run's trace writer: the step being executed, its model and tool calls, and events
for whoever shows progress (the CLI's spinner, the console's live view)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from tierflow.memory.traces import TraceStore

__all__ = ["RunRecorder", "StepHandle", "Event"]

Event = dict[str, Any]


@dataclass
class StepHandle:
    id: int
    node: str
    summary: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


class RunRecorder:
    def __init__(
        self, store: TraceStore, run_id: str, *, on_event: Callable[[Event], None] | None = None
    ) -> None:
        self.store = store
        self.run_id = run_id
        self._on_event = on_event
        self._step: StepHandle | None = None

    def emit(self, kind: str, **data: Any) -> None:
        if self._on_event is not None:
            self._on_event({"kind": kind, "run_id": self.run_id, **data})

    @contextlib.contextmanager
    def step(self, node: str) -> Iterator[StepHandle]:
        handle = StepHandle(self.store.start_step(self.run_id, node), node)
        self._step = handle
        self.emit("step_started", node=node)
        try:
            yield handle
        except BaseException as exc:
            self.store.finish_step(handle.id, status="error", error=f"{type(exc).__name__}: {exc}")
            self.emit("step_failed", node=node, error=str(exc))
            raise
        finally:
            self._step = None
        self.store.finish_step(handle.id, summary=handle.summary)
        self.emit("step_finished", node=node, summary=handle.summary, **handle.data)

    def model_call(self, **fields: Any) -> int:
        step_id = self._step.id if self._step else None
        call_id = self.store.record_model_call(run_id=self.run_id, step_id=step_id, **fields)
        if self._step is not None:
            self._step.data.setdefault("tiers", []).append(fields.get("tier"))
        return call_id

    def mark_escalated(self, call_id: int, reason: str) -> None:
        self.store.mark_escalated(call_id, reason)

    def tool_call(self, **fields: Any) -> int:
        step_id = self._step.id if self._step else None
        return self.store.record_tool_call(run_id=self.run_id, step_id=step_id, **fields)
