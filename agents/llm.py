"""The large tier: any OpenAI-compatible endpoint through the ``openai`` client.

Endpoints differ in what they take, and this adapter copes with four differences:

* **structured output**: OpenAI, vLLM and Ollama take ``{"type": "json_schema", ...}``;
  llama.cpp's servers take ``{"type": "json_object", "schema": ...}`` (llama-cpp-python's
  refuses the first form). ``response_format`` picks the form; ``auto`` starts with
  json_schema. The caller validates the output either way.
* **the token cap**: OpenAI's reasoning models (o1, o3, o4, gpt-5) refuse ``max_tokens`` and
  take ``max_completion_tokens``, which llama-cpp-python's server ignores (leaving the output
  uncapped). ``token_parameter="auto"`` picks by endpoint and model name.
* **sampling**: reasoning models refuse ``temperature=0``.
* **native tool calls** (``tools=``): servers started without a tool parser refuse them.
* **log-probabilities** (``logprobs``, ``top_logprobs``), asked for when the model serves the
  SLM tier: llama-cpp-python's server refuses them unless started with ``--logits_all true``.
  Without them the escalation signals they carry are missing, and each reply says so
  (``Completion.missing_signals``).

When a server refuses one of these by name (its error's ``param``, or a word of its message),
the call is sent once more without it or in the other form, and the model keeps that for
later calls. A form set explicitly is kept instead: its refusal is an error whose hint names
the refused parameter and the setting that changes it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx2 as http  # the HTTP client openai 3 is built on (its transports, its errors)
import openai
from tierflow.agents.confidence import choice_field, rechoose
from tierflow.agents.grammar import grammar_schema
from tierflow.agents.protocol import ChoiceProbabilities, Completion, Message, Tier
from tierflow.agents.served import served_choice, served_text_signals, served_tokens, served_value_signals
from tierflow.agents.tool_calls import (
    ToolCallResult,
    chosen_call,
    function_spec,
    tool_reply_schema,
    with_tool_instruction,
)
from tierflow.agents.watch import CURRENT_WATCH, GenerationWatch
from tierflow.errors import ContextOverflowError, LLMUnavailableError
from tierflow.secrets import scrub

__all__ = [
    "OpenAIChatModel",
    "ResponseFormat",
    "TokenParameter",
    "NativeTools",
    "ToolCallResult",
    "bounded_client",
    "MAX_REPLY_BYTES",
]

log = logging.getLogger(__name__)

ResponseFormat = Literal["auto", "json_schema", "llamacpp", "none"]
TokenParameter = Literal["auto", "max_tokens", "max_completion_tokens"]
NativeTools = Literal["auto", "on", "off"]

_REASONING_FAMILIES = ("o1", "o3", "o4", "gpt-5")
_WEAKER_FORMAT: dict[str, Literal["llamacpp", "none"]] = {"json_schema": "llamacpp", "llamacpp": "none"}
_REFUSALS = frozenset({400, 422, 500})  # llama-cpp-python answers a request it cannot parse with 500
_NAMED_BY: dict[str, frozenset[str]] = {  # a parameter we send: the words that name it in a refusal
    "max_tokens": frozenset({"max_tokens"}),
    "max_completion_tokens": frozenset({"max_completion_tokens"}),
    "temperature": frozenset({"temperature"}),
    "seed": frozenset({"seed"}),
    "response_format": frozenset({"response_format", "json_schema"}),
    "tools": frozenset({"tools", "tool_choice", "tool"}),
    "logprobs": frozenset({"logprobs", "top_logprobs", "logits_all"}),
    "stream_options": frozenset({"stream_options", "include_usage"}),
}
_HINTS = {
    "max_tokens": "This model takes max_completion_tokens instead: set "
    "TIERFLOW_LLM_TOKEN_PARAMETER=max_completion_tokens, or auto to detect it.",
    "max_completion_tokens": "This server takes max_tokens instead: set "
    "TIERFLOW_LLM_TOKEN_PARAMETER=max_tokens, or auto to detect it.",
    "response_format": "This server does not take that response_format: set "
    "TIERFLOW_LLM_RESPONSE_FORMAT=llamacpp (llama.cpp's servers take json_object with a schema), "
    "none, or auto to try each.",
    "logprobs": "This server does not return log-probabilities: start llama-cpp-python's server with "
    "--logits_all true (tierflow serve-slm does), or set TIERFLOW_SLM_TOP_LOGPROBS=0 to ask for none.",
    "tools": "This endpoint does not take native tool calls (tools=): set TIERFLOW_LLM_NATIVE_TOOLS=auto "
    "to fall back to JSON replies, or off; vLLM needs --enable-auto-tool-choice and "
    "--tool-call-parser, llama.cpp's llama-server needs --jinja.",
}


_TOKENIZERS = ("/extras/tokenize/count", "/tokenize")
"""Where servers count tokens: llama-cpp-python's server; vLLM's and llama.cpp's llama-server."""

