"""The SLM's signals when it runs on a server: read from the log-probabilities that an
OpenAI-compatible server returns with a chat completion (``logprobs``, ``top_logprobs``).

In process, the SLM's signals come from its raw logits (``tierflow.agents.signals``) and a
choice's option probabilities from teacher forcing each option (``tierflow.agents.confidence``).
A server gives less: for each generated token, its log-probability and the ``top_logprobs``
most likely tokens at that position. llama.cpp's servers report them before the grammar masks
the logits, as the in-process trace does; vLLM and Ollama report the model's own distribution.

* **Value and text signals** are the same numbers as in process: the log-probabilities of the
  tokens inside the JSON values (or of every token of a text), and how many tokens were not the
  most likely one at their position (forced by the grammar).
* **Option probabilities** are estimated along the reply's path. At each token from where the
  value starts, the options still consistent with the reply so far share the probability of
  the listed tokens that could begin their rest; an option no listed token begins gets the
  smallest listed probability, an upper bound. The factors multiply until an option leaves the
  path. Grammar-forced tokens that are not the model's own tokenization (``ge`` + ``t`` for
  ``get``) cost nothing, since every option still alive shares them. An option that only the
  bound speaks for is never chosen over the reply.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tierflow.agents.confidence import ChoiceField
from tierflow.agents.signals import signals_of, value_signals
from tierflow.records import TokenSignals

__all__ = ["ServedToken", "served_tokens", "served_value_signals", "served_text_signals", "served_choice"]

_FLOOR = -1e4  # what a log-probability of minus infinity (or vLLM's -9999) is read as


@dataclass(frozen=True)
class ServedToken:
    """One generated token as the server reported it: its bytes, its log-probability, and the
    most likely tokens at its position (the token itself among them)."""

    piece: bytes
    logprob: float
    top: dict[bytes, float]

    @property
    def forced(self) -> bool:
        """Whether another token was more likely here (the grammar, or sampling, chose it)."""
        best = max(self.top.values(), default=self.logprob)
        return self.logprob < best and self.top.get(self.piece, self.logprob) < best


def served_tokens(logprobs: Any) -> list[ServedToken] | None:
    """The tokens of a chat completion choice's ``logprobs``, or ``None`` when the server sent
    none (or not in the OpenAI shape)."""
    content = getattr(logprobs, "content", None)
    if content is None and isinstance(logprobs, dict):
        content = logprobs.get("content")
    if not isinstance(content, list) or not content:
        return None
    tokens: list[ServedToken] = []
    for item in content:
        piece, logprob = _piece(item), _number(_field(item, "logprob"))
        if piece is None or logprob is None:
            return None
        top: dict[bytes, float] = {}
        for alternative in _field(item, "top_logprobs") or []:
            other, value = _piece(alternative), _number(_field(alternative, "logprob"))
            if other is not None and value is not None:
                top[other] = max(value, top.get(other, _FLOOR))
        top.setdefault(piece, logprob)
        tokens.append(ServedToken(piece, logprob, top))
    return tokens


def served_value_signals(tokens: Sequence[ServedToken], text: str) -> TokenSignals | None:
    """The log-probabilities of the tokens inside the JSON values of ``text``."""
    return value_signals([(token.piece, token.logprob, token.forced) for token in tokens], text)


def served_text_signals(tokens: Sequence[ServedToken]) -> TokenSignals | None:
    """The log-probabilities of every token of a free text."""
    return signals_of([token.logprob for token in tokens], 0)


def served_choice(
    tokens: Sequence[ServedToken], text: str, field: ChoiceField
) -> tuple[dict[str, float], str] | None:
    """Each option's estimated probability (see the module's docstring) and the option to
    keep: the most probable one that a listed token spoke for. ``None`` when the reply holds no
    option or the tokens do not spell it."""
    located = _locate(text, field)
    raw = text.encode()
    if located is None or b"".join(token.piece for token in tokens) != raw:
        return None
    chosen, start, end, dumps = located
    offset, first = 0, None
    for index, token in enumerate(tokens):
        if offset + len(token.piece) > start:
            first = index
            break
        offset += len(token.piece)
    if first is None:
        return None
    rests = {option: raw[offset:start] + dumps(option).encode() + raw[end:] for option in field.options}
    scores = dict.fromkeys(field.options, 0.0)
    alive, bounded = set(field.options), set()
    position = 0  # bytes into the rests
    for token in tokens[first:]:
        if len(alive) <= 1 or offset + position >= end:
            break
        floor = min(token.top.values())
        masses: dict[str, float] = {}
        spoken: set[bytes] = set()
        for option in alive:
            rest = rests[option][position:]
            pieces = [piece for piece in token.top if piece and rest.startswith(piece)]
            spoken.update(pieces)
            if pieces:
                masses[option] = _logsumexp([token.top[piece] for piece in pieces])
            else:
                masses[option] = floor
                bounded.add(option)
        total = _logsumexp(
            [token.top[piece] for piece in spoken] + [floor for option in alive if option in bounded]
        )
        for option in alive:
            scores[option] += masses[option] - total
        position += len(token.piece)
        alive = {option for option in alive if rests[option][:position] == raw[offset : offset + position]}
    top = max(scores.values())
    weights = {option: math.exp(score - top) for option, score in scores.items()}
    norm = sum(weights.values())
    probabilities = {option: weight / norm for option, weight in weights.items()}
    supported = [option for option in field.options if option not in bounded] or [chosen]
    keep = max(supported, key=lambda option: probabilities[option])
    return probabilities, keep


def _locate(text: str, field: ChoiceField) -> tuple[str, int, int, Any] | None:
    """The chosen option, the byte span of its JSON string in ``text``, and how the reply
    writes strings (with or without ``\\u`` escapes)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None
    chosen = data.get(field.name) if isinstance(data, dict) else None
    if chosen not in field.options:
        return None
    key = text.find(json.dumps(field.name))
    for ascii_only in (False, True):

        def dumps(value: str, ascii_only: bool = ascii_only) -> str:
            return json.dumps(value, ensure_ascii=ascii_only)

        at = text.find(dumps(chosen), key + 1) if key >= 0 else -1
        if at >= 0:
            start = len(text[:at].encode())
            return chosen, start, start + len(dumps(chosen).encode()), dumps
    return None


def _logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(value - top) for value in values))


def _field(item: Any, name: str) -> Any:
    return item.get(name) if isinstance(item, dict) else getattr(item, name, None)


def _piece(item: Any) -> bytes | None:
    """A token's bytes: its ``bytes`` list when the server sends one (a token may hold part of
    a character), else its text."""
    data = _field(item, "bytes")
    if isinstance(data, list) and all(isinstance(b, int) and 0 <= b < 256 for b in data):
        return bytes(data)
    token = _field(item, "token")
    return token.encode() if isinstance(token, str) else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and value > _FLOOR else _FLOOR
