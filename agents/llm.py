"""The large tier: any OpenAI-compatible endpoint through the ``openai`` client.

Structured output differs by server: OpenAI, vLLM and Ollama take
``{"type": "json_schema", ...}``; llama.cpp's Python server ignores that form and takes
``{"type": "json_object", "schema": ...}`` instead. ``response_format`` picks the form; the
caller validates the output either way.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Literal

import openai
from tierflow.agents.grammar import grammar_schema
from tierflow.agents.protocol import Completion, Message, Tier
from tierflow.errors import LLMUnavailableError
from tierflow.secrets import scrub

__all__ = ["OpenAIChatModel", "ResponseFormat"]

ResponseFormat = Literal["json_schema", "llamacpp", "none"]


class OpenAIChatModel:
    """A ``ChatModel`` over a ready ``openai.OpenAI`` client."""

    tier: Tier = "llm"

    def __init__(
        self,
        client: openai.OpenAI,
        model: str,
        *,
        response_format: ResponseFormat = "json_schema",
        seed: int | None = 0,
    ) -> None:
        self.client = client
        self.name = model
        self._response_format = response_format
        self._seed = seed

    def _malformed(self, what: str) -> LLMUnavailableError:
        return _malformed_error(str(self.client.base_url), what)

    def _format(self, schema: dict[str, Any]) -> dict[str, Any] | None:
        if self._response_format == "json_schema":
            return {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": schema, "strict": False},
            }
        if self._response_format == "llamacpp":
            return {"type": "json_object", "schema": grammar_schema(schema)}
        return None

    def complete(
        self,
        messages: Sequence[Message],
        *,
        schema: dict[str, Any] | None = None,
        max_tokens: int,
    ) -> Completion:
        extra: dict[str, Any] = {}
        if schema is not None and (fmt := self._format(schema)) is not None:
            extra["response_format"] = fmt
        if self._seed is not None:
            extra["seed"] = self._seed
        started = time.perf_counter()
        try:
            response = self.client.chat.completions.create(
                model=self.name,
                messages=list(messages),  # type: ignore[arg-type]
                max_tokens=max_tokens,
                temperature=0.0,
                **extra,
            )
        except openai.APIError as exc:
            error = _unavailable(exc, str(self.client.base_url), self.name)
            if (
                "response_format" in extra
                and isinstance(exc, openai.APIStatusError)
                and exc.status_code in (400, 422, 500)
            ):
                error.hint += (
                    " If this server does not take response_format "
                    f"{extra['response_format']['type']!r} (llama.cpp's Python server "
                    "takes only json_object), set TIERFLOW_LLM_RESPONSE_FORMAT=llamacpp "
                    "or none."
                )
            raise error from exc
        except ValueError as exc:  # a 200 whose body is not JSON
            raise self._malformed(f"a body that is not JSON ({exc})") from None
        latency_ms = (time.perf_counter() - started) * 1000
        choices = getattr(response, "choices", None)
        if not isinstance(choices, list) or not choices:
            raise self._malformed("no choices (not a chat completion)")
        choice = choices[0]
        message = getattr(choice, "message", None)
        content = getattr(message, "content", None)
        if message is None or (content is not None and not isinstance(content, str)):
            raise self._malformed("a choice without a text message")
        usage = (
            response.usage
            if isinstance(getattr(response, "usage", None), openai.types.CompletionUsage)
            else None
        )
        return Completion(
            text=content or "",
            model=response.model if isinstance(response.model, str) and response.model else self.name,
            tier=self.tier,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            latency_ms=latency_ms,
            finish_reason=choice.finish_reason if isinstance(choice.finish_reason, str) else "stop",
        )


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
            hint="Set TIERFLOW_LLM_API_KEY to a valid key for this endpoint.",
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