MAX_REPLY_BYTES = 4 * 2**20
"""The largest reply body an LLM endpoint may send (a reply of thousands of tokens is tens of
kilobytes; a larger one is refused, not stored)."""


class ReplyTooLarge(http.ReadError):
    """A reply body over ``MAX_REPLY_BYTES``."""


class _Bounded(http.SyncByteStream):
    """A response body read within the request's total deadline and the size cap."""

    def __init__(
        self, stream: http.SyncByteStream, request: http.Request, deadline: float, total_s: float
    ) -> None:
        self._stream, self._request, self._deadline, self._total_s = stream, request, deadline, total_s

    def __iter__(self) -> Any:
        size = 0
        for chunk in self._stream:
            size += len(chunk)
            if time.monotonic() > self._deadline:  # a server that drips bytes is cut off here
                raise http.ReadTimeout(f"no whole reply within {self._total_s:g} s", request=self._request)
            if size > MAX_REPLY_BYTES:
                raise ReplyTooLarge(f"the reply is over {MAX_REPLY_BYTES:,} bytes", request=self._request)
            yield chunk

    def close(self) -> None:
        self._stream.close()


class _DeadlineTransport(http.BaseTransport):
    """Each request answered whole within ``total_s`` (httpx's own timeouts bound each read,
    so a server sending a byte now and then could hold a call forever)."""

    def __init__(self, total_s: float) -> None:
        self._inner = http.HTTPTransport()
        self._total_s = total_s

    def handle_request(self, request: http.Request) -> http.Response:
        deadline = time.monotonic() + self._total_s
        response = self._inner.handle_request(request)
        assert isinstance(response.stream, http.SyncByteStream)
        response.stream = _Bounded(response.stream, request, deadline, self._total_s)
        return response

    def close(self) -> None:
        self._inner.close()


def bounded_client(base_url: str, api_key: str, *, timeout: float, max_retries: int) -> openai.OpenAI:
    """An OpenAI client whose every attempt ends within ``timeout`` seconds in all (so a call
    ends within (1 + ``max_retries``) × ``timeout`` plus the back-off), and whose replies are
    at most ``MAX_REPLY_BYTES``."""
    return openai.OpenAI(
        base_url=base_url,
        api_key=api_key,
        timeout=timeout,
        max_retries=max_retries,
        http_client=openai.DefaultHttpxClient(transport=_DeadlineTransport(timeout)),
    )


_OVERFLOW = re.compile(
    r"context (window|length|size)|maximum context|too many tokens|prompt is too long", re.I
)


