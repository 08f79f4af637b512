"""The one protocol both model tiers implement, and the value every call returns."""

from __future__ import annotations

from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from tierflow.records import ChoiceScores, Message, Tier, TokenSignals

__all__ = ["Tier", "Message", "Completion", "ChoiceScores", "ChatModel", "CURRENT_NODE"]


CURRENT_NODE: ContextVar[str | None] = ContextVar("tierflow_current_node", default=None)
"""The graph node on whose behalf a model is being called (set by ``ask``): scripted test
models answer by it, and logs can name it."""


@dataclass(frozen=True)
class Completion:
    """What a model returned for one call, with what it cost."""

    text: str
    model: str
    tier: Tier
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    finish_reason: str = "stop"
    confidence: float | None = None  # a choice among fixed options: the chosen option's probability
    choice_scores: ChoiceScores | None = None
    signals: TokenSignals | None = None  # log-probabilities of the generated JSON values

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


@runtime_checkable
class ChatModel(Protocol):
    """A chat model of one tier. ``schema`` (JSON Schema) asks for output constrained to it."""

    tier: Tier
    name: str

    def complete(
        self,
        messages: Sequence[Message],
        *,
        schema: dict[str, Any] | None = None,
        max_tokens: int,
    ) -> Completion: ...
