"""The one protocol both model tiers implement, and the value every call returns."""

from __future__ import annotations

from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from tierflow.records import ChoiceProbabilities, Message, Tier, TokenSignals

__all__ = ["Tier", "Message", "Completion", "ChoiceProbabilities", "ChatModel", "CURRENT_NODE"]


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
    choice_probabilities: ChoiceProbabilities | None = None  # a choice among fixed options
    confidence: float | None = None
    """A choice among fixed options: the probability of the option chosen (read from
    ``choice_probabilities`` when the model measured them all)."""
    signals: TokenSignals | None = None  # log-probabilities of the generated JSON values
    stopped: str | None = None
    """Why the model's watch ended the reply early (``tierflow.agents.watch``), if it did."""
    missing_signals: tuple[str, ...] = ()
    """The escalation signals this call could not measure (an SLM on a server that returned
    no log-probabilities: ``logprobs``), so a trace can say why a step was judged without them."""

    def __post_init__(self) -> None:
        if self.confidence is None and self.choice_probabilities is not None:
            object.__setattr__(self, "confidence", self.choice_probabilities.confidence)

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
