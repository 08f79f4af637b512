"""Reading the reports a batch job summarizes: plain text, Markdown, HTML, PDF and DOCX.

``find_inputs`` turns the files, folders and globs a user names into a sorted list of
paths; ``read_document`` turns one path into normalized plain text. Every problem with a
file (missing, binary, encrypted, damaged, too large, no text) raises ``DocumentError``,
whose ``reason`` is a short code the job can count and whose message names the file, so
one bad report is recorded and the job goes on.
"""

from __future__ import annotations

import glob
import hashlib
import io
import os
import re
import stat
import time
import warnings
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import docx
import pypdf
from bs4 import BeautifulSoup
from bs4.dammit import EncodingDetector
from bs4.element import NavigableString
from docx.opc.exceptions import OpcError
from docx.table import Table
from lxml.etree import LxmlError
from pypdf.errors import DependencyError, LimitReachedError, PyPdfError
from tierflow.errors import MAIN_GUARD_HINT, ProcessStartError, TaskInputError, TierflowError
from tierflow.paths import name_is_utf8, printable_name
from tierflow.tools.encodings import BinaryText, UndecodableText, text_encoding

__all__ = [
    "SUPPORTED_SUFFIXES",
    "DocumentError",
    "DocumentKind",
    "FailureReason",
    "ReadDocument",
    "content_hash",
    "find_inputs",
    "read_document",
    "printable_name",
    "name_is_utf8",
    "Inputs",
    "BoundedReader",
    "READ_DEADLINE_S",
]

DocumentKind = Literal["text", "markdown", "html", "pdf", "docx"]
FailureReason = Literal[
    "unreadable",
    "empty",
    "binary",
    "password_protected",
    "too_large",
    "corrupt",
    "unknown_encoding",
    "unsupported",
    "name_not_utf8",
    "too_complex",
    "link_outside",
    "too_slow",
    "crashed",
]

SUPPORTED_SUFFIXES: tuple[str, ...] = (".txt", ".md", ".markdown", ".html", ".htm", ".pdf", ".docx")

_KINDS: dict[str, DocumentKind] = {
    ".txt": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
    ".docx": "docx",
}
MAX_UNPACKED_PART = 64_000_000
"""The most one part of a .docx may unpack to (a zip bomb holds hundreds of MB of XML)."""
MAX_UNPACKED_TOTAL = 400_000_000
"""The most all parts of a .docx may unpack to."""
MAX_HTML_DEPTH = 512
"""The deepest nesting of HTML elements read (100,000 nested divs take minutes to parse)."""
MAX_HTML_TAGS = 500_000
MAX_PDF_PAGES = 5_000
_GLOB_CHARS = frozenset("*?[")
_DROPPED_TAGS = ["script", "style", "noscript", "template", "head"]
_BLOCK_TAGS = [
    "address", "article", "aside", "blockquote", "dd", "div", "dl", "dt", "figcaption", "figure",
    "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol",
    "p", "pre", "section", "table", "tr", "ul",
]  # fmt: skip
# A damaged PDF can make pypdf raise nearly anything; these are the ones seen in practice.
_PDF_FAILURES = (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError, AssertionError)
_DOCX_FAILURES = (zipfile.BadZipFile, KeyError, ValueError, OpcError, LxmlError)


