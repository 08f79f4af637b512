"""Watching a free-text reply while it is written, to stop one that is going wrong.

A 0.5B model asked for a summary often copies its input instead, or repeats itself, until
``max_tokens``; the checks that reject such a reply afterwards cost the whole generation
first. A ``GenerationWatch`` reads the reply as it grows and names why it should stop:

- ``copies_source``: its last ``copy_words`` words stand in the source word for word;
- ``loops``: its last ``loop_words`` words already stand earlier in the reply;
- ``over_budget``: it has finished more sentences than ``max_sentences`` (one over is let pass,
  as ``concise`` does).

The SLM consults the watch set for its call (``watching``) before every token of a reply
without a schema, and ends a reply the watch stops; the step then rejects it with that reason
as a rejection, and a ``tiered`` step escalates at once with the cost so far on the trace. A
model that cannot stop mid-reply (the LLM endpoint) ignores the watch.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

__all__ = ["GenerationWatch", "CURRENT_WATCH", "watching", "STOP_REASONS", "stop_description"]

STOP_REASONS = {
    "copies_source": "the reply was copying its source word for word",
    "loops": "the reply was repeating itself",
    "over_budget": "the reply ran past its sentence budget",
}

_WORD = re.compile(r"\w+", re.UNICODE)
_SENTENCE_END = re.compile(r"[.!?](?=\s)")


def _words(text: str) -> list[str]:
    return [word.lower() for word in _WORD.findall(text)]


@dataclass
class GenerationWatch:
    """Why a reply to ``source`` should stop now, or None; ``stopped`` keeps the first reason."""

    source: str = ""
    max_sentences: int | None = None
    copy_words: int = 24
    loop_words: int = 12
    stopped: str | None = None
    _source_grams: set[tuple[str, ...]] = field(default_factory=set, repr=False)

    def __post_init__(self) -> None:
        words = _words(self.source)
        size = self.copy_words
        self._source_grams = {tuple(words[i : i + size]) for i in range(len(words) - size + 1)}

    def check(self, reply: str) -> str | None:
        """The reason to stop ``reply`` (the text so far), or None to let it go on. Once a
        reason is found it is kept in ``stopped`` and returned again."""
        if self.stopped is None:
            self.stopped = self._reason(reply)
        return self.stopped

    def _reason(self, reply: str) -> str | None:
        words = _words(reply)
        if self._source_grams and len(words) >= self.copy_words:
            if tuple(words[-self.copy_words :]) in self._source_grams:
                return "copies_source"
        size = self.loop_words
        if len(words) >= 2 * size:
            tail = tuple(words[-size:])
            if any(tuple(words[i : i + size]) == tail for i in range(len(words) - 2 * size + 1)):
                return "loops"
        if self.max_sentences is not None:
            if len(_SENTENCE_END.findall(reply)) > self.max_sentences + 1:
                return "over_budget"
        return None


def stop_description(reason: str) -> str:
    return STOP_REASONS.get(reason, reason)


CURRENT_WATCH: ContextVar[GenerationWatch | None] = ContextVar("tierflow_generation_watch", default=None)
"""The watch over the free-text reply of the model call now being made (set by ``watching``)."""


@contextmanager
def watching(watch: GenerationWatch | None) -> Iterator[GenerationWatch | None]:
    """Make ``watch`` the one the model consults during the calls inside the block."""
    token = CURRENT_WATCH.set(watch)
    try:
        yield watch
    finally:
        CURRENT_WATCH.reset(token)
