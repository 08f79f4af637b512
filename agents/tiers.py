"""The two tiers a graph runs on, addressed by role rather than by vendor class."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tierflow.agents.protocol import ChatModel, Completion, Message, Tier

__all__ = ["Tiers", "Deferred", "built", "resolved"]


@dataclass(frozen=True)
class Tiers:
    slm: ChatModel
    llm: ChatModel

    def model(self, tier: Tier) -> ChatModel:
        return self.slm if tier == "slm" else self.llm

    def load(self, *tiers: Tier) -> None:
        """Load local models and start embedded servers now (where a tier can), so that the
        first call's latency is the call's alone."""
        for tier in tiers or ("slm", "llm"):
            load = getattr(self.model(tier), "load", None)
            if callable(load):
                load()


class Deferred:
    """A tier's model built on its first use, so that a run that never calls a tier never
    resolves, downloads or loads that tier's model (``--policy llm`` needs no SLM file).
    Its ``tier`` and ``name`` are known before; everything else is the built model's."""

    def __init__(self, tier: Tier, name: str, build: Callable[[], ChatModel]) -> None:
        self.tier, self.name = tier, name
        self._build = build
        self._model: ChatModel | None = None
        self._lock = threading.Lock()

    @property
    def model(self) -> ChatModel:
        with self._lock:
            if self._model is None:
                self._model = self._build()
            return self._model

    @property
    def built(self) -> ChatModel | None:
        """The model if it was built, without building it."""
        return self._model

    def complete(
        self, messages: Sequence[Message], *, schema: dict[str, Any] | None = None, max_tokens: int
    ) -> Completion:
        return self.model.complete(messages, schema=schema, max_tokens=max_tokens)

    def load(self) -> None:
        load = getattr(self.model, "load", None)
        if callable(load):
            load()

    def __getattr__(self, attribute: str) -> Any:
        if attribute.startswith("_"):
            raise AttributeError(attribute)
        return getattr(self.model, attribute)


def built(model: ChatModel) -> ChatModel | None:
    """The model behind a ``Deferred`` once it is built (``None`` before), or ``model``."""
    return model.built if isinstance(model, Deferred) else model


def resolved(model: ChatModel) -> ChatModel:
    """The model behind a ``Deferred``, built now if it was not, or ``model``."""
    return model.model if isinstance(model, Deferred) else model
