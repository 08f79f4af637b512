"""How sure the SLM is of a choice among fixed options (which tool, or none).

Grammar-constrained decoding guarantees that the SLM names one of the options, not that it
was right. After the call, the options are scored by teacher forcing on the same llama.cpp
context: the reply's text up to the chosen value is kept, each option is put in its place,
and the log-probabilities of the option's tokens are summed. Normalised over the options,
this gives a distribution over the options. The reply is set to the most probable option
(token-by-token greedy decoding under a grammar can commit to a worse option on its first
token), and that option's probability is the confidence a tiered node compares with
``TierPolicy.min_confidence``.

The prompt is already in llama.cpp's KV cache, so scoring costs one forward pass per token
that differs between options. Options whose first differing token is already unlikely
(below ``PRUNE_BELOW``) are not followed further: their probability is bounded by it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ChoiceField", "choice_field", "choice_probabilities", "rechoose", "PRUNE_BELOW"]

PRUNE_BELOW = math.log(1e-4)


@dataclass(frozen=True)
class ChoiceField:
    """A JSON object schema whose one property is a string enum: ``{"tool": "a"|"b"|...}``."""

    name: str
    options: tuple[str, ...]


def choice_field(schema: dict[str, Any] | None) -> ChoiceField | None:
    if not schema or schema.get("type") != "object":
        return None
    properties = schema.get("properties") or {}
    if len(properties) != 1:
        return None
    ((name, prop),) = properties.items()
    options = prop.get("enum")
    if not isinstance(options, list) or len(options) < 2 or not all(isinstance(o, str) for o in options):
        return None
    return ChoiceField(name, tuple(options))


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max()
    result: np.ndarray = shifted - np.log(np.exp(shifted).sum())
    return result


def _common_prefix(sequences: list[list[int]]) -> int:
    length = min(len(s) for s in sequences)
    for i in range(length):
        token = sequences[0][i]
        if any(s[i] != token for s in sequences[1:]):
            return i
    return length


def choice_probabilities(
    llama: Any, prompt_tokens: int, text: str, field: ChoiceField
) -> dict[str, float] | None:
    """P(option) for each option of ``field``, given the prompt the call just evaluated.

    ``llama`` is a ``llama_cpp.Llama`` right after a completion whose prompt was
    ``prompt_tokens`` long and whose reply was ``text``. Returns ``None`` when the reply does
    not contain one of the options (nothing to score). The caller holds the model's lock.
    """
    try:
        chosen = json.loads(text).get(field.name)
    except (json.JSONDecodeError, AttributeError):
        return None
    if chosen not in field.options:
        return None
    start = text.find(json.dumps(chosen), text.find(json.dumps(field.name)) + 1)
    if start < 0 or prompt_tokens <= 0 or prompt_tokens > llama.n_tokens:
        return None
    prefix = text[:start]
    prompt = [int(t) for t in llama.input_ids[:prompt_tokens]]
    encoded = [
        llama.tokenize((prefix + json.dumps(option)).encode(), add_bos=False, special=False)
        for option in field.options
    ]
    shared = _common_prefix(encoded)
    if any(len(tokens) == shared for tokens in encoded):  # an option is a token-prefix of another
        shared = max(0, shared - 1)
    base = prompt + encoded[0][:shared]
    # Keep what the KV cache already holds of ``base``, but re-evaluate at least its last token.
    cached = _common_prefix([[int(t) for t in llama.input_ids[: llama.n_tokens]], base])
    llama.n_tokens = min(cached, len(base) - 1)
    llama.eval(base[llama.n_tokens :])
    n_vocab = llama.n_vocab()
    first = _log_softmax(np.ctypeslib.as_array(llama._ctx.get_logits(), shape=(n_vocab,)).copy())
    scores: dict[str, float] = {}
    for option, tokens in zip(field.options, encoded, strict=True):
        tail = tokens[shared:]
        total = float(first[tail[0]])
        if total >= PRUNE_BELOW:
            llama.n_tokens = len(base)
            for previous, token in zip(tail, tail[1:], strict=False):
                llama.eval([previous])
                logits = np.ctypeslib.as_array(llama._ctx.get_logits(), shape=(n_vocab,))
                total += float(_log_softmax(logits.copy())[token])
        scores[option] = total
    top = max(scores.values())
    weights = {option: math.exp(score - top) for option, score in scores.items()}
    norm = sum(weights.values())
    return {option: weight / norm for option, weight in weights.items()}


def rechoose(
    text: str, field: ChoiceField, probabilities: dict[str, float], best: str | None = None
) -> tuple[str, str]:
    """``text`` with its choice replaced by ``best`` (default: the most probable option), and
    the original choice."""
    data = json.loads(text)
    greedy = str(data[field.name])
    if best is None:
        best = max(probabilities, key=lambda option: probabilities[option])
    if best == greedy:
        return text, greedy
    data[field.name] = best
    return json.dumps(data, ensure_ascii=False), greedy
