"""Fitting text to the SLM's context: a text too long for one call is cut into pieces that
fit, each piece is summarized, and the joined summaries are summarized in turn until one
call can take them. Models that do not say their context size (remote or scripted ones)
get the text whole."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from tierflow.agents.protocol import Message
from tierflow.errors import TierflowError

__all__ = ["context_budget", "count_tokens", "split_to_fit", "fit_and_summarize"]

MARGIN_TOKENS = 48  # chat-template tokens around the messages, and rounding
MAX_ROUNDS = 6
_BREAKS = (re.compile(r"\n\s*\n"), re.compile(r"(?<=[.!?])\s+"), re.compile(r"\s+"))


def count_tokens(model: Any, text: str) -> int:
    counter = getattr(model, "count_tokens", None)
    return int(counter(text)) if callable(counter) else -(-len(text) // 3)


def context_budget(model: Any, overhead: Sequence[Message], max_tokens: int) -> int | None:
    """How many tokens of text one call to ``model`` can take, or ``None`` if unbounded."""
    n_ctx = getattr(model, "n_ctx", None)
    if not isinstance(n_ctx, int):
        return None
    fixed = sum(count_tokens(model, m["content"]) for m in overhead)
    return n_ctx - max_tokens - fixed - MARGIN_TOKENS


def _split(text: str, fits: Callable[[str], bool], level: int = 0) -> list[str]:
    if fits(text) or len(text) <= 1:
        return [text]
    if level >= len(_BREAKS):  # no separator left: cut by characters
        half = len(text) // 2
        return _split(text[:half], fits, level) + _split(text[half:], fits, level)
    pieces: list[str] = []
    current = ""
    for part in _BREAKS[level].split(text):
        candidate = f"{current} {part}".strip() if current else part
        if fits(candidate):
            current = candidate
            continue
        if current:
            pieces.append(current)
        if fits(part):
            current = part
        else:
            pieces += _split(part, fits, level + 1)
            current = ""
    if current:
        pieces.append(current)
    return pieces


def split_to_fit(model: Any, text: str, budget: int) -> list[str]:
    """``text`` in consecutive pieces of at most ``budget`` tokens each, cut at paragraph,
    then sentence, then word boundaries."""
    if budget < 16:
        raise TierflowError(
            f"the SLM's context leaves {budget} tokens for text",
            hint="Raise TIERFLOW_SLM_N_CTX or lower the step's max_tokens.",
        )
    return [piece for piece in _split(text, lambda t: count_tokens(model, t) <= budget) if piece]


def fit_and_summarize(
    model: Any,
    text: str,
    summarize_once: Callable[[str], str],
    *,
    overhead: Sequence[Message],
    max_tokens: int,
) -> str:
    """Summarize ``text`` with calls that each fit ``model``'s context."""
    budget = context_budget(model, overhead, max_tokens)
    if budget is None:
        return summarize_once(text)
    for _ in range(MAX_ROUNDS):
        pieces = split_to_fit(model, text, budget)
        if len(pieces) == 1:
            return summarize_once(pieces[0])
        text = "\n\n".join(summarize_once(piece) for piece in pieces)
    return summarize_once(split_to_fit(model, text, budget)[0])
