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
import json
import logging
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from tierflow import __version__
from tierflow.secrets import scrub, scrub_value

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Tracer
    from tierflow.memory.recorder import StepHandle
    from tierflow.memory.records import CallRef, ModelCallRecord, ToolCallRecord

__all__ = ["RunTelemetry", "ENDPOINT_VARIABLES", "CONTENT_VARIABLE", "PROVIDERS"]

logger = logging.getLogger(__name__)

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
CONTENT_VARIABLE = "TIERFLOW_OTEL_CONTENT"
PROVIDERS = {"slm": "llama.cpp", "llm": "openai"}  # gen_ai.system of each tier
FLUSH_WAIT_S = 3.0  # the longest a run's end waits for its spans to be sent
_EXPORTER_LOG = "opentelemetry.exporter.otlp.proto.http.trace_exporter"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Attributes = dict[str, str | bool | int | float | Sequence[str]]


@dataclass
class _Span:
    """A span to make when the run finishes."""

    name: str
    start: datetime
    end: datetime
    attributes: Attributes
    error: str | None = None
    client: bool = False  # a call to a model served by another process
    children: list[_Span] = field(default_factory=list)


@dataclass
class _Run:
    root: _Span
    models: dict[str, str]  # the model requested of each tier
    calls: dict[tuple[int, int], _Span] = field(default_factory=dict)  # by (step seq, index)


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
            now = datetime.now(UTC)
            attributes: Attributes = {
                "tierflow.run_id": run_id,
                "tierflow.graph": str(fields.get("graph") or "task"),
                "openinference.span.kind": "CHAIN",
            }
            if fields.get("parent_run_id"):
                attributes["tierflow.parent_run_id"] = str(fields["parent_run_id"])
            if resumed:
                attributes["tierflow.resumed"] = True
            if self.content:
                attributes["input.value"] = scrub(task)
            models = {tier: str(fields.get(f"{tier}_model") or "") for tier in PROVIDERS}
            root = _Span(str(attributes["tierflow.graph"]), now, now, attributes)
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
            attributes: Attributes = {
                "tierflow.run_id": run_id,
                "tierflow.node": step.node,
                "tierflow.step": step.seq,
                "tierflow.status": status,
                "openinference.span.kind": "CHAIN",
            }
            span = _Span(step.node, step.started_at, finished_at, attributes, _error(status, error))
            latencies = [c.latency_ms for c in step.calls] + [t.latency_ms for t in step.tools]
            times = iter(_lay_out(step.started_at, finished_at, latencies))
            calls = [self._model_call(run_id, run, c, *next(times)) for c in step.calls]
            tools = [self._tool_call(run_id, step.node, t, *next(times)) for t in step.tools]
            span.children = calls + tools
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
                if escalation_reason is not None:
                    call.attributes["tierflow.escalated"] = refused is None
                    call.attributes["tierflow.escalation_reason"] = scrub(escalation_reason)
                if refused is not None:
                    call.attributes["tierflow.escalation_refused"] = refused

    def run_finished(self, run_id: str, status: str, *, answer: str | None, error: str | None) -> None:
        """Make the run's spans and flush them."""
        with self._safely():
            with self._lock:
                run = self._runs.pop(run_id, None)
            if run is None:
                return
            root = run.root
            root.attributes["tierflow.status"] = status
            if status != "succeeded":
                root.error, root.attributes["error.type"] = scrub(error or status), status
            if self.content and answer is not None:
                root.attributes["output.value"] = scrub(answer)
            root.start = min([root.start, *(step.start for step in root.children)])
            root.end = max([datetime.now(UTC), *(step.end for step in root.children)])
            _emit(self._tracer(), root, None)
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

    # Spans --------------------------------------------------------------------------------
    def _model_call(
        self, run_id: str, run: _Run, call: ModelCallRecord, start: datetime, end: datetime
    ) -> _Span:
        provider = PROVIDERS.get(call.tier, call.tier)
        requested = run.models.get(call.tier) or call.model
        attributes: Attributes = {
            "gen_ai.operation.name": "chat",
            "gen_ai.system": provider,
            "gen_ai.provider.name": provider,  # the name newer conventions use
            "gen_ai.request.model": requested,
            "gen_ai.response.model": call.model,
            "gen_ai.usage.input_tokens": call.prompt_tokens,
            "gen_ai.usage.output_tokens": call.completion_tokens,
            "tierflow.run_id": run_id,
            "tierflow.node": call.node,
            "tierflow.tier": call.tier,
            "tierflow.escalated": call.escalated,
            "openinference.span.kind": "LLM",
        }
        optional: dict[str, Any] = {
            "gen_ai.request.max_tokens": call.max_tokens,
            "gen_ai.response.finish_reasons": [call.finish_reason] if call.finish_reason else None,
            "tierflow.escalation_reason": scrub(call.escalation_reason or "") or None,
            "tierflow.escalation_refused": call.escalation_refused,
            "tierflow.confidence": call.confidence,
            "tierflow.score": call.score,
        }
        attributes.update({key: value for key, value in optional.items() if value is not None})
        if self.content:
            attributes["gen_ai.input.messages"] = _json(
                [{"role": m["role"], "parts": [_text(m["content"])]} for m in call.messages]
            )
            if call.raw_output is not None:
                reply = {"role": "assistant", "parts": [_text(call.raw_output)]}
                attributes["gen_ai.output.messages"] = _json([{**reply, "finish_reason": call.finish_reason}])
        error = _error("error" if call.error else "ok", call.error)
        return _Span(f"chat {requested}", start, end, attributes, error, client=call.tier == "llm")

    def _tool_call(
        self, run_id: str, node: str, call: ToolCallRecord, start: datetime, end: datetime
    ) -> _Span:
        attributes: Attributes = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": call.tool,
            "gen_ai.tool.type": "function",
            "tierflow.run_id": run_id,
            "tierflow.node": node,
            "openinference.span.kind": "TOOL",
        }
        if self.content:
            attributes["gen_ai.tool.call.arguments"] = _json(call.arguments)
            if call.result is not None:
                attributes["gen_ai.tool.call.result"] = scrub(call.result)
        error = _error("error" if call.error else "ok", call.error)
        return _Span(f"execute_tool {call.tool}", start, end, attributes, error)

    # The OpenTelemetry pipeline -------------------------------------------------------------
    def _tracer(self) -> Tracer:
        with self._lock:
            if self._provider is None:
                self._provider = self._open_provider()
            return self._provider.get_tracer("tierflow", __version__)

    def _open_provider(self) -> TracerProvider:
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

        if self._exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            _quiet_exporter_log()
            self._exporter = OTLPSpanExporter()
        inner, report = self._exporter, self._report

        class Reporting(SpanExporter):
            """The exporter, telling the telemetry whether each export got through."""

            def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
                try:
                    result = inner.export(spans)
                except Exception as exc:  # noqa: BLE001 - an exporter's failure must not escape
                    report(str(exc) or type(exc).__name__)
                    return SpanExportResult.FAILURE
                report(None if result is SpanExportResult.SUCCESS else _LOG_FILTER.take())
                return result

            def shutdown(self) -> None:
                inner.shutdown()

            def force_flush(self, timeout_millis: int = 30000) -> bool:
                return inner.force_flush(timeout_millis)

        resource = Resource.create()
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: "tierflow"}))
        provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        atexit.register(self.close)
        provider.add_span_processor(BatchSpanProcessor(Reporting()))
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


