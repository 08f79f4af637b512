"""A deterministic ``ChatModel`` for tests and examples: it answers from a script.

Replies are picked by the graph node that asks (``by_node``), never by the prompt's
wording, so rewording a prompt cannot break a test; replies without a node come from one
queue in order. Each reply is a string, a dict (sent as JSON), or a function of the
messages that returns one. A reply may also be an exception instance, which is raised (to
simulate an unreachable endpoint).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from tierflow.agents.confidence import choice_field
from tierflow.agents.protocol import CURRENT_NODE, ChoiceProbabilities, Completion, Message, Tier
from tierflow.agents.signals import TokenSignals
from tierflow.agents.watch import CURRENT_WATCH

__all__ = ["ScriptedModel", "Reply"]

Reply = str | dict[str, Any] | BaseException | Callable[[Sequence[Message]], str]


class ScriptedModel:
    """Replies in order; ``by_node`` keeps a queue per node name (``CURRENT_NODE``).

    ``confidence`` is reported for every choice among fixed options, as the SLM does;
    ``choices`` (option probabilities) and ``signals`` (token log-probabilities of the values
    of other structured replies) stand in for what the real SLM measures of its output."""

    def __init__(
        self,
        replies: Iterable[Reply] = (),
        *,
        tier: Tier = "slm",
        name: str = "scripted",
        by_node: dict[str, list[Reply]] | None = None,
        finish_reason: str = "stop",
        confidence: float | None = None,
        choices: dict[str, float] | None = None,
        signals: TokenSignals | None = None,
    ) -> None:
        self.tier = tier
        self.name = name
        self._queue = list(replies)
        self._by_node = {key: list(value) for key, value in (by_node or {}).items()}
        self._finish_reason = finish_reason
        self._confidence = confidence
        self._choices = choices
        self._signals = signals
        self.calls: list[dict[str, Any]] = []

    def _next(self) -> Reply:
        node = CURRENT_NODE.get()
        queue = self._by_node.get(node or "")
        if queue:
            return queue.pop(0)
        if not self._queue:
            raise AssertionError(f"{self.name}: no scripted reply left for node {node!r}")
        return self._queue.pop(0)

    def complete(
        self,
        messages: Sequence[Message],
        *,
        schema: dict[str, Any] | None = None,
        max_tokens: int,
    ) -> Completion:
        self.calls.append(
            {
                "node": CURRENT_NODE.get(),
                "messages": list(messages),
                "schema": schema,
                "max_tokens": max_tokens,
            }
        )
        reply = self._next()
        if isinstance(reply, BaseException):
            raise reply
        text = reply(messages) if callable(reply) else reply
        if isinstance(text, dict):
            text = json.dumps(text)
        stopped = None
        watch = CURRENT_WATCH.get() if schema is None else None
        if watch is not None:  # written word by word, as the SLM does, and stopped the same way
            text, stopped = _watched(text, watch)
        field = choice_field(schema)
        is_choice = field is not None
        choosing = self._confidence is not None and is_choice
        scores = None
        if self._choices is not None and field is not None:
            scores = ChoiceProbabilities(self._choices, str(json.loads(text).get(field.name)), 0.0)
        return Completion(
            text=text,
            model=self.name,
            tier=self.tier,
            prompt_tokens=sum(len(m["content"].split()) for m in messages),
            completion_tokens=len(text.split()),
            latency_ms=0.0,
            finish_reason="stopped" if stopped else self._finish_reason,
            confidence=self._confidence if choosing else None,
            choice_probabilities=scores,
            signals=self._signals if schema is not None and not is_choice else None,
            stopped=stopped,
        )


def _watched(text: str, watch: Any) -> tuple[str, str | None]:
    """``text`` as far as ``watch`` lets it be written, word by word, and why it stopped."""
    for match in re.finditer(r"\S+", text):
        if watch.check(text[: match.end()] + " "):
            return text[: match.end()], watch.stopped
    return text, None
