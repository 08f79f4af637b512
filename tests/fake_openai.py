"""A fake OpenAI-compatible server on 127.0.0.1 with the quirks of real endpoints.

Each quirk answers as the real server does (status and error body), so the real ``openai``
client raises what it would raise in production:

* ``refuse_max_tokens``, ``refuse_temperature``: OpenAI's reasoning models (400, ``param`` set);
* ``refuse_max_completion_tokens``: older servers and proxies (400, no ``param``);
* ``refuse_json_schema``: llama-cpp-python's server (500 quoting its validation error);
* ``refuse_tools``: Ollama with a model without tools, or vLLM without a tool parser (400).

Otherwise it answers with ``tool_call`` (to a request with ``tools``) or with ``reply``, and
``fail`` answers every request with one status and body. It keeps every request.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Literal

from tests.local_http import serving

__all__ = ["Endpoint", "FakeServer", "fake_openai"]

Answer = tuple[int, dict[str, Any]]


def _openai_error(message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}


MAX_TOKENS_REFUSED: Answer = (
    400,
    _openai_error(
        "Unsupported parameter: 'max_tokens' is not supported with this model. "
        "Use 'max_completion_tokens' instead.",
        "max_tokens",
        "unsupported_parameter",
    ),
)
TEMPERATURE_REFUSED: Answer = (
    400,
    _openai_error(
        "Unsupported value: 'temperature' does not support 0 with this model. "
        "Only the default (1) value is supported.",
        "temperature",
        "unsupported_value",
    ),
)
MAX_COMPLETION_TOKENS_REFUSED: Answer = (
    400,
    _openai_error("Unrecognized request argument supplied: max_completion_tokens"),
)
JSON_SCHEMA_REFUSED: Answer = (  # llama-cpp-python: FastAPI's validation error, wrapped as a 500
    500,
    {
        "error": {
            "message": "1 validation error:\n  {'type': 'literal_error', 'loc': ('response_format', "
            "'type'), 'msg': \"Input should be 'text' or 'json_object'\", 'input': 'json_schema'}",
            "type": "internal_server_error",
            "param": None,
            "code": None,
        }
    },
)
TOOLS_REFUSED: dict[str, Answer] = {
    "ollama": (
        400,
        {
            "error": {
                "message": "registry.ollama.ai/library/gemma:2b does not support tools",
                "type": "api_error",
                "param": None,
                "code": None,
            }
        },
    ),
    "vllm": (
        400,
        {
            "object": "error",
            "message": '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser '
            "to be set",
            "type": "BadRequestError",
            "param": None,
            "code": 400,
        },
    ),
}


@dataclass
class Endpoint:
    """How the fake server behaves."""

    refuse_max_tokens: bool = False
    refuse_max_completion_tokens: bool = False
    refuse_temperature: bool = False
    refuse_json_schema: bool = False
    refuse_tools: Literal["ollama", "vllm"] | None = None
    tool_call: tuple[str, str] | None = None  # (name, raw arguments) to a request with tools
    reply: str = "ok"
    fail: Answer | None = None
    model: str = "served-model"

    def answer(self, body: dict[str, Any]) -> Answer:
        if self.fail is not None:
            return self.fail
        if self.refuse_max_tokens and "max_tokens" in body:
            return MAX_TOKENS_REFUSED
        if self.refuse_max_completion_tokens and "max_completion_tokens" in body:
            return MAX_COMPLETION_TOKENS_REFUSED
        if self.refuse_temperature and body.get("temperature", 1) != 1:
            return TEMPERATURE_REFUSED
        if self.refuse_json_schema and body.get("response_format", {}).get("type") == "json_schema":
            return JSON_SCHEMA_REFUSED
        if self.refuse_tools and "tools" in body:
            return TOOLS_REFUSED[self.refuse_tools]
        message: dict[str, Any] = {"role": "assistant", "content": self.reply}
        if "tools" in body and self.tool_call is not None:
            name, arguments = self.tool_call
            call = {"id": "call_1", "type": "function", "function": {"name": name, "arguments": arguments}}
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
        finish = "tool_calls" if "tool_calls" in message else "stop"
        return 200, {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 0,
            "model": self.model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 21, "completion_tokens": 7, "total_tokens": 28},
        }


@dataclass
class FakeServer:
    endpoint: Endpoint
    base_url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)  # the JSON bodies, in order
    headers: list[dict[str, str]] = field(default_factory=list)  # names in lower case


@contextmanager
def fake_openai(endpoint: Endpoint | None = None) -> Iterator[FakeServer]:
    """The fake server on a free port of 127.0.0.1, for the ``with`` block."""
    fake = FakeServer(endpoint or Endpoint())
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            with lock:
                fake.requests.append(body)
                fake.headers.append({name.lower(): value for name, value in self.headers.items()})
                status, answer = fake.endpoint.answer(body)
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    with serving(Handler) as url:
        fake.base_url = f"{url}/v1"
        yield fake