def _emit(tracer: Tracer, span: _Span, parent: Context | None) -> None:
    from opentelemetry.context import Context
    from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context

    made = tracer.start_span(
        span.name,
        context=parent or Context(),  # a run is a trace of its own, whatever is current
        kind=SpanKind.CLIENT if span.client else SpanKind.INTERNAL,
        attributes=span.attributes,
        start_time=_ns(span.start),
    )
    if span.error is not None:
        made.set_status(Status(StatusCode.ERROR, span.error))
        if "error.type" not in span.attributes:
            made.set_attribute("error.type", _error_type(span.error))
    context = set_span_in_context(made)
    for child in span.children:
        _emit(tracer, child, context)
    made.end(end_time=_ns(span.end))


def _lay_out(
    start: datetime, end: datetime, latencies_ms: Sequence[float]
) -> list[tuple[datetime, datetime]]:
    """Spans of these durations end to end from ``start``, none past ``end``."""
    placed, cursor = [], start
    for latency in latencies_ms:
        begin = min(cursor, end)
        cursor = cursor + timedelta(milliseconds=max(latency, 0.0))
        placed.append((begin, min(cursor, end)))
    return placed


class _ExporterLogFilter(logging.Filter):
    """Keeps the OTLP exporter's failure messages (the first and the last of an export) for
    tierflow's one warning, instead of logging them for every failed batch."""

    def __init__(self) -> None:
        super().__init__()
        self._messages: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        self._messages[1:] = [scrub(record.getMessage())]
        return False

    def take(self) -> str:
        """Why the last export failed, as the exporter logged it; forgets it."""
        messages, self._messages = self._messages, []
        return " ".join(dict.fromkeys(messages)) or "the collector did not accept the spans"


_LOG_FILTER = _ExporterLogFilter()


def _quiet_exporter_log() -> None:
    exporter_log = logging.getLogger(_EXPORTER_LOG)
    if _LOG_FILTER not in exporter_log.filters:
        exporter_log.addFilter(_LOG_FILTER)


def _error(status: str, error: str | None) -> str | None:
    return scrub(error or "error") if status != "ok" else None


def _error_type(error: str) -> str:
    """A short class of error for ``error.type``: the exception's name when the message
    starts with one, else ``_OTHER``."""
    head = error.split(":", 1)[0].strip()
    return head if head.replace(".", "").isidentifier() and head[:1].isupper() else "_OTHER"


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _json(value: Any) -> str:
    return json.dumps(scrub_value(value), ensure_ascii=False, default=str)


def _text(content: str) -> dict[str, str]:
    return {"type": "text", "content": content}


def _ns(moment: datetime) -> int:
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return (aware - _EPOCH) // timedelta(microseconds=1) * 1000
