"""What the SLM's own output says about how sure it was: per-token log-probabilities of the
argument values it generated, read from the raw logits before the grammar masks them.

llama-cpp-python returns ``logprobs`` only for a model loaded with ``logits_all=True``,
which keeps logits for every prompt position (7x slower on a tool-call prompt here, and
n_ctx x n_vocab floats of memory). Instead, ``TokenTrace`` is a logits processor: llama-cpp
runs it before the grammar sampler, so it sees the model's unconstrained distribution at
each generated token. It keeps three numbers a step; the token chosen at a step is read
from the input ids at the next one. A token the grammar forced although the model preferred
another shows as a chosen token that is not the argmax.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tierflow.records import TokenSignals

__all__ = [
    "TokenTrace",
    "TokenSignals",
    "value_spans",
    "token_signals",
    "value_signals",
    "text_signals",
    "signals_of",
]


@dataclass
class TokenTrace:
    """A llama-cpp logits processor that records, per generated token, the log-sum-exp of
    the raw logits, the argmax and its logit, and then the chosen token's log-probability."""

    prompt_tokens: int = 0
    chosen: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    forced: list[bool] = field(default_factory=list)
    _last: np.ndarray | None = None
    _last_lse: float = 0.0

    def __call__(self, input_ids: Any, logits: np.ndarray) -> np.ndarray:
        self._close_step(input_ids)
        shifted_max = float(logits.max())
        self._last_lse = shifted_max + float(np.log(np.exp(logits - shifted_max).sum()))
        self._last = logits.copy()
        return logits

    def _close_step(self, input_ids: Any) -> None:
        if self._last is None:
            return
        token = int(input_ids[-1])
        self.chosen.append(token)
        self.logprobs.append(float(self._last[token]) - self._last_lse)
        self.forced.append(token != int(self._last.argmax()))


def value_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the values of a top-level JSON object (empty if it is not one)."""
    decoder = json.JSONDecoder()
    spans: list[tuple[int, int]] = []
    index = len(text) - len(text.lstrip())
    if not text[index:].startswith("{"):
        return spans
    index += 1
    try:
        while True:
            index = _skip(text, index, " \n\r\t,")
            if index >= len(text) or text[index] == "}":
                return spans
            _, index = decoder.raw_decode(text, index)  # the key
            index = _skip(text, index, " \n\r\t:")
            start = index
            _, index = decoder.raw_decode(text, index)
            spans.append((start, index))
    except json.JSONDecodeError:
        return spans


def _skip(text: str, index: int, characters: str) -> int:
    while index < len(text) and text[index] in characters:
        index += 1
    return index


def token_signals(trace: TokenTrace, detokenize: Callable[[int], bytes], text: str) -> TokenSignals | None:
    """The signals of the tokens of ``text`` that fall inside its JSON values (offsets in
    UTF-8 bytes: a token may hold part of a character)."""
    steps = [
        (detokenize(token), logprob, forced)
        for token, logprob, forced in zip(trace.chosen, trace.logprobs, trace.forced, strict=True)
    ]
    return value_signals(steps, text)


def value_signals(steps: Sequence[tuple[bytes, float, bool]], text: str) -> TokenSignals | None:
    """The signals of the generated tokens (each its bytes, log-probability and whether it was
    forced) that fall inside the JSON values of ``text``, the reply they spell."""
    spans = [(len(text[:a].encode()), len(text[:b].encode())) for a, b in value_spans(text)]
    if not spans or not steps:
        return None
    picked: list[tuple[float, bool]] = []
    offset = 0
    for piece, logprob, forced in steps:
        start, offset = offset, offset + len(piece)
        if any(start < end and offset > begin for begin, end in spans):
            picked.append((logprob, forced))
    return signals_of([logprob for logprob, _ in picked], sum(1 for _, forced in picked if forced))


def text_signals(trace: TokenTrace) -> TokenSignals | None:
    """The signals of every token of a free-text reply (no grammar: nothing is forced)."""
    return signals_of(trace.logprobs, 0)


def signals_of(logprobs: Sequence[float], forced: int) -> TokenSignals | None:
    """The lowest and mean of some tokens' log-probabilities (``None`` for no tokens)."""
    if not logprobs:
        return None
    return TokenSignals(
        tokens=len(logprobs),
        min_logprob=min(logprobs),
        mean_logprob=sum(logprobs) / len(logprobs),
        forced_tokens=forced,
    )