class DocumentError(TierflowError):
    """A file cannot be read as a document. ``reason`` is one of ``FailureReason``; the
    message names the file and says what is wrong, the hint says what to do."""

    def __init__(self, reason: FailureReason, message: str, *, hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.reason: FailureReason = reason

    def __reduce__(self) -> tuple[type[DocumentError], tuple[FailureReason, str], dict[str, object]]:
        # Exceptions pickle as ``cls(*args)``; this one needs its reason too (Ray ships it).
        return type(self), (self.reason, self.message), self.__dict__


@dataclass(frozen=True)
class ReadDocument:
    """One document as plain text, with what the job needs to skip it when unchanged."""

    path: Path
    kind: DocumentKind
    text: str
    size: int  # bytes on disk
    content_hash: str  # sha256 hex of the file's bytes
    encoding: str | None = None  # what a text or HTML file was read in (detected unless UTF-8)


def content_hash(path: Path) -> str:
    """The sha256 hex digest of the file's bytes, read in blocks."""
    _check_regular_file(path)
    try:
        with path.open("rb") as stream:
            return hashlib.file_digest(stream, "sha256").hexdigest()
    except OSError as exc:
        raise _unreadable(path, exc) from exc


def read_document(path: Path, *, max_bytes: int = 50_000_000, max_chars: int = 2_000_000) -> ReadDocument:
    """The text of a supported document, normalized; ``DocumentError`` for any bad file."""
    size = _check_regular_file(path).st_size
    kind = _KINDS.get(path.suffix.lower())
    if kind is None:
        raise DocumentError(
            "unsupported",
            f"{path} is not a supported document type ({path.suffix or 'no suffix'}).",
            hint=f"Convert it to one of: {', '.join(SUPPORTED_SUFFIXES)}.",
        )
    if size == 0:
        raise DocumentError("empty", f"{path} is empty (0 bytes).", hint="Remove it or add its content.")
    if size > max_bytes:
        raise _too_large(path, f"{size:,} bytes", f"{max_bytes:,} bytes")
    data = _read_bytes(path, max_bytes)
    raw, encoding = _EXTRACTORS[kind](path, data)
    text = _normalize(raw)
    if not text:
        hint = "Remove it, or check that it was exported with its content."
        if kind == "pdf":
            hint = "It may be a scanned image with no text layer; run OCR on it first (e.g. `ocrmypdf`)."
        raise DocumentError("empty", f"{path} contains no text.", hint=hint)
    if len(text) > max_chars:
        raise _too_large(path, f"{len(text):,} characters of text", f"{max_chars:,} characters")
    return ReadDocument(path, kind, text, len(data), hashlib.sha256(data).hexdigest(), encoding)


class Inputs(list[Path]):
    """The files found, and those of them refused before reading: a link found inside a
    folder that leads out of it (``refused``: the path and why)."""

    def __init__(self, paths: Iterable[Path], refused: Mapping[Path, str]) -> None:
        super().__init__(paths)
        self.refused = dict(refused)

    def refusal(self, path: Path) -> DocumentError | None:
        """Why ``path`` is not to be read, or None."""
        reason = self.refused.get(path)
        if reason is None:
            return None
        hint = "Give --follow-links to read what links out of the folder lead to."
        return DocumentError("link_outside", reason, hint=hint)


READ_DEADLINE_S = 60.0
"""The longest one document may take to read (its parsing runs in a worker process)."""


class BoundedReader:
    """``read_document`` in a worker process that is stopped after ``seconds``: a file whose
    parsing runs away costs that long and no more, and the next file gets a fresh worker.
    A worker that exits while reading (a parser's crash, the kernel's OOM killer) fails that
    file alone (``crashed``); one that exits before it is ready stops the job with
    ``ProcessStartError`` at once, instead of each file waiting out its deadline. Use it as
    a context manager (the worker is started on the first read)."""

    def __init__(
        self, seconds: float = READ_DEADLINE_S, function: Callable[[Path], ReadDocument] | None = None
    ) -> None:
        self.seconds = seconds
        self._function = function or read_document
        self._process: Any = None
        self._connection: Any = None

    def read(self, path: Path) -> ReadDocument:
        connection = self._ready()
        try:
            connection.send((self._function, path))
        except OSError:  # the worker ended since its last file
            self.close()
            connection = self._ready()
            connection.send((self._function, path))
        reply = self._reply(self.seconds)
        if reply == "timeout":
            self.close()
            raise DocumentError(
                "too_slow",
                f"{printable_name(path)} took more than {self.seconds:g} s to read: stopped.",
                hint="Export it again in a simpler form (plain text, or a PDF printed anew).",
            )
        if reply == "exited":
            code = self._process.exitcode
            self.close()
            raise DocumentError(
                "crashed",
                f"the process reading {printable_name(path)} exited (code {code}) while reading it.",
                hint="Export it again in a simpler form; if the machine is short of memory, free some.",
            )
        status, value = reply
        if status == "error":
            raise value
        result: ReadDocument = value
        return result

    def _ready(self) -> Any:
        """The worker's end of the pipe, with a worker started and ready to read."""
        if self._process is not None and self._process.is_alive():
            return self._connection
        import multiprocessing

        self.close()
        context = multiprocessing.get_context("spawn")  # no parser state copied by fork
        self._connection, theirs = context.Pipe()
        self._process = context.Process(
            target=_serve_reads, args=(theirs,), daemon=True, name="tierflow-reader"
        )
        self._process.start()
        theirs.close()  # so that the worker's exit reads as the end of the pipe
        reply = self._reply(max(self.seconds, READ_DEADLINE_S))
        if reply != ("ready", None):
            code = self._process.exitcode
            self.close()
            how = "did not get ready in time" if reply == "timeout" else f"exited as it started (code {code})"
            raise ProcessStartError(
                f"The process that reads documents {how}; any error it printed is above.",
                hint=MAIN_GUARD_HINT,
            )
        return self._connection

    def _reply(self, seconds: float) -> tuple[str, Any] | Literal["timeout", "exited"]:
        """The worker's next message, ``"timeout"`` when none came within ``seconds``, or
        ``"exited"`` when its process ended first."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self._connection.poll(min(left, 0.25)):
                try:
                    reply: tuple[str, Any] = self._connection.recv()
                except (EOFError, OSError):
                    self._process.join(5)
                    return "exited"
                return reply
            if not self._process.is_alive():
                return "exited"
        return "timeout"

    def close(self) -> None:
        if self._process is not None:
            if self._process.is_alive():
                self._process.kill()
            self._process.join(5)
            self._connection.close()
            self._process = self._connection = None

    def __enter__(self) -> BoundedReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _serve_reads(connection: Any) -> None:
    """A ``BoundedReader``'s worker: read each path sent until the pipe closes, answering
    with ``("ok", document)`` or ``("error", exception)``."""
    connection.send(("ready", None))
    while True:
        try:
            function, path = connection.recv()
        except (EOFError, OSError):
            return
        try:
            reply: tuple[str, Any] = ("ok", function(path))
        except Exception as exc:  # the caller raises it, as if it had read the file itself
            reply = ("error", exc)
        try:
            connection.send(reply)
        except Exception as exc:  # an exception that does not pickle still reaches the caller
            connection.send(("error", DocumentError("unreadable", f"{printable_name(path)}: {exc}")))


def find_inputs(specs: Sequence[str], *, follow_links: bool = False) -> Inputs:
    """The files named by ``specs`` (files, folders read recursively, globs), absolute,
    without duplicates, sorted. A spec that finds nothing raises ``TierflowError``. A link
    found in a folder (or by a glob) that leads out of that folder is refused unless
    ``follow_links``; a file named directly is read wherever its link leads."""
    if not specs:
        raise TaskInputError(
            "No input files were given.", hint="Name files, folders or glob patterns to read."
        )
    found: set[Path] = set()
    refused: dict[Path, str] = {}
    named: set[Path] = set()
    for spec in specs:
        matches = _expand(spec, refused, named)
        if not matches:
            raise TaskInputError(
                f"{spec!r} matches no document to read.",
                hint=(
                    "Check the path; folders are read recursively for .txt, .md, .html, .pdf and .docx files."
                ),
            )
        found.update(matches)
    kept = {} if follow_links else {path: why for path, why in refused.items() if path not in named}
    return Inputs(sorted(found), kept)


def _expand(spec: str, refused: dict[Path, str], named: set[Path]) -> set[Path]:
    if not spec.strip():
        return set()
    given = Path(os.path.expanduser(spec))
    if given.is_dir():
        return _walk(given, refused)
    if os.path.lexists(given):
        named.add(_resolve(given))  # named directly: kept whatever its suffix or link
        return {_resolve(given)}
    if not _GLOB_CHARS.intersection(spec):
        return set()
    found: set[Path] = set()
    for match in map(Path, glob.glob(os.path.expanduser(spec), recursive=True)):
        if match.is_dir():
            found |= _walk(match, refused)
        elif _is_supported(match.name):
            path = _resolve(match)
            found.add(path)
            _check_link(path, path.parent, refused)
    return found


def _walk(folder: Path, refused: dict[Path, str]) -> set[Path]:
    found: set[Path] = set()
    for root, dirs, files in os.walk(folder):  # links to folders are not followed
        dirs[:] = [name for name in dirs if not name.startswith(".")]
        for name in files:
            if _is_supported(name):
                path = _resolve(Path(root, name))
                found.add(path)
                _check_link(path, folder, refused)
    return found


def _check_link(path: Path, folder: Path, refused: dict[Path, str]) -> None:
    """Note ``path`` as refused when it is a link that leads out of ``folder``."""
    if not path.is_symlink():
        return
    inside = Path(os.path.realpath(folder))
    target = Path(os.path.realpath(path))
    if not target.is_relative_to(inside):
        refused[path] = (
            f"{printable_name(path)} is a link that leads out of {printable_name(folder)} "
            f"(to {printable_name(target)}): not read"
        )


def _resolve(path: Path) -> Path:
    """The absolute path as the user named it (links are not followed: the report shows the
    names the user knows)."""
    return Path(os.path.abspath(path))


def _is_supported(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(SUPPORTED_SUFFIXES)


def _check_regular_file(path: Path) -> os.stat_result:
    """Stat ``path`` (links followed) without opening it: a FIFO would block an open."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    if not stat.S_ISREG(info.st_mode):
        what = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        raise DocumentError(
            "unreadable", f"{path} is {what}.", hint="Name regular files, or a folder to read."
        )
    return info


def _read_bytes(path: Path, max_bytes: int) -> bytes:
    try:
        with path.open("rb") as stream:
            data = stream.read(max_bytes + 1)
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    if len(data) > max_bytes:  # it grew after the stat
        raise _too_large(path, f"more than {max_bytes:,} bytes", f"{max_bytes:,} bytes")
    return data


def _unreadable(path: Path, exc: OSError) -> DocumentError:
    if isinstance(exc, FileNotFoundError):
        problem = "does not exist (or is a link to a file that does not exist)"
    elif isinstance(exc, PermissionError):
        problem = "cannot be read: permission denied"
    else:
        problem = f"cannot be read: {exc.strerror or exc}"
    return DocumentError(
        "unreadable", f"{path} {problem}.", hint="Check the path and the file's permissions."
    )


def _too_large(path: Path, actual: str, limit: str) -> DocumentError:
    return DocumentError(
        "too_large",
        f"{path} is too large: {actual}, over the limit of {limit}.",
        hint="Split it into smaller files, or raise the limit.",
    )


def _normalize(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r"[^\S\n]+$", "", text, flags=re.MULTILINE)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _decode_text(path: Path, data: bytes, declared: str | None = None) -> tuple[str, str]:
    """The text and the encoding it was read in (detected when it is not UTF-8)."""
    try:
        encoding = text_encoding(data, declared, path=path)
    except BinaryText:
        raise DocumentError(
            "binary",
            f"{path} looks like a binary file, not text (it contains NUL bytes).",
            hint="Check that it is the document you meant; UTF-16 text without a byte-order mark "
            "must be converted to UTF-8 first.",
        ) from None
    except UndecodableText as exc:
        raise DocumentError(
            "unknown_encoding",
            f"{path} is not UTF-8 text (invalid byte at offset {exc.offset}), and no other "
            "encoding reads it as text.",
            hint=f"Convert it to UTF-8, e.g. `iconv -f ENCODING -t utf-8 '{path}' > converted{path.suffix}`.",
        ) from None
    return data.decode(encoding), encoding


_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9-]*)[^>]*?(/?)>")
_VOID = frozenset("area base br col embed hr img input link meta param source track wbr".split())
_SELF_CLOSING = frozenset("p li dt dd tr td th option".split())  # a sibling ends the open one


