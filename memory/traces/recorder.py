"""One run's trace writer. A step collects its model and tool calls as typed records and
writes them with the step in one transaction when it ends, so a crash keeps every finished
step; events go to whoever shows progress. Safe for steps that run in parallel (``Send``)."""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Callable, Iterator

from tierflow.errors import RunCancelledError
from tierflow.memory.traces import TraceStore
from tierflow.records import (
    CallRef,
    Event,
    StepFailed,
    StepFinished,
    StepHandle,
    StepStarted,
)

__all__ = ["RunRecorder"]


class RunRecorder:
    def __init__(
        self,
        store: TraceStore,
        run_id: str,
        *,
        on_event: Callable[[Event], None] | None = None,
        first_seq: int = 1,
        cancel: threading.Event | None = None,
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.cancel = cancel  # once set, the run stops before its next step
        self._on_event = on_event
        self._seq = itertools.count(first_seq)
        self._lock = threading.Lock()

    def emit(self, event: Event) -> None:
        if self._on_event is not None:
            self._on_event(event)

    @contextlib.contextmanager
    def step(self, node: str) -> Iterator[StepHandle]:
        if self.cancel is not None and self.cancel.is_set():
            raise RunCancelledError(
                f"the run was cancelled before its step {node!r}",
                hint="Its finished steps are stored; start it again to run it to the end.",
            )
        with self._lock:
            handle = StepHandle(next(self._seq), node)
        self.emit(StepStarted(self.run_id, node))
        try:
            yield handle
        except BaseException as exc:
            error = f"{type(exc).__name__}: {exc}"
            self.store.write_step(self.run_id, handle, status="failed", error=error)
            self.emit(StepFailed(self.run_id, node, str(exc)))
            raise
        self.store.write_step(self.run_id, handle)
        tiers = tuple(call.tier for call in handle.calls)
        self.emit(StepFinished(self.run_id, node, handle.summary, tiers))

    def mark_call(
        self, ref: CallRef, *, escalation_reason: str | None = None, refused: str | None = None
    ) -> None:
        """Mark a stored model call whose output a later step rejected (a tool refused the
        arguments): escalated with ``escalation_reason``, or its escalation ``refused``."""
        self.store.mark_call(self.run_id, ref, escalation_reason=escalation_reason, refused=refused)
