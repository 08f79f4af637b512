"""Checks by code that a summary is faithful to its source, sentence by sentence.

A small model's summary goes wrong in ways a judge of the same size does not notice: it
names someone the text never names, gives one side of a comparison the figure the text gives
the other, or covers only the first part of a document. Each check here raises ``Rejected``
with what it found (a ``verify`` for ``summarize``); under ``tiered`` the summary escalates.

- ``names_grounded``: every proper name the summary uses stands in the source.
- ``numbers_attributed``: a figure the summary ties to a subject is tied to it in the source.
  The words just before the figure in the summary must stand near the figure in the source
  (its sentence or a neighbour) when the source attaches them to other figures elsewhere.
- ``every_part_drawn_on``: a summary of notes in parts (``Part 1 of 3: ...``, as the batch
  job writes a long document's chunk summaries) says something only that part says, for
  every part that has such words.
"""

from __future__ import annotations

import re

from tierflow.agents.escalation import Rejected
from tierflow.agents.scoring import written_numbers

__all__ = [
    "names_grounded",
    "numbers_attributed",
    "every_part_drawn_on",
    "ungrounded_names",
    "part_label",
    "split_parts",
]

_NAME = re.compile(r"(?<![.!?]\s)(?<!^)\b[A-Z][a-z]+(?:\s+[A-Z][a-z]+)*")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
_WORD = re.compile(r"[a-z][a-z'-]{2,}")
_STOP = frozenset(
    "the and are was were has have had its their this that these those with from for into than "
    "then also about over under more less most least each per all any both which who whom "
    "whose what when where while will would could should can may might been being not".split()
)
_PART = re.compile(r"^Part (\d+) of (\d+):\s*", re.MULTILINE)
_BEFORE = 4  # the summary's words before a figure that name what it belongs to
_FIGURE = re.compile(r"\d[\d,.]*\d|\d")
_CLAUSE = re.compile(r"[;:]|\b(?:but|while|whereas|against|compared with|versus|vs)\b", re.IGNORECASE)


def ungrounded_names(text: str, source: str) -> list[str]:
    """The proper names ``text`` uses (capitalized words not opening a sentence) with a word
    that ``source`` never contains (as a word or in one: "Git" is in "GitHub"), in order."""
    lower = source.lower()
    names = (name for name in _NAME.findall(text) if any(w not in lower for w in name.lower().split()))
    return list(dict.fromkeys(names))


def names_grounded(summary: str, source: str) -> None:
    """A ``verify`` check: the summary names no one and nothing the source does not."""
    if invented := ungrounded_names(summary, source):
        raise Rejected("ungrounded_names", f"it names {', '.join(invented[:5])}, which the text does not")


def _sentences(text: str) -> list[str]:
    return [part.strip() for part in _SENTENCE.split(text) if part.strip()]


def _content(text: str) -> list[str]:
    return [word for word in _WORD.findall(text.lower()) if word not in _STOP]


def _figures_with_subjects(sentence: str) -> list[tuple[str, list[str]]]:
    """The figures a sentence states, each with the (at most ``_BEFORE``) content words just
    before it in its clause: what the figure is said of."""
    found, clause_start = [], 0
    for match in _FIGURE.finditer(sentence):
        before = _CLAUSE.split(sentence[clause_start : match.start()])[-1]
        clause_start = match.end()
        number = next(iter(written_numbers(match.group())), None)
        if number is not None:
            found.append((number, _content(before)[-_BEFORE:]))
    return found


def _distinctive(number: str, sentences_with_it: int) -> bool:
    """A figure worth checking: not a small count anyone writes, nor one the text uses often."""
    try:
        small = float(number) == int(float(number)) and abs(float(number)) <= 10
    except (ValueError, OverflowError):  # not a number, or too long to be a float
        small = False
    return not small and sentences_with_it <= 3


def numbers_attributed(summary: str, source: str) -> None:
    """A ``verify`` check: a figure the summary gives a subject belongs to that subject in the
    source. A word just before a figure in the summary that the source puts just before some
    figure (a subject the source gives figures to) must stand in this figure's source sentence
    or a neighbour."""
    sentences = _sentences(source)
    words = [set(_content(sentence)) for sentence in sentences]
    stated = [_figures_with_subjects(sentence) for sentence in sentences]
    figures = [{number for number, _ in found} for found in stated]
    subjects = {word for found in stated for _, before in found for word in before}
    for claim in _sentences(summary):
        for number, before in _figures_with_subjects(claim):
            where = [i for i, found in enumerate(figures) if number in found]
            if not where or not _distinctive(number, len(where)):
                continue  # an ungrounded figure is numbers_grounded's to report
            around = {j for i in where for j in (i - 1, i, i + 1) if 0 <= j < len(words)}
            near = set().union(*(words[j] for j in around))
            rival = [word for word in before if word in subjects and word not in near]
            if rival:
                raise Rejected(
                    "misattributed",
                    f"it gives {number} to '{rival[0]}', where the text gives that figure to something else",
                )


def part_label(index: int, total: int) -> str:
    """The label that opens part ``index`` (from 1) of ``total`` in notes written in parts."""
    return f"Part {index} of {total}: "


def split_parts(notes: str) -> list[str]:
    """The parts of notes written with ``part_label`` (the whole text, if it has none)."""
    starts = list(_PART.finditer(notes))
    if len(starts) < 2:
        return [notes]
    ends = [match.start() for match in starts[1:]] + [len(notes)]
    return [notes[match.end() : end].strip() for match, end in zip(starts, ends, strict=True)]


def every_part_drawn_on(summary: str, notes: str) -> None:
    """A ``verify`` check: a summary of notes in parts says something of each part: one of
    the words or figures found only in that part, for each part that has three or more."""
    parts = split_parts(notes)
    if len(parts) < 2:
        return
    terms = [set(_content(part)) | set(written_numbers(part)) for part in parts]
    said = set(_content(summary)) | set(written_numbers(summary))
    missed = []
    for index, own in enumerate(terms):
        others = set().union(*(t for j, t in enumerate(terms) if j != index))
        only_here = own - others
        if len(only_here) >= 3 and not only_here & said:
            missed.append(index + 1)
    if missed:
        which = ", ".join(str(n) for n in missed)
        raise Rejected("misses_part", f"it says nothing of part {which} of {len(parts)}")