_CONTAINERS = frozenset("ul ol dl table tbody thead tfoot select div body html section article".split())


def _close_sibling(stack: list[str], name: str) -> None:
    """Pop an open ``name`` that a new one ends, unless a container lies between them."""
    for index in range(len(stack) - 1, -1, -1):
        if stack[index] == name:
            del stack[index:]
            return
        if stack[index] in _CONTAINERS:
            return


def _check_html_shape(path: Path, text: str) -> None:
    """Refuse HTML whose elements nest deeper than ``MAX_HTML_DEPTH`` or number more than
    ``MAX_HTML_TAGS``, before a parser spends minutes on it (one pass over the tags)."""
    stack: list[str] = []
    for tags, match in enumerate(_TAG.finditer(text), start=1):
        name = match.group(2).lower()
        if match.group(1):  # an end tag closes up to its element, if it is open
            if name in stack:
                del stack[len(stack) - 1 - stack[::-1].index(name) :]
        elif name not in _VOID and not match.group(3):
            if name in _SELF_CLOSING:  # a new <li> ends the open <li> (and what it holds)
                _close_sibling(stack, name)
            stack.append(name)
        if len(stack) > MAX_HTML_DEPTH or tags > MAX_HTML_TAGS:
            what = (
                f"nests deeper than {MAX_HTML_DEPTH} levels"
                if len(stack) > MAX_HTML_DEPTH
                else f"has more than {MAX_HTML_TAGS:,} tags"
            )
            raise DocumentError(
                "too_complex", f"{path} {what}.", hint="Export it again as plain HTML, or as text."
            )


