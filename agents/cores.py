"""The machine's cores, shared by the local models.

The in-process SLM and the embedded LLM server each use every core by default, and two
llama.cpp computations at once on the same cores slow each other many times over (on 2
cores, tenfold). So within one process they take turns (``LOCAL_TURNS``): the chunks of a
parallel map wait for each other's model calls rather than racing them. A tier behind an
endpoint (``TIERFLOW_LLM_BASE_URL``, ``TIERFLOW_SLM_BASE_URL``) computes elsewhere and never
waits. ``TIERFLOW_LOCAL_MODELS_TAKE_TURNS=false`` lets them overlap, for a machine whose
cores are split between them (``TIERFLOW_SLM_THREADS`` and ``TIERFLOW_EMBEDDED_LLM_THREADS``
adding up to at most its cores). A batch job's one worker process reaches the driver's
embedded server through an endpoint, and takes turns with it too (``TakingTurns``).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tierflow.agents.protocol import ChatModel, Completion
    from tierflow.records import Message

__all__ = ["LOCAL_TURNS", "TakingTurns", "turn"]

LOCAL_TURNS = threading.Lock()
"""Held while a local model computes (one per process)."""


def turn(take_turns: bool) -> contextlib.AbstractContextManager[Any]:
    """The context a local model computes in: ``LOCAL_TURNS`` when models take turns."""
    return LOCAL_TURNS if take_turns else contextlib.nullcontext()


class TakingTurns:
    """``model``, computing only in this process's turn: an endpoint that serves a model on
    this machine's cores, such as the driver's embedded LLM server as a batch job's one
    worker process reaches it beside its own SLM. Everything but ``complete`` is ``model``'s."""

    def __init__(self, model: ChatModel) -> None:
        self.model = model
        self.tier, self.name = model.tier, model.name

    def complete(
        self, messages: Sequence[Message], *, schema: dict[str, Any] | None = None, max_tokens: int
    ) -> Completion:
        with LOCAL_TURNS:
            return self.model.complete(messages, schema=schema, max_tokens=max_tokens)

    def __getattr__(self, attribute: str) -> Any:
        if attribute.startswith("_"):
            raise AttributeError(attribute)
        return getattr(self.model, attribute)
