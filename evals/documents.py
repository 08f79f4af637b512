"""The summarization evaluation's documents: real, long public texts available offline.

Python HOWTOs from Debian's ``python3.11-doc`` (PSF licence), converted from their
reStructuredText sources to plain text once (``prepare_documents``) and kept in
``evals/data/documents/`` with their source. A document's own abstract, where it has one,
is removed from the text and kept as a human-written reference for ROUGE-L.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tierflow.errors import TierflowError

__all__ = [
    "DOCUMENTS_DIR",
    "HOWTOS",
    "MAX_CHARS",
    "Document",
    "digest",
    "prepare_documents",
    "load_documents",
]

DOCUMENTS_DIR = Path(__file__).resolve().parent / "data" / "documents"
HOWTO_SOURCES = Path("/usr/share/doc/python3.11/html/_sources/howto")
HOWTOS = (
    "annotations",
    "clinic",
    "curses",
    "descriptor",
    "isolating-extensions",
    "pyporting",
    "regex",
    "sockets",
    "sorting",
    "argparse",
)
MAX_CHARS = 6000
"""Each document is cut at a paragraph boundary below this (about 1,500 tokens), so that it
fits the SLM's context with its prompt and summary; longer inputs are the batch job's work."""


def _rst_to_text(source: str) -> tuple[str, str | None, str]:
    """(title, abstract, body) of a reStructuredText HOWTO, as plain text."""
    lines = source.splitlines()
    abstract: list[str] = []
    body: list[str] = []
    title = ""
    in_abstract = False
    for i, line in enumerate(lines):
        if (
            re.match(r"^\.\. topic:: Abstract", line)
            or line.strip() == "Abstract"
            and i + 1 < len(lines)
            and set(lines[i + 1].strip()) <= set("=-*^~")
        ):
            in_abstract = True
            continue
        if in_abstract:
            if line.strip() and not line.startswith((" ", "\t")) and not set(line.strip()) <= set("=-*^~"):
                in_abstract = False
            elif line.strip() and not set(line.strip()) <= set("=-*^~"):
                abstract.append(line.strip())
                continue
            else:
                continue
        if re.match(r"^\s*\.\. ", line) or re.match(r"^:[A-Za-z][\w ]*:(\s|$)", line):
            continue  # directives, labels, field lists (author, release)
        if line.strip() and set(line.strip()) <= set("=-*^~#'\"`"):
            continue  # section underlines
        if not title and line.strip():
            title = line.strip()
        body.append(line)
    return title, (_plain(" ".join(abstract)) or None), _plain("\n".join(body))


def _plain(text: str) -> str:
    """Inline reStructuredText markup as plain text."""
    text = re.sub(r":[\w:]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`", r"\1", text)  # :role:`text <target>`
    text = re.sub(r"``([^`]*)``", r"\1", text)
    text = re.sub(r"`([^`<]*?)(?:\s*<[^>]*>)?`_+", r"\1", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text.rfind("\n\n", 0, limit)
    return text[: cut if cut > limit // 2 else limit].rstrip()


def prepare_documents(source: Path = HOWTO_SOURCES, out: Path = DOCUMENTS_DIR) -> list[dict[str, Any]]:
    """Convert the HOWTOs to the evaluation's plain-text documents and index them."""
    if not source.is_dir():
        raise TierflowError(
            f"{source} does not exist",
            hint="Install Debian's python3.11-doc (apt-get install python3.11-doc).",
        )
    out.mkdir(parents=True, exist_ok=True)
    index = []
    for name in HOWTOS:
        title, abstract, body = _rst_to_text((source / f"{name}.rst.txt").read_text(encoding="utf-8"))
        text = _cut(body, MAX_CHARS)
        (out / f"{name}.txt").write_text(text + "\n", encoding="utf-8")
        index.append(
            {
                "name": name,
                "title": title,
                "source": f"python3.11-doc: {source / (name + '.rst.txt')}",
                "license": "PSF-2.0 (Python documentation)",
                "abstract": abstract,
                "chars": len(text),
                "full_chars": len(body),
            }
        )
    (out / "index.json").write_text(json.dumps(index, indent=1) + "\n", encoding="utf-8")
    return index


@dataclass(frozen=True)
class Document:
    name: str
    title: str
    text: str
    abstract: str | None

    @property
    def digest(self) -> str:
        return digest(self.text)


def digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]


def load_documents(directory: Path = DOCUMENTS_DIR) -> list[Document]:
    try:
        index = json.loads((directory / "index.json").read_text(encoding="utf-8"))
        return [
            Document(
                e["name"],
                e["title"],
                (directory / f"{e['name']}.txt").read_text(encoding="utf-8").strip(),
                e["abstract"],
            )
            for e in index
        ]
    except (OSError, json.JSONDecodeError, KeyError) as exc:
        raise TierflowError(
            f"the evaluation documents in {directory} cannot be read: {exc}",
            hint="Recreate them with `tierflow eval summaries --prepare` (needs python3.11-doc).",
        ) from None