def _html(path: Path, data: bytes) -> tuple[str, str]:
    declared = EncodingDetector.find_declared_encoding(data, is_html=True)
    text, encoding = _decode_text(path, data, declared)
    _check_html_shape(path, text)
    soup = BeautifulSoup(text, "html.parser")
    for tag in soup.find_all(_DROPPED_TAGS):
        tag.decompose()
    for string in soup.find_all(string=True):
        if type(string) is not NavigableString:
            string.extract()  # comments, doctype, CDATA
        elif string.find_parent("pre") is None:
            string.replace_with(re.sub(r"\s+", " ", string))  # HTML whitespace: runs are one space
    for br in soup.find_all("br"):
        br.replace_with("\n")
    for tag in soup.find_all(["td", "th"]):
        tag.insert_after("\t")
    for tag in soup.find_all(_BLOCK_TAGS):
        tag.insert_before("\n\n")
        tag.insert_after("\n\n")
    lines = soup.get_text().split("\n")
    return "\n".join(line.strip(" \t") for line in lines), encoding


def _pdf(path: Path, data: bytes) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pypdf warns about the damage it works around
        try:
            reader = pypdf.PdfReader(io.BytesIO(data), strict=False)
            if reader.is_encrypted and not reader.decrypt(""):
                raise DocumentError(
                    "password_protected",
                    f"{path} is password-protected.",
                    hint="Save an unprotected copy (e.g. `qpdf --decrypt --password=... in.pdf out.pdf`).",
                )
            if len(reader.pages) > MAX_PDF_PAGES:
                raise _too_large(path, f"{len(reader.pages):,} pages", f"{MAX_PDF_PAGES:,} pages")
            pages = [page.extract_text() for page in reader.pages]
        except DependencyError as exc:
            raise DocumentError(
                "unsupported",
                f"{path} is encrypted in a way that needs an extra library to read.",
                hint="Install it with `pip install cryptography`.",
            ) from exc
        except LimitReachedError as exc:
            raise DocumentError(
                "too_large",
                f"{path} is too large: its content expands past pypdf's safety limits.",
                hint="Split it into smaller files.",
            ) from exc
        except _PDF_FAILURES as exc:
            raise DocumentError(
                "corrupt",
                f"{path} cannot be read: the PDF is damaged or truncated ({exc}).",
                hint="Export or download it again.",
            ) from exc
    return "\n\n".join(pages)


