"""OpenTelemetry export of runs, for Langfuse, Arize Phoenix or any OTLP backend.

Each run is a trace: a root span named after the run's graph, a span per step (named after
its node), and under each step a span per model call, following the OpenTelemetry GenAI
semantic conventions (``gen_ai.operation.name`` ``chat``, provider, models, token usage,
finish reason), and per tool call (``execute_tool``), with tierflow's own attributes
(``tierflow.tier``, ``tierflow.escalated``, ``tierflow.escalation_reason``, ...). A failed
step, call or run has the status ERROR.

The export is off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set; off, tierflow imports nothing of
OpenTelemetry. On, spans go by OTLP/HTTP as the standard ``OTEL_*`` variables say (headers,
timeout, service name, sampler), through a batch processor.

A run's spans are made when it finishes, from what its trace recorded: the real start and
end of the run and of each step; a step's model calls, of which only the latency is known,
are laid end to end from the step's start, its tool calls after them. Made at the end, a
call's span also carries a later step's verdict on it (escalated, or the escalation
refused), and a batch worker's trace replayed into the driver's store is exported like any
other. The spans are sent before the run returns (waiting ``FLUSH_WAIT_S`` at most; what a
slow collector has not taken yet goes in the background, and at the latest when the process
exits), so a CLI that exits loses none.

Prompts and replies are not exported: traces hold users' data. ``TIERFLOW_OTEL_CONTENT=true``
adds them (the messages, the task and answer, tool arguments and results), scrubbed of
secrets. A failing exporter (collector down, wrong credentials) never fails a run: one
warning is logged and runs go on.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from tierflow.memory.traces.otel_spans import (
    PROVIDERS,
    Span,
    emit,
    finish_run_span,
    mark_call,
    open_provider,
    run_span,
    step_span,
)
from tierflow.version import __version__

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Tracer
    from tierflow.records import CallRef, StepHandle

__all__ = ["RunTelemetry", "ENDPOINT_VARIABLES", "CONTENT_VARIABLE", "PROVIDERS"]

logger = logging.getLogger(__name__)

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
CONTENT_VARIABLE = "TIERFLOW_OTEL_CONTENT"
FLUSH_WAIT_S = 3.0  # the longest a run's end waits for its spans to be sent


@dataclass
class _Run:
    root: Span
    models: dict[str, str]  # the model requested of each tier
    calls: dict[tuple[int, int], Span] = field(default_factory=dict)  # by (step seq, index)


class RunTelemetry:
    """Turns the trace writes of a ``TraceStore`` into OpenTelemetry spans (see the module).

    ``exporter``: where spans go (default: OTLP/HTTP as the ``OTEL_*`` variables say, made on
    the first run); ``content``: also export prompts, replies and tool arguments."""

    def __init__(self, *, endpoint: str, content: bool = False, exporter: SpanExporter | None = None) -> None:
        self.endpoint = endpoint
        self.content = content
        self._exporter = exporter
        self._provider: TracerProvider | None = None
        self._runs: dict[str, _Run] = {}
        self._lock = threading.Lock()
        self._warned = False
        self._failing = False  # the last export failed: a run's end does not wait on the next
        self._flushing: threading.Thread | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RunTelemetry | None:
        """The export the environment asks for, or ``None`` when no OTLP endpoint is set (or
        ``OTEL_SDK_DISABLED=true``)."""
        env = os.environ if environ is None else environ
        if _truthy(env.get("OTEL_SDK_DISABLED")):
            return None
        traces, base = (env.get(name, "").strip() for name in ENDPOINT_VARIABLES)
        if not (traces or base):
            return None
        endpoint = traces or f"{base.removesuffix('/')}/v1/traces"
        return cls(endpoint=endpoint, content=_truthy(env.get(CONTENT_VARIABLE)))

    # What the store calls -------------------------------------------------------------
    def run_started(
        self, run_id: str, task: str, fields: Mapping[str, Any], *, resumed: bool = False
    ) -> None:
        """A run began (or a stopped one was reopened): ``fields`` as ``TraceStore.start_run``
        got them (``graph``, ``slm_model``, ``llm_model``, ``parent_run_id``)."""
        with self._safely():
            root = run_span(
                run_id, task, fields, resumed=resumed, content=self.content, now=datetime.now(UTC)
            )
            models = {tier: str(fields.get(f"{tier}_model") or "") for tier in PROVIDERS}
            with self._lock:
                self._runs[run_id] = _Run(root, models)

    def step_written(
        self, run_id: str, step: StepHandle, *, status: str, error: str | None, finished_at: datetime
    ) -> None:
        with self._safely():
            with self._lock:
                run = self._runs.get(run_id)
            if run is None:
                return
            span = step_span(
                run_id,
                step,
                status=status,
                error=error,
                finished_at=finished_at,
                models=run.models,
                content=self.content,
            )
            calls = span.children[: len(step.calls)]  # its model calls, before its tool calls
            with self._lock:
                run.root.children.append(span)
                run.calls.update({(step.seq, index): call for index, call in enumerate(calls)})

    def call_marked(
        self, run_id: str, ref: CallRef, *, escalation_reason: str | None, refused: str | None
    ) -> None:
        """A later step's verdict on a call (as ``TraceStore.mark_call`` stores it)."""
        with self._safely():
            with self._lock:
                run = self._runs.get(run_id)
                call = run.calls.get((ref.step_seq, ref.index)) if run else None
                if call is None:
                    return
                mark_call(call, escalation_reason=escalation_reason, refused=refused)

    def run_finished(self, run_id: str, status: str, *, answer: str | None, error: str | None) -> None:
        """Make the run's spans and flush them."""
        with self._safely():
            with self._lock:
                run = self._runs.pop(run_id, None)
            if run is None:
                return
            finish_run_span(run.root, status, answer=answer, error=error, content=self.content)
            emit(self._tracer(), run.root)
            self._flush()

    def close(self) -> None:
        """Send what is left and stop the exporter; done when the process exits. A collector
        that fails, or is still busy after ``FLUSH_WAIT_S``, is not waited on any longer."""
        if self._provider is None:
            return
        atexit.unregister(self.close)
        if self._flushing is not None:
            self._flushing.join(FLUSH_WAIT_S)
        if self._failing or self._flush_pending():
            assert self._exporter is not None
            self._exporter.shutdown()  # stops its retries now
        self._provider.shutdown()

    def _flush(self) -> None:
        """Send the spans made so far, waiting ``FLUSH_WAIT_S`` at most (the rest goes in the
        background); no wait while the collector fails or the last flush is under way."""
        if self._failing or self._flush_pending():
            return
        assert self._provider is not None
        self._flushing = threading.Thread(
            target=self._provider.force_flush, name="tierflow-otel-flush", daemon=True
        )
        self._flushing.start()
        self._flushing.join(FLUSH_WAIT_S)

    def _flush_pending(self) -> bool:
        return self._flushing is not None and self._flushing.is_alive()

    # The OpenTelemetry pipeline -------------------------------------------------------------
    def _tracer(self) -> Tracer:
        with self._lock:
            if self._provider is None:
                self._provider = self._open_provider()
            return self._provider.get_tracer("tierflow", __version__)

    def _open_provider(self) -> TracerProvider:
        provider, self._exporter = open_provider(self._exporter, self._report)
        atexit.register(self.close)
        return provider

    def _report(self, failure: str | None) -> None:
        self._failing = failure is not None
        if failure is not None:
            self._warn(failure)

    def _warn(self, reason: str) -> None:
        if self._warned:
            return
        self._warned = True
        logger.warning(
            "tierflow cannot export run traces to %s (%s); runs go on without the export, and this "
            "warning is not repeated. Check OTEL_EXPORTER_OTLP_ENDPOINT and OTEL_EXPORTER_OTLP_HEADERS, "
            "or unset OTEL_EXPORTER_OTLP_ENDPOINT to turn the export off.",
            self.endpoint,
            reason,
        )

    @contextlib.contextmanager
    def _safely(self) -> Iterator[None]:
        try:
            yield
        except ImportError as exc:
            self._warn(f"{exc}; install it with: pip install 'tierflow[otel]'")
        except Exception as exc:  # noqa: BLE001 - the export must never fail a run
            self._warn(f"{type(exc).__name__}: {exc}")


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")
