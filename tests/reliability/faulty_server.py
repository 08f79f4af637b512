"""A real OpenAI-compatible HTTP server on 127.0.0.1 that misbehaves on purpose.

Each request takes the next ``Fault`` from the queue (the last one repeats); a fault says
what the response is: status, headers, body, a delay before answering, or a connection
cut after part of the body. With no fault queued it answers a valid chat completion.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Fault", "FaultyServer", "completion", "faulty_server"]


def completion(text: str = '{"steps": [], "answer": "ok"}', model: str = "faulty") -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


@dataclass
class Fault:
    status: int = 200
    body: bytes | dict[str, Any] | None = None  # None: a valid completion
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    cut_after: int | None = None  # send this many bytes of the body, then drop the connection
    drip_s: float = 0.0  # send the body one byte at a time, this long apart


class FaultyServer:
    def __init__(self) -> None:
        self.faults: list[Fault] = []
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                self._send(Fault(body={"object": "list", "data": [{"id": "faulty", "object": "model"}]}))

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                payload = json.loads(self.rfile.read(length) or b"{}")
                seen = {"path": self.path, "body": payload, "headers": dict(self.headers)}
                with server._lock:
                    server.requests.append({**seen, "at": time.monotonic()})
                    fault = server.next_fault()
                self._send(fault)

            def _send(self, fault: Fault) -> None:
                if fault.delay_s:
                    time.sleep(fault.delay_s)
                body = fault.body if fault.body is not None else completion()
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                try:
                    self.send_response(fault.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in fault.headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    if fault.drip_s:
                        for byte in data:
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                            time.sleep(fault.drip_s)
                        return
                    if fault.cut_after is not None:
                        self.wfile.write(data[: fault.cut_after])
                        self.wfile.flush()
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def next_fault(self) -> Fault:
        """The next queued fault; the last one repeats; none queued: a valid answer."""
        if len(self.faults) > 1:
            return self.faults.pop(0)
        return self.faults[0] if self.faults else Fault()

    def start(self) -> FaultyServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def faulty_server(*faults: Fault) -> Iterator[FaultyServer]:
    server = FaultyServer().start()
    server.faults = list(faults)
    try:
        yield server
    finally:
        server.close()
