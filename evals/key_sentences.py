"""How much of each part of a document a summary covers, by code: no model judges it.

The batch benchmark's judge is the 1.5B model that writes the all-LLM summaries it compares
with, and it said 100% on every development document, so this is the second reading the
issue asks for. A document is cut into parts of about ``PART_CHARS`` characters. In each
part, the ``PER_PART`` sentences that say the most of it are its key sentences: a sentence
scores by the TF-IDF weight of its content words within the document (a word of every
sentence tells nothing; a sentence said again counts once), per word, so that a long
sentence gains nothing by its length alone. A key
sentence is covered when the summary holds at least half of its ``TERMS`` telling words,
words compared by their first ``STEM`` letters ("installs" matches "installing") and numbers
as written.

It measures whether a summary states what the parts say in the parts' own words, so a
summary that paraphrases well scores low and one that lists terms scores high: compare two
summaries of the same documents (tiered against all-LLM), not a figure with an absolute
target.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tierflow.evals.summaries import sentences

__all__ = ["KeySentence", "compare", "covered", "coverage", "key_sentences", "mean_of"]

PART_CHARS = 4_500
PER_PART = 5
TERMS = 4
TOPIC = 5
STEM = 5
MIN_WORDS = 5

_TOKEN = re.compile(r"[a-z][a-z0-9_+.-]*[a-z0-9]|\d+(?:[.,]\d+)*%?")
_STOP = frozenset(
    """a about above after again against all also am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further had has
    have having he her here hers him his how i if in into is it its itself just me more most my no nor
    not now of off on once only or other our out over own same she should so some such than that the
    their them then there these they this those through to too under until up very was we were what
    when where which while who whom why will with would you your yours one two use used using may must
    many much see also e.g i.e etc""".split()
)


@dataclass(frozen=True)
class KeySentence:
    part: int
    text: str
    terms: tuple[str, ...]
    """Its telling words, by weight: stems, or numbers as written."""


def _terms(text: str) -> list[str]:
    words = _TOKEN.findall(text.lower())
    return [
        w if w[0].isdigit() else w[:STEM] for w in words if w not in _STOP and len(w) > 2 or w[0].isdigit()
    ]


def _parts(text: str, part_chars: int) -> list[str]:
    """The document in parts of about ``part_chars`` characters, cut between paragraphs."""
    parts: list[str] = []
    current = ""
    for paragraph in re.split(r"\n\s*\n", text):
        if current and len(current) + len(paragraph) > part_chars:
            parts.append(current)
            current = ""
        current = f"{current}\n\n{paragraph}" if current else paragraph
    if current.strip():
        parts.append(current)
    return parts


def key_sentences(text: str, part_chars: int = PART_CHARS) -> list[KeySentence]:
    """Each part's ``PER_PART`` sentences that say the most of it, in the document's order."""
    seen: set[str] = set()  # a sentence said again (boilerplate) counts once, where it first is
    parts: list[list[str]] = []
    for part in _parts(text, part_chars):
        fresh = [s for s in dict.fromkeys(sentences(part)) if len(_terms(s)) >= MIN_WORDS and s not in seen]
        seen.update(fresh)
        parts.append(fresh)
    every = [s for part in parts for s in part]
    if not every:
        return []
    frequency = Counter(t for s in every for t in _terms(s))
    holding = Counter(t for s in every for t in set(_terms(s)))

    def weight(term: str) -> float:
        return (1 + math.log(frequency[term])) * math.log((1 + len(every)) / holding[term])

    topic = {term for term, _ in frequency.most_common(TOPIC)}  # what any summary names

    chosen: list[KeySentence] = []
    for index, said in enumerate(parts):
        scored = []
        for sentence in said:
            distinct = set(_terms(sentence))
            score = sum(weight(t) for t in distinct) / len(distinct)
            telling = sorted(distinct - topic, key=lambda t: (-weight(t), t))[:TERMS]
            if telling:
                scored.append((score, sentence, tuple(telling)))
        best = sorted(scored, key=lambda row: -row[0])[:PER_PART]
        order = {sentence: n for n, sentence in enumerate(said)}
        chosen += [KeySentence(index, s, terms) for _, s, terms in sorted(best, key=lambda r: order[r[1]])]
    return chosen


def covered(key: KeySentence, summary: str) -> bool:
    """Whether the summary holds at least half of the key sentence's telling words."""
    held = set(_terms(summary))
    return sum(term in held for term in key.terms) * 2 >= len(key.terms)


def coverage(text: str, summary: str, part_chars: int = PART_CHARS) -> dict[str, float | int | None]:
    """The share of the document's key sentences the summary covers, and of its parts
    with at least one covered."""
    keys = key_sentences(text, part_chars)
    hits = [covered(key, summary) for key in keys]
    parts = sorted({key.part for key in keys})
    drawn = [any(hit for key, hit in zip(keys, hits, strict=True) if key.part == part) for part in parts]
    return {
        "key_sentences": len(keys),
        "covered": round(sum(hits) / len(hits), 3) if hits else None,
        "parts": len(parts),
        "parts_drawn_on": round(sum(drawn) / len(drawn), 3) if drawn else None,
    }


def mean_of(readings: Iterable[Mapping[str, float | int | None]], key: str) -> float | None:
    """The mean of ``key`` over documents' ``coverage`` readings that have it."""
    values = [float(value) for reading in readings if (value := reading[key]) is not None]
    return round(sum(values) / len(values), 3) if values else None


def compare(
    texts: Mapping[str, str], tiered: Mapping[str, str], reference: Mapping[str, str]
) -> dict[str, Any]:
    """Key sentences covered by each side's summaries, per document and on average, over the
    documents both summarized, and the tiered share against the reference's."""
    names = sorted(set(tiered) & set(reference) & set(texts))
    read = {
        side: {name: coverage(texts[name], summaries[name]) for name in names}
        for side, summaries in (("tiered", tiered), ("reference", reference))
    }
    per_document = [
        {"document": name, "tiered": read["tiered"][name], "reference": read["reference"][name]}
        for name in names
    ]

    def mean(side: str, key: str) -> float | None:
        return mean_of(read[side].values(), key)

    covered_tiered, covered_reference = mean("tiered", "covered"), mean("reference", "covered")
    return {
        "documents": len(names),
        "key_sentences_covered_tiered": covered_tiered,
        "key_sentences_covered_llm": covered_reference,
        "tiered_against_llm": round(covered_tiered / covered_reference, 3)
        if covered_tiered is not None and covered_reference
        else None,
        "parts_drawn_on_tiered": mean("tiered", "parts_drawn_on"),
        "parts_drawn_on_llm": mean("reference", "parts_drawn_on"),
        "settings": {"part_chars": PART_CHARS, "per_part": PER_PART, "terms": TERMS, "topic": TOPIC},
        "per_document": per_document,
    }
