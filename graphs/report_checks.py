"""The cross-document report holds what its section titles promise, checked and mended by code.

The model that writes the report (``synthesis_graph``) is asked for three sections. A model
may still write a "Key numbers" section without a number, or fill "Themes" and "Differences"
with one document's summary word for word. ``mend_report`` checks each section against the
summaries it was written from:

- **Key numbers** must state a figure the summaries state. If it does not, and the
  summaries have figures, the section is replaced by the summaries' own sentences that
  state figures, each under its document's name (quoted, so nothing is invented).
- **Themes** and **Differences** must not repeat a summary: a line that shares a run of
  ``COPY_WORDS`` words with one is dropped; a section left empty says so.

Every change is listed, for the trace.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tierflow.agents.scoring import written_numbers

__all__ = ["mend_report", "Mended", "COPY_WORDS"]

COPY_WORDS = 12
MAX_QUOTED = 8
_HEADING = re.compile(r"^##\s+(.+?)\s*$", re.MULTILINE)
_SOURCE = re.compile(r"^\[(.+?)\]\s*$", re.MULTILINE)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Mended:
    report: str
    changes: list[str]


def _summaries(text: str) -> dict[str, str]:
    """The ``[name]``-headed summaries of ``summaries_text``, by name."""
    marks = list(_SOURCE.finditer(text))
    ends = [mark.start() for mark in marks[1:]] + [len(text)] * bool(marks)
    return {mark.group(1): text[mark.end() : end].strip() for mark, end in zip(marks, ends, strict=True)}


def _sections(report: str) -> list[tuple[str, str]]:
    """(title, body) of each ``##`` section, with ("", preamble) first when there is one."""
    marks = list(_HEADING.finditer(report))
    sections = [("", report[: marks[0].start()] if marks else report)]
    ends = [mark.start() for mark in marks[1:]] + [len(report)] * bool(marks)
    sections += [(mark.group(1), report[mark.end() : end]) for mark, end in zip(marks, ends, strict=True)]
    return sections


def _grams(text: str) -> set[tuple[str, ...]]:
    words = [word.lower() for word in _WORD.findall(text)]
    return {tuple(words[i : i + COPY_WORDS]) for i in range(len(words) - COPY_WORDS + 1)}


def _figures_quoted(summaries: dict[str, str]) -> list[str]:
    lines: list[str] = []
    for name, summary in summaries.items():
        for sentence in _SENTENCE.split(summary):
            if written_numbers(sentence) and len(lines) < MAX_QUOTED:
                lines.append(f"- {sentence.strip()} [{name}]")
    return lines


def mend_report(report: str, summaries_text: str) -> Mended:
    """``report`` with its sections made to hold what their titles promise (see the module)."""
    summaries = _summaries(summaries_text)
    stated = {number for summary in summaries.values() for number in written_numbers(summary)}
    copied = set().union(*(_grams(summary) for summary in summaries.values())) if summaries else set()
    changes: list[str] = []
    mended = []
    for title, body in _sections(report):
        kind = title.lower()
        if "number" in kind and stated and not set(written_numbers(body)) & stated:
            quoted = _figures_quoted(summaries)
            body = "\n\n*Quoted from the summaries (the report stated none of their figures):*\n\n"
            body += "\n".join(quoted) + "\n\n"
            changes.append(f"'{title}' stated none of the summaries' figures: {len(quoted)} quoted instead")
        elif ("theme" in kind or "difference" in kind) and copied:
            lines = body.split("\n")
            kept = [line for line in lines if not _grams(line) & copied]
            if len(kept) < len(lines):
                changes.append(f"'{title}': {len(lines) - len(kept)} line(s) repeating a summary dropped")
                if not any(line.strip() for line in kept):
                    kept = ["", "*(nothing beyond what the summaries above say)*", ""]
                body = "\n".join(kept)
        mended.append(f"## {title}{body}" if title else body)
    return Mended("".join(mended), changes)
