"""A fake OpenAI-compatible server on 127.0.0.1 with the quirks of real endpoints.

Each quirk answers as the real server does (status and error body), so the real ``openai``
client raises what it would raise in production:

* ``refuse_max_tokens``, ``refuse_temperature``: OpenAI's reasoning models (400, ``param`` set);
* ``refuse_max_completion_tokens``: older servers and proxies (400, no ``param``);
* ``refuse_json_schema``: llama-cpp-python's server (500 quoting its validation error);
* ``refuse_tools``: Ollama with a model without tools, or vLLM without a tool parser (400);
* ``refuse_logprobs``: llama-cpp-python's server started with ``--logits_all false`` (500);
* ``context_overflow``: a prompt longer than the server's context (400, llama.cpp's wording).

An SLM server's log-probabilities come back for ``tokens`` (each its text, log-probability
and the most likely tokens) in the shape of ``logprobs_shape``: ``openai``/``vllm``/``ollama``
send each token's ``bytes`` (vLLM writes minus infinity as -9999.0), llama-cpp-python sends no
bytes and lists the chosen token among the top ones, and ``ignored`` (older Ollama versions)
sends none at all.

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
Token = tuple[str, float, list[tuple[str, float]]]
LogprobsShape = Literal["openai", "vllm", "ollama", "llamacpp", "ignored"]


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
LOGPROBS_REFUSED: Answer = (  # llama-cpp-python's server without logits_all
    500,
    {
        "error": {
            "message": "logprobs is not supported for models created with logits_all=False",
            "type": "internal_server_error",
            "param": None,
            "code": None,
        }
    },
)
CONTEXT_OVERFLOW: Answer = (
    400,
    _openai_error("Requested tokens (5000) exceed context window of 4096"),
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
    refuse_logprobs: bool = False
    context_overflow: bool = False
    tokens: list[Token] | None = None  # the reply, token by token, with log-probabilities
    logprobs_shape: LogprobsShape = "openai"
    tokenizer: Literal["llamacpp", "vllm"] | None = None  # which server's endpoint counts tokens

    def _logprobs(self, top_n: int) -> dict[str, Any] | None:
        assert self.tokens is not None
        if self.logprobs_shape == "ignored":
            return None

        def entry(token: str, logprob: float) -> dict[str, Any]:
            if self.logprobs_shape == "llamacpp":
                return {"token": token, "logprob": logprob, "bytes": None}
            if self.logprobs_shape == "vllm" and logprob == float("-inf"):
                logprob = -9999.0
            return {"token": token, "logprob": logprob, "bytes": list(token.encode())}

        content = []
        for token, logprob, top in self.tokens:
            listed = [entry(other, value) for other, value in top[:top_n]]
            if self.logprobs_shape == "llamacpp" and all(other != token for other, _ in top[:top_n]):
                listed.append(entry(token, logprob))  # llama-cpp-python adds the chosen token
            content.append({**entry(token, logprob), "top_logprobs": listed})
        return {"content": content}

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
        if self.refuse_logprobs and body.get("logprobs"):
            return LOGPROBS_REFUSED
        if self.context_overflow:
            return CONTEXT_OVERFLOW
        reply = "".join(token for token, _, _ in self.tokens) if self.tokens is not None else self.reply
        message: dict[str, Any] = {"role": "assistant", "content": reply}
        if "tools" in body and self.tool_call is not None:
            name, arguments = self.tool_call
            call = {"id": "call_1", "type": "function", "function": {"name": name, "arguments": arguments}}
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
        finish = "tool_calls" if "tool_calls" in message else "stop"
        choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": finish}
        if body.get("logprobs") and self.tokens is not None:
            choice["logprobs"] = self._logprobs(int(body.get("top_logprobs") or 0))
        return 200, {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 0,
            "model": self.model,
            "choices": [choice],
            "usage": {"prompt_tokens": 21, "completion_tokens": 7, "total_tokens": 28},
        }


@dataclass
class FakeServer:
    endpoint: Endpoint
    base_url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)  # the JSON bodies, in order
    headers: list[dict[str, str]] = field(default_factory=list)  # names in lower case
    streamed: int = 0  # chunks of streamed replies written
    tokenized: int = 0  # requests to count tokens


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
            if "tokenize" in self.path:
                self._tokenize(body)
                return
            with lock:
                fake.requests.append(body)
                fake.headers.append({name.lower(): value for name, value in self.headers.items()})
                status, answer = fake.endpoint.answer(body)
            if status == 200 and body.get("stream"):
                self._stream(answer, bool((body.get("stream_options") or {}).get("include_usage")))
                return
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _tokenize(self, body: dict[str, Any]) -> None:
            """A token a word, at the path of the server ``tokenizer`` names (404 elsewhere)."""
            paths = {"llamacpp": "/extras/tokenize/count", "vllm": "/tokenize"}
            fake.tokenized += 1
            text = body.get("input") or body.get("prompt") or ""
            found = paths.get(fake.endpoint.tokenizer or "") == self.path
            count = len(text.split())
            answer = (
                ({"count": count} if fake.endpoint.tokenizer == "llamacpp" else {"tokens": [1] * count})
                if found
                else {"detail": "Not Found"}
            )
            data = json.dumps(answer).encode()
            self.send_response(200 if found else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _stream(self, answer: dict[str, Any], usage: bool) -> None:
            """``answer`` as server-sent events, a token a chunk (as vLLM and llama.cpp do)."""
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            choice = answer["choices"][0]
            content = (choice.get("logprobs") or {}).get("content")
            pieces = (
                [item["token"] for item in content] if content else list(choice["message"]["content"] or "")
            )
            head = {k: answer[k] for k in ("id", "created", "model")} | {"object": "chat.completion.chunk"}
            chunks = []
            for index, piece in enumerate(pieces):
                delta = {"index": 0, "delta": {"content": piece}, "finish_reason": None}
                if content:
                    delta["logprobs"] = {"content": [content[index]]}
                chunks.append({**head, "choices": [delta]})
            chunks.append(
                {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": choice["finish_reason"]}]}
            )
            if usage:
                chunks.append({**head, "choices": [], "usage": answer["usage"]})
            try:
                for chunk in chunks:
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                    fake.streamed += 1
                self.wfile.write(b"data: [DONE]\n\n")
            except (BrokenPipeError, ConnectionResetError):  # the client stopped reading
                pass
            self.close_connection = True

    with serving(Handler) as url:
        fake.base_url = f"{url}/v1"
        yield fake