class OpenAIChatModel:
    """A ``ChatModel`` over a ready ``openai.OpenAI`` client, with tool calls on top.

    It serves the LLM tier, or the SLM tier (``tier="slm"``) on a server the user runs:
    then it asks for ``top_logprobs`` log-probabilities per token and reads the escalation
    signals from them (``tierflow.agents.served``), and ``n_ctx`` bounds what one call takes.
    """

    tier: Tier = "llm"

    def __init__(
        self,
        client: openai.OpenAI,
        model: str,
        *,
        response_format: ResponseFormat = "auto",
        token_parameter: TokenParameter = "auto",
        temperature: float | None = 0.0,
        native_tools: NativeTools = "auto",
        seed: int | None = 0,
        tier: Tier = "llm",
        top_logprobs: int | None = None,
        n_ctx: int | None = None,
        tokenizer: str | None = None,
    ) -> None:
        """``tokenizer``: the server's endpoint that counts tokens, when known (the embedded
        server's); else an SLM's server is asked at the usual ones and an LLM's is not."""
        self.client = client
        self.name = model
        self.tier = tier
        self.n_ctx = n_ctx  # the server's context size in tokens, when known (it bounds a call)
        self._top_logprobs = top_logprobs  # None: ask for no log-probabilities
        self._wants_signals = top_logprobs is not None
        self._stream_usage = True  # ask a stream for its token counts (stream_options)
        self._tokenizer: str | None = None  # the server's endpoint that counts tokens, once found
        self._tokenizers = [tokenizer] if tokenizer else list(_TOKENIZERS) if tier == "slm" else []
        self._auto_format = response_format == "auto"
        self._response_format: Literal["json_schema", "llamacpp", "none"] = (
            "json_schema" if response_format == "auto" else response_format
        )
        self._token_fixed = token_parameter != "auto"
        if token_parameter == "auto":
            completion_tokens = _prefers_completion_tokens(model, str(client.base_url))
            token_parameter = "max_completion_tokens" if completion_tokens else "max_tokens"
        self._token_parameter: str = token_parameter
        self._temperature = temperature
        self._seed = seed
        self._native_setting = native_tools
        self._native: bool | None = {"on": True, "off": False}.get(native_tools)
        if native_tools == "auto" and self._response_format == "llamacpp":
            # llama-cpp-python's server calls tools only when started with a function-calling
            # chat format; its grammar-forced JSON replies are the reliable path there
            self._native = False

    def count_tokens(self, text: str) -> int:
        """How many tokens ``text`` is for the served model: the server's own count where it
        has an endpoint for it (llama-cpp-python's and llama.cpp's servers, vLLM), else a token
        per 3 characters, which overestimates English text (splitting it more than needed)."""
        while self._tokenizers or self._tokenizer:
            path = self._tokenizer or self._tokenizers[0]
            counted = self._server_count(path, text)
            if counted is not None:
                self._tokenizer = path
                return counted
            if self._tokenizer:  # it counted before: a passing failure
                break
            self._tokenizers.pop(0)
            if not self._tokenizers:
                root = scrub(self._server_root())
                log.info("the %s at %s counts no tokens; estimating them", self.tier.upper(), root)
        return -(-len(text) // 3)

    def _server_root(self) -> str:
        """The server's address without its OpenAI API's ``/v1``."""
        return str(self.client.base_url).rstrip("/").removesuffix("/v1")

    def _server_count(self, path: str, text: str) -> int | None:
        body = json.dumps({"model": self.name, "input": text, "prompt": text, "content": text}).encode()
        request = urllib.request.Request(
            f"{self._server_root()}{path}",
            data=body,
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.client.api_key}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                answer = json.loads(response.read(MAX_REPLY_BYTES))
        except (OSError, ValueError):
            return None
        if isinstance(answer, dict) and isinstance(answer.get("count"), int):
            return int(answer["count"])
        tokens = answer.get("tokens") if isinstance(answer, dict) else None
        return len(tokens) if isinstance(tokens, list) else None

    @property
    def native_tools(self) -> bool | None:
        """Whether ``call_tool`` goes through ``tools=``; None until a call has tried (``auto``)."""
        return self._native

    def complete(
        self,
        messages: Sequence[Message],
        *,
        schema: dict[str, Any] | None = None,
        max_tokens: int,
    ) -> Completion:
        watch = CURRENT_WATCH.get() if self.tier == "slm" and schema is None else None
        if watch is not None:  # a free text on the SLM's server, stopped early when it goes wrong
            return self._watched(messages, max_tokens, watch)
        response, sent, latency_ms = self._send(
            lambda: {
                "messages": list(messages),
                **self._parameters(max_tokens, schema=schema, logprobs=self._top_logprobs),
            }
        )
        choice, message = self._first_choice(response)
        prompt_tokens, completion_tokens = _usage(response)
        completion = Completion(
            text=message.content or "",
            model=_served_model(response, self.name),
            tier=self.tier,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            latency_ms=latency_ms,
            finish_reason=choice.finish_reason if isinstance(choice.finish_reason, str) else "stop",
        )
        if not self._wants_signals:
            return completion
        return _with_signals(completion, getattr(choice, "logprobs", None), schema, "response_format" in sent)

    def _watched(self, messages: Sequence[Message], max_tokens: int, watch: GenerationWatch) -> Completion:
        """A free text streamed and read as it grows; the stream is closed (and llama.cpp's
        server stops generating) as soon as ``watch`` finds a reason to stop it."""
        started = time.perf_counter()
        stream, _, _ = self._send(
            lambda: {
                "messages": list(messages),
                "stream": True,
                **({"stream_options": {"include_usage": True}} if self._stream_usage else {}),
                **self._parameters(max_tokens, logprobs=self._top_logprobs),
            }
        )
        text, finish, usage, model = "", "stop", None, self.name
        logprobs: list[Any] = []
        try:
            for chunk in stream:
                usage = getattr(chunk, "usage", None) or usage
                model = getattr(chunk, "model", None) or model
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                text += getattr(choice.delta, "content", None) or ""
                logprobs += getattr(choice.logprobs, "content", None) or []
                finish = choice.finish_reason or finish
                if watch.check(text):
                    break
        except openai.APIError as exc:
            raise self._named(_unavailable(exc, str(self.client.base_url), self.name)) from exc
        finally:
            stream.close()
        completion = Completion(
            text=text,
            model=model,
            tier=self.tier,
            prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
            completion_tokens=getattr(usage, "completion_tokens", 0) or len(logprobs),
            latency_ms=(time.perf_counter() - started) * 1000,
            finish_reason="stopped" if watch.stopped else finish,
            stopped=watch.stopped,
        )
        if not self._wants_signals:
            return completion
        return _with_signals(completion, {"content": logprobs}, None, constrained=True)

    def call_tool(
        self,
        messages: Sequence[Message],
        tools: Sequence[Mapping[str, Any]],
        *,
        max_tokens: int,
        tool_choice: Literal["auto", "required"] = "auto",
    ) -> ToolCallResult:
        """Ask the model to call one of ``tools``: OpenAI function specs, bare as
        ``ToolRegistry.specs()`` gives them or wrapped in ``{"type": "function", ...}``.

        It goes through the endpoint's ``tools=`` unless ``native_tools`` is off or the
        endpoint refused them under ``auto``; then the model replies ``{"tool", "arguments"}``
        as JSON under a schema. With ``tool_choice="auto"`` it may call none. An unusable call
        (unknown tool, arguments that are not a JSON object) is the model's mistake, not a
        failure: it comes back with ``name=None`` and the reason in ``problem``. The specs and
        the reading of the reply are in ``tierflow.agents.tool_calls``.
        """
        functions = [function_spec(spec) for spec in tools]
        names = [function["name"] for function in functions]

        def request() -> dict[str, Any]:
            if self._native is False:
                schema = tool_reply_schema(names, tool_choice)
                sent = with_tool_instruction(messages, functions, tool_choice)
                return {"messages": sent, **self._parameters(max_tokens, schema=schema)}
            wrapped = [{"type": "function", "function": function} for function in functions]
            parameters = self._parameters(max_tokens, tools=wrapped, tool_choice=tool_choice)
            return {"messages": list(messages), **parameters}

        response, sent, latency_ms = self._send(request)
        native = "tools" in sent
        if native and self._native is None:
            self._native = True
        choice, message = self._first_choice(response)
        name, arguments, text, problem = chosen_call(message, native, names, tool_choice)
        prompt_tokens, completion_tokens = _usage(response)
        return ToolCallResult(
            name=name,
            arguments=arguments,
            text=text,
            model=_served_model(response, self.name),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            latency_ms=latency_ms,
            native=native,
            messages=sent["messages"],
            finish_reason=choice.finish_reason if isinstance(choice.finish_reason, str) else "stop",
            problem=problem,
        )

    # The request, as this endpoint takes it (so far as known) ---------------------------
    def _parameters(
        self,
        max_tokens: int,
        *,
        schema: dict[str, Any] | None = None,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str = "auto",
        logprobs: int | None = None,
    ) -> dict[str, Any]:
        parameters: dict[str, Any] = {self._token_parameter: max_tokens}
        if logprobs is not None:
            parameters.update(logprobs=True, top_logprobs=logprobs)
        if self._temperature is not None:
            parameters["temperature"] = self._temperature
        if self._seed is not None:
            parameters["seed"] = self._seed
        if schema is not None and (fmt := self._format(schema)) is not None:
            parameters["response_format"] = fmt
        if tools is not None:
            parameters.update(tools=tools, tool_choice=tool_choice)
        if self.tier == "slm" and self._response_format == "llamacpp":
            # llama-cpp-python's server penalises repeats by default (1.1), llama.cpp in process
            # does not: the same SLM on a server answers as it does in process
            parameters["extra_body"] = {"repeat_penalty": 1.0}
        return parameters

    def _format(self, schema: dict[str, Any]) -> dict[str, Any] | None:
        if self._response_format == "json_schema":
            return {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": schema, "strict": False},
            }
        if self._response_format == "llamacpp":
            return {"type": "json_object", "schema": grammar_schema(schema)}
        return None

    def _send(self, request: Callable[[], dict[str, Any]]) -> tuple[Any, dict[str, Any], float]:
        """One chat completion, built by ``request`` from what is known of the endpoint; a
        parameter it refuses by name is adapted and the call sent again. Returns the
        response, the request that got it, and the latency (retries included)."""
        started = time.perf_counter()
        while True:
            sent = request()
            try:
                response = self.client.chat.completions.create(model=self.name, **sent)
            except openai.APIStatusError as exc:
                if self.tier == "slm" and _OVERFLOW.search(_server_message(exc)):
                    raise ContextOverflowError(
                        f"the prompt does not fit the SLM's context ({_server_message(exc)})",
                        hint="Tiered steps send it to the LLM; otherwise shorten the input, or set "
                        "TIERFLOW_SLM_N_CTX to the server's context size.",
                    ) from None
                refused = _refused_parameter(exc, sent)
                if refused is None or not self._adapt(refused):
                    raise self._named(self._refusal(exc, refused)) from exc
            except openai.APIError as exc:
                raise self._named(_unavailable(exc, str(self.client.base_url), self.name)) from exc
            except ValueError as exc:  # a 200 whose body is not JSON
                raise self._named(self._malformed(f"a body that is not JSON ({exc})")) from None
            else:
                return response, sent, (time.perf_counter() - started) * 1000

    def _adapt(self, refused: str) -> bool:
        """Send ``refused`` differently from now on, where its setting allows it."""
        if refused in ("max_tokens", "max_completion_tokens") and not self._token_fixed:
            self._token_parameter = "max_completion_tokens" if refused == "max_tokens" else "max_tokens"
            self._token_fixed, change = True, f"sending {self._token_parameter} instead"
        elif refused == "temperature" and self._temperature is not None:
            self._temperature, change = None, "leaving the temperature to the server"
        elif refused == "seed" and self._seed is not None:
            self._seed, change = None, "sending no seed"
        elif refused == "response_format" and self._auto_format and self._response_format in _WEAKER_FORMAT:
            self._response_format = _WEAKER_FORMAT[self._response_format]
            change = f"asking for structured output as {self._response_format!r}"
        elif refused == "tools" and self._native_setting == "auto":
            self._native, change = False, "asking for tool calls as JSON replies"
        elif refused == "stream_options" and self._stream_usage:
            self._stream_usage, change = False, "counting a stream's tokens itself"
        elif refused == "logprobs" and self._top_logprobs is not None:
            self._top_logprobs = None
            change = "asking for no log-probabilities (the escalation signals read from them are missing)"
        else:
            return False
        url = scrub(str(self.client.base_url))
        tier = self.tier.upper()
        log.warning("the %s at %s refused %s for %s; %s from now on", tier, url, refused, self.name, change)
        return True

    def _named(self, error: LLMUnavailableError) -> LLMUnavailableError:
        """An endpoint error worded for the tier this model serves (its settings' names too)."""
        if self.tier == "llm":
            return error
        return LLMUnavailableError(
            error.message.replace("the LLM", "the SLM"),
            hint=(error.hint or "")
            .replace("TIERFLOW_LLM_", "TIERFLOW_SLM_")
            .replace("use the embedded local model", "load the SLM in process"),
        )

    # Errors ------------------------------------------------------------------------------
    def _refusal(self, exc: openai.APIStatusError, refused: str | None) -> LLMUnavailableError:
        base_url = str(self.client.base_url)
        if refused is None:
            return _unavailable(exc, base_url, self.name)
        return LLMUnavailableError(
            scrub(
                f"the LLM at {base_url} failed the request ({exc.status_code}), refusing "
                f"{refused!r}: {_server_message(exc)}"
            ),
            hint=_HINTS.get(
                refused, "Check the endpoint's logs; the run was stored as failed with this reason."
            ),
        )

    def _malformed(self, what: str) -> LLMUnavailableError:
        return _malformed_error(str(self.client.base_url), what)

    def _first_choice(self, response: Any) -> tuple[Any, Any]:
        choices = getattr(response, "choices", None)
        if not isinstance(choices, list) or not choices:
            raise self._malformed("no choices (not a chat completion)")
        choice = choices[0]
        message = getattr(choice, "message", None)
        content = getattr(message, "content", None)
        if message is None or (content is not None and not isinstance(content, str)):
            raise self._malformed("a choice without a text message")
        return choice, message


def _with_signals(
    completion: Completion, logprobs: Any, schema: dict[str, Any] | None, constrained: bool
) -> Completion:
    """``completion`` with the signals read from the server's log-probabilities, its choice set
    to the option they favour, or with the signals that could not be read named as missing."""
    tokens = served_tokens(logprobs)
    if tokens is None:
        return dataclasses.replace(completion, missing_signals=("logprobs",))
    field = choice_field(schema)
    if field is None:
        if schema is None:
            return dataclasses.replace(completion, signals=served_text_signals(tokens))
        missing = () if constrained else ("constrained_output",)
        signals = served_value_signals(tokens, completion.text)
        return dataclasses.replace(completion, signals=signals, missing_signals=missing)
    started = time.perf_counter()
    estimate = served_choice(tokens, completion.text, field)
    if estimate is None:
        return dataclasses.replace(completion, missing_signals=("choice_probabilities",))
    probabilities, keep = estimate
    text, greedy = rechoose(completion.text, field, probabilities, keep)
    scores = ChoiceProbabilities(probabilities, greedy, (time.perf_counter() - started) * 1000)
    return dataclasses.replace(
        completion, text=text, choice_probabilities=scores, confidence=probabilities[keep]
    )


def _prefers_completion_tokens(model: str, base_url: str) -> bool:
    """OpenAI itself takes ``max_completion_tokens`` for every model and its reasoning models
    refuse ``max_tokens``; other servers are sent ``max_tokens``, which they all take."""
    family = model.rsplit("/", 1)[-1].lower()
    return urlsplit(base_url).hostname == "api.openai.com" or family.startswith(_REASONING_FAMILIES)


def _refused_parameter(exc: openai.APIStatusError, sent: Mapping[str, Any]) -> str | None:
    """The parameter we sent that a refusal names: OpenAI's ``param`` field when there is one;
    else a word of the message (llama.cpp, vLLM and Ollama leave ``param`` empty)."""
    if exc.status_code not in _REFUSALS:
        return None
    if exc.param:
        return next((p for p, names in _NAMED_BY.items() if p in sent and exc.param in names), None)
    detail = exc.body.get("detail", "") if isinstance(exc.body, dict) else ""
    words = set(re.findall(r"\w+", f"{exc.message} {detail}"))
    if {"max_tokens", "max_completion_tokens"} <= words:  # "either is too large": a cap, not a name
        words -= {"max_tokens", "max_completion_tokens"}
    return next((p for p, names in _NAMED_BY.items() if p in sent and names & words), None)


def _server_message(exc: openai.APIStatusError) -> str:
    message = exc.body.get("message") if isinstance(exc.body, dict) else None
    return message if isinstance(message, str) and message else exc.message


def _usage(response: Any) -> tuple[int, int]:
    usage = getattr(response, "usage", None)
    if isinstance(usage, openai.types.CompletionUsage):
        return usage.prompt_tokens, usage.completion_tokens
    return 0, 0


def _served_model(response: Any, asked: str) -> str:
    model = getattr(response, "model", None)
    return model if isinstance(model, str) and model else asked


# Errors ----------------------------------------------------------------------------------
def _malformed_error(base_url: str, what: str) -> LLMUnavailableError:
    return LLMUnavailableError(
        scrub(f"the LLM at {base_url} answered with {what}"),
        hint="Check that TIERFLOW_LLM_BASE_URL is the endpoint's OpenAI-compatible API (it usually "
        "ends in /v1) and not a proxy or web page; the run was stored as failed with this reason.",
    )


def _unavailable(exc: openai.APIError, base_url: str, model: str) -> LLMUnavailableError:
    """The endpoint's failure as a clear error, with no secret in it (an error body may
    quote the key; the URL may hold a password)."""
    described = _describe(exc, scrub(base_url), model)
    return LLMUnavailableError(scrub(described.message), hint=scrub(described.hint))


def _describe(exc: openai.APIError, base_url: str, model: str) -> LLMUnavailableError:
    if isinstance(exc, openai.APIResponseValidationError):
        return _malformed_error(base_url, f"a response of the wrong shape ({exc.message})")
    if isinstance(exc, openai.APITimeoutError):
        return LLMUnavailableError(
            f"the LLM at {base_url} did not answer in time",
            hint="Raise TIERFLOW_LLM_TIMEOUT, or check that the server is not overloaded.",
        )
    if isinstance(exc, openai.APIConnectionError) and isinstance(exc.__cause__, ReplyTooLarge):
        return LLMUnavailableError(
            f"the LLM at {base_url} sent {exc.__cause__}: refused",
            hint="Check that TIERFLOW_LLM_BASE_URL is a chat-completions endpoint, not a file or a "
            "proxy page.",
        )
    if isinstance(exc, openai.APIConnectionError):
        return LLMUnavailableError(
            f"the connection to the LLM at {base_url} broke mid-answer: {exc.__cause__}"
            if "peer closed" in str(exc.__cause__ or "")
            else f"could not reach the LLM at {base_url}: {exc.__cause__ or exc}",
            hint="Start the server or fix TIERFLOW_LLM_BASE_URL; unset it to use the embedded local model.",
        )
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return LLMUnavailableError(
            f"the LLM at {base_url} refused the API key ({exc.status_code})",
            hint="Set TIERFLOW_LLM_API_KEY (or OPENAI_API_KEY) to a valid key for this endpoint.",
        )
    if isinstance(exc, openai.NotFoundError):
        return LLMUnavailableError(
            f"the LLM at {base_url} has no model {model!r} ({exc.status_code})",
            hint="Set TIERFLOW_LLM_MODEL to a model the endpoint serves.",
        )
    status = getattr(exc, "status_code", None)
    return LLMUnavailableError(
        f"the LLM at {base_url} failed the request" + (f" ({status})" if status else "") + f": {exc.message}",
        hint="Check the endpoint's logs; the run was stored as failed with this reason.",
    )
