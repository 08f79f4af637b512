"""The spans of a run, for ``tierflow.memory.traces.telemetry`` (see there): what each span holds, how a
step's calls are laid out in time, and the OpenTelemetry SDK that sends them.

Spans are planned as plain ``Span`` objects while the run goes on and made with the SDK when
it finishes. OpenTelemetry is imported only inside the functions that make or send spans,
so a process that never exports loads none of it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from tierflow.secrets import scrub, scrub_value

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Tracer
    from tierflow.records import ModelCallRecord, StepHandle, ToolCallRecord

__all__ = [
    "PROVIDERS",
    "Attributes",
    "Span",
    "run_span",
    "finish_run_span",
    "step_span",
    "mark_call",
    "lay_out",
    "emit",
    "open_provider",
]

PROVIDERS = {"slm": "llama.cpp", "llm": "openai"}  # gen_ai.system of each tier
_EXPORTER_LOG = "opentelemetry.exporter.otlp.proto.http.trace_exporter"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Attributes = dict[str, str | bool | int | float | Sequence[str]]


@dataclass
class Span:
    """A span to make when the run finishes."""

    name: str
    start: datetime
    end: datetime
    attributes: Attributes
    error: str | None = None
    client: bool = False  # a call to a model served by another process
    children: list[Span] = field(default_factory=list)


# What each span holds -------------------------------------------------------------------
def run_span(
    run_id: str, task: str, fields: Mapping[str, Any], *, resumed: bool, content: bool, now: datetime
) -> Span:
    """The root span of a run that began (or was reopened) at ``now``: ``fields`` as
    ``TraceStore.start_run`` got them."""
    attributes: Attributes = {
        "tierflow.run_id": run_id,
        "tierflow.graph": str(fields.get("graph") or "task"),
        "openinference.span.kind": "CHAIN",
    }
    if fields.get("parent_run_id"):
        attributes["tierflow.parent_run_id"] = str(fields["parent_run_id"])
    if resumed:
        attributes["tierflow.resumed"] = True
    if content:
        attributes["input.value"] = scrub(task)
    return Span(str(attributes["tierflow.graph"]), now, now, attributes)


def finish_run_span(root: Span, status: str, *, answer: str | None, error: str | None, content: bool) -> None:
    """Give the root span its outcome, and times that hold all its steps."""
    root.attributes["tierflow.status"] = status
    if status != "succeeded":
        root.error, root.attributes["error.type"] = scrub(error or status), status
    if content and answer is not None:
        root.attributes["output.value"] = scrub(answer)
    root.start = min([root.start, *(step.start for step in root.children)])
    root.end = max([datetime.now(UTC), *(step.end for step in root.children)])


def step_span(
    run_id: str,
    step: StepHandle,
    *,
    status: str,
    error: str | None,
    finished_at: datetime,
    models: Mapping[str, str],
    content: bool,
) -> Span:
    """The span of a step, its model calls (first, in order) and tool calls under it, laid
    end to end from its start. ``models``: the model requested of each tier."""
    attributes: Attributes = {
        "tierflow.run_id": run_id,
        "tierflow.node": step.node,
        "tierflow.step": step.seq,
        "tierflow.status": status,
        "openinference.span.kind": "CHAIN",
    }
    span = Span(step.node, step.started_at, finished_at, attributes, _error(status, error))
    latencies = [c.latency_ms for c in step.calls] + [t.latency_ms for t in step.tools]
    times = iter(lay_out(step.started_at, finished_at, latencies))
    calls = [_model_call(run_id, models, c, *next(times), content=content) for c in step.calls]
    tools = [_tool_call(run_id, step.node, t, *next(times), content=content) for t in step.tools]
    span.children = calls + tools
    return span


def mark_call(call: Span, *, escalation_reason: str | None, refused: str | None) -> None:
    """A later step's verdict on a model call's span."""
    if escalation_reason is not None:
        call.attributes["tierflow.escalated"] = refused is None
        call.attributes["tierflow.escalation_reason"] = scrub(escalation_reason)
    if refused is not None:
        call.attributes["tierflow.escalation_refused"] = refused


def _model_call(
    run_id: str,
    models: Mapping[str, str],
    call: ModelCallRecord,
    start: datetime,
    end: datetime,
    *,
    content: bool,
) -> Span:
    provider = PROVIDERS.get(call.tier, call.tier)
    requested = models.get(call.tier) or call.model
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
        "tierflow.p_wrong": call.p_wrong,
    }
    attributes.update({key: value for key, value in optional.items() if value is not None})
    if content:
        attributes["gen_ai.input.messages"] = _json(
            [{"role": m["role"], "parts": [_text(m["content"])]} for m in call.messages]
        )
        if call.raw_output is not None:
            reply = {"role": "assistant", "parts": [_text(call.raw_output)]}
            attributes["gen_ai.output.messages"] = _json([{**reply, "finish_reason": call.finish_reason}])
    error = _error("failed" if call.error else "succeeded", call.error)
    return Span(f"chat {requested}", start, end, attributes, error, client=call.tier == "llm")


def _tool_call(
    run_id: str, node: str, call: ToolCallRecord, start: datetime, end: datetime, *, content: bool
) -> Span:
    attributes: Attributes = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": call.tool,
        "gen_ai.tool.type": "function",
        "tierflow.run_id": run_id,
        "tierflow.node": node,
        "openinference.span.kind": "TOOL",
    }
    if content:
        attributes["gen_ai.tool.call.arguments"] = _json(call.arguments)
        if call.result is not None:
            attributes["gen_ai.tool.call.result"] = scrub(call.result)
    error = _error("failed" if call.error else "succeeded", call.error)
    return Span(f"execute_tool {call.tool}", start, end, attributes, error)


def lay_out(start: datetime, end: datetime, latencies_ms: Sequence[float]) -> list[tuple[datetime, datetime]]:
    """Spans of these durations end to end from ``start``, none past ``end``."""
    placed, cursor = [], start
    for latency in latencies_ms:
        begin = min(cursor, end)
        cursor = cursor + timedelta(milliseconds=max(latency, 0.0))
        placed.append((begin, min(cursor, end)))
    return placed


# The OpenTelemetry SDK ------------------------------------------------------------------
def emit(tracer: Tracer, span: Span, parent: Context | None = None) -> None:
    """Make ``span`` and those under it (a trace of its own when ``parent`` is None)."""
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
        emit(tracer, child, context)
    made.end(end_time=_ns(span.end))


def open_provider(
    exporter: SpanExporter | None, report: Callable[[str | None], None]
) -> tuple[TracerProvider, SpanExporter]:
    """A tracer provider sending through ``exporter`` (default: OTLP/HTTP as the ``OTEL_*``
    variables say) in batches, and that exporter. ``report`` hears after each export why it
    failed, or None when it got through."""
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        _quiet_exporter_log()
        exporter = OTLPSpanExporter()
    inner = exporter

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
    provider.add_span_processor(BatchSpanProcessor(Reporting()))
    return provider, exporter


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


# Small helpers --------------------------------------------------------------------------
def _error(status: str, error: str | None) -> str | None:
    return scrub(error or "error") if status != "succeeded" else None


def _error_type(error: str) -> str:
    """A short class of error for ``error.type``: the exception's name when the message
    starts with one, else ``_OTHER``."""
    head = error.split(":", 1)[0].strip()
    return head if head.replace(".", "").isidentifier() and head[:1].isupper() else "_OTHER"


def _json(value: Any) -> str:
    return json.dumps(scrub_value(value), ensure_ascii=False, default=str)


def _text(content: str) -> dict[str, str]:
    return {"type": "text", "content": content}


def _ns(moment: datetime) -> int:
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return (aware - _EPOCH) // timedelta(microseconds=1) * 1000
