"""Redaction: personal values replaced by placeholders before any LLM call, and restored in
what the LLM returns, so the large model never sees them and the final output still has them.

Rules find e-mail addresses, phone numbers, IBANs, payment card numbers (Luhn-checked) and
ID numbers (US social security numbers, plus any patterns given); names are found by the
SLM (``find_names``), since no rule can. One ``Redactor`` serves a whole run, so a value
gets the same placeholder in every call. The trace records which kinds were replaced,
never the values in the messages sent.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence

from tierflow.agents.protocol import Message

__all__ = ["Redactor", "REDACTION_KINDS", "luhn_valid"]

REDACTION_KINDS = ("email", "iban", "card", "id", "phone", "name")

_RULES: dict[str, re.Pattern[str]] = {
    "email": re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b"),
    "iban": re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,4})?\b"),
    "card": re.compile(r"\b\d(?:[ -]?\d){12,18}\b"),
    "id": re.compile(r"\b\d{3}-\d{2}-\d{4}\b"),
    "phone": re.compile(
        r"(?<![\w])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]\d{2,4}){2,4}(?![\w-])"
    ),
}
_PLACEHOLDER = re.compile(r"\[(?:EMAIL|IBAN|CARD|ID|PHONE|NAME)_\d+\]")


def luhn_valid(number: str) -> bool:
    digits = [int(ch) for ch in number if ch.isdigit()]
    total = 0
    for position, digit in enumerate(reversed(digits)):
        if position % 2 == 1:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return len(digits) >= 13 and total % 10 == 0


def _plausible(kind: str, value: str) -> bool:
    """Rules match shapes; these checks drop shapes that are not what they look like."""
    if kind == "card":
        return luhn_valid(value)
    if kind == "phone":
        return 7 <= sum(ch.isdigit() for ch in value) <= 13
    return True


class Redactor:
    """Replaces values of the chosen ``kinds`` with placeholders such as ``[EMAIL_1]``."""

    def __init__(
        self,
        kinds: Iterable[str] = REDACTION_KINDS,
        *,
        id_patterns: Mapping[str, str] | None = None,
    ) -> None:
        chosen = set(kinds)
        unknown = chosen - set(REDACTION_KINDS)
        if unknown:
            raise ValueError(f"unknown redaction kinds {sorted(unknown)}; kinds are {REDACTION_KINDS}")
        self.kinds = tuple(kind for kind in REDACTION_KINDS if kind in chosen)
        self._extra_ids = [re.compile(p) for p in (id_patterns or {}).values()]
        self._by_value: dict[str, str] = {}
        self._by_placeholder: dict[str, str] = {}
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    @property
    def wants_names(self) -> bool:
        return "name" in self.kinds

    def _placeholder(self, kind: str, value: str) -> str:
        with self._lock:
            if value not in self._by_value:
                self._counts[kind] = self._counts.get(kind, 0) + 1
                placeholder = f"[{kind.upper()}_{self._counts[kind]}]"
                self._by_value[value] = placeholder
                self._by_placeholder[placeholder] = value
            return self._by_value[value]

    def redact_text(self, text: str, names: Sequence[str] = ()) -> tuple[str, set[str]]:
        """``text`` with every value found replaced; the kinds that were found."""
        found: set[str] = set()
        for kind in self.kinds:
            patterns = [_RULES[kind]] if kind in _RULES else []
            if kind == "id":
                patterns += self._extra_ids
            for pattern in patterns:

                def swap(match: re.Match[str], kind: str = kind) -> str:
                    value = match.group(0)
                    if _PLACEHOLDER.fullmatch(value) or not _plausible(kind, value):
                        return value
                    found.add(kind)
                    return self._placeholder(kind, value)

                text = pattern.sub(swap, text)
        if self.wants_names:
            for name in sorted({n.strip() for n in names if len(n.strip()) > 1}, key=len, reverse=True):
                if name in text:
                    found.add("name")
                    text = text.replace(name, self._placeholder("name", name))
        return text, found

    def redact(
        self, messages: Sequence[Message], find_names: Callable[[str], list[str]] | None = None
    ) -> tuple[list[Message], list[str]]:
        """Messages safe to send to the LLM, and the kinds replaced (for the trace)."""
        found: set[str] = set()
        result: list[Message] = []
        for message in messages:
            names = find_names(message["content"]) if find_names and message["role"] == "user" else []
            text, kinds = self.redact_text(message["content"], names)
            found |= kinds
            result.append({"role": message["role"], "content": text})
        return result, [kind for kind in REDACTION_KINDS if kind in found]

    def restore(self, text: str) -> str:
        """``text`` with every placeholder this run made put back to its value."""
        return _PLACEHOLDER.sub(lambda m: self._by_placeholder.get(m.group(0), m.group(0)), text)