def _check_unpacked(path: Path, data: bytes) -> None:
    """Refuse a .docx whose parts unpack past ``MAX_UNPACKED_PART`` or, together, past
    ``MAX_UNPACKED_TOTAL`` (a zip's sizes are declared up front, and reading stops at them)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            sizes = [info.file_size for info in archive.infolist()]
    except zipfile.BadZipFile:
        return  # reported as damaged below
    if sizes and max(sizes) > MAX_UNPACKED_PART:
        raise _too_large(path, f"a part that unpacks to {max(sizes):,} bytes", f"{MAX_UNPACKED_PART:,} bytes")
    if sum(sizes) > MAX_UNPACKED_TOTAL:
        raise _too_large(path, f"{sum(sizes):,} bytes unpacked", f"{MAX_UNPACKED_TOTAL:,} bytes")


def _docx(path: Path, data: bytes) -> str:
    _check_unpacked(path, data)
    try:
        document = docx.Document(io.BytesIO(data))
        blocks = [
            _table_text(block) if isinstance(block, Table) else block.text
            for block in document.iter_inner_content()
        ]
    except _DOCX_FAILURES as exc:
        raise DocumentError(
            "corrupt",
            f"{path} cannot be read: the DOCX file is damaged or truncated ({type(exc).__name__}).",
            hint="Open it in a word processor and save it again, or export it again.",
        ) from exc
    return "\n".join(blocks)


def _table_text(table: Table) -> str:
    rows = ("\t".join(cell.text for cell in row.cells) for row in table.rows)
    return "\n" + "\n".join(rows) + "\n"


_EXTRACTORS: dict[DocumentKind, Callable[[Path, bytes], tuple[str, str | None]]] = {
    "text": _decode_text,
    "markdown": _decode_text,
    "html": _html,
    "pdf": lambda path, data: (_pdf(path, data), None),
    "docx": lambda path, data: (_docx(path, data), None),
}
