"""A local OTLP/HTTP trace receiver for tests: it accepts ``POST /v1/traces`` on 127.0.0.1,
decodes the protobuf request, and keeps the spans with their resource attributes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tests.local_http import serving


@dataclass(frozen=True)
class ReceivedSpan:
    """One received span, its ids as hex and its attributes as Python values."""

    name: str
    trace_id: str
    span_id: str
    parent_id: str  # "" for a trace's root
    kind: int  # Span.SpanKind
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    error: str | None  # the status message when the status is ERROR
    resource: dict[str, Any]


def _value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which == "array_value":
        return [_value(item) for item in value.array_value.values]
    return getattr(value, which) if which else None


def _span(span: Span, resource: dict[str, Any]) -> ReceivedSpan:
    failed = span.status.code == Status.STATUS_CODE_ERROR
    return ReceivedSpan(
        name=span.name,
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_id=span.parent_span_id.hex(),
        kind=span.kind,
        start_ns=span.start_time_unix_nano,
        end_ns=span.end_time_unix_nano,
        attributes={kv.key: _value(kv.value) for kv in span.attributes},
        error=span.status.message if failed else None,
        resource=resource,
    )


class Receiver:
    def __init__(self) -> None:
        self.requests: list[bytes] = []  # the raw bodies, to look for text that must not be there
        self.spans: list[ReceivedSpan] = []
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self.url = ""

    def receive(self, body: bytes, headers: dict[str, str]) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        spans = [
            _span(span, {kv.key: _value(kv.value) for kv in group.resource.attributes})
            for group in request.resource_spans
            for scope in group.scope_spans
            for span in scope.spans
        ]
        with self._lock:
            self.requests.append(body)
            self.headers.append(headers)
            self.spans.extend(spans)

    def traces(self) -> dict[str, list[ReceivedSpan]]:
        """The spans received, by trace id."""
        grouped: dict[str, list[ReceivedSpan]] = {}
        for span in self.spans:
            grouped.setdefault(span.trace_id, []).append(span)
        return grouped


@contextmanager
def serve() -> Iterator[Receiver]:
    """A receiver listening on a free port of 127.0.0.1 (``receiver.url`` is its base URL)."""
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path != "/v1/traces":
                self.send_error(404)
                return
            receiver.receive(body, {key.lower(): value for key, value in self.headers.items()})
            reply = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

    with serving(Handler) as url:
        receiver.url = url
        yield receiver
