"""Which encoding a text file's bytes are in: UTF-8, a byte-order mark's, a declared one, or
the one charset-normalizer detects.

A report saved by an older Windows program is often cp1252 (Western European) or another
legacy code page; failing it as "not UTF-8" makes the user convert every file by hand. Among
the encodings charset-normalizer finds equally plausible, cp1252 is preferred, as the most
common legacy encoding of Western text: a short French or German text is otherwise often read
as Central European (cp1250), which turns "à" into "ŕ".
"""

from __future__ import annotations

import codecs
from pathlib import Path

from charset_normalizer import from_bytes

__all__ = ["text_encoding", "UndecodableText", "BinaryText"]

SNIFF_BYTES = 8192
_BOMS = (  # longest first: UTF-32 LE's mark begins with UTF-16 LE's
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_TIE = 0.01  # chaos and coherence this close count as equally plausible


class BinaryText(ValueError):
    """The bytes hold NUL bytes and no byte-order mark: not text."""


class UndecodableText(ValueError):
    """No encoding reads the bytes as plausible text; ``offset``: the first byte UTF-8 refuses."""

    def __init__(self, offset: int) -> None:
        super().__init__(f"no encoding fits (UTF-8 fails at byte {offset})")
        self.offset = offset


def text_encoding(data: bytes, declared: str | None = None, *, path: Path | None = None) -> str:
    """The codec name to decode ``data`` with (``declared``: what the file says of itself,
    e.g. an HTML ``<meta charset>``). Raises ``BinaryText`` or ``UndecodableText``."""
    for mark, encoding in _BOMS:
        if data.startswith(mark):
            return encoding
    if b"\x00" in data[:SNIFF_BYTES]:
        raise BinaryText(f"{path or 'the text'} contains NUL bytes")
    try:
        data.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError as exc:
        offset = exc.start
    if declared is not None and _decodes(data, declared):
        return codecs.lookup(declared).name
    # charset-normalizer names an encoding for some noise that the encoding then refuses
    matches = [match for match in from_bytes(data) if _decodes(data, match.encoding)]
    if not matches:
        raise UndecodableText(offset)
    best = matches[0]
    tied = [
        match
        for match in matches
        if match.chaos <= best.chaos + _TIE and match.coherence >= best.coherence - _TIE
    ]
    if any("cp1252" in match.could_be_from_charset for match in tied) and _decodes(data, "cp1252"):
        return "cp1252"
    return codecs.lookup(best.encoding).name


def _decodes(data: bytes, encoding: str) -> bool:
    try:
        data.decode(encoding)
    except (UnicodeDecodeError, LookupError):
        return False
    return True
