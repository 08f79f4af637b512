"""A corpus of hostile input files, made by code (nothing binary is committed): zip bombs,
deep nesting, huge page counts, names that are not UTF-8 or hold control and bidirectional
characters, links in and out of the folder, a FIFO, an unreadable file, duplicates under
other names, and the plainer bad files (empty, binary, damaged, encrypted, too large).

``make_corpus(folder)`` writes it next to ``good`` ordinary reports and returns what each
file must come to: the failure reason a hostile file is refused with, or ``None`` for a
file that is read (a good report, a duplicate, a link that stays inside, a strange but
valid name)."""

from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import docx
import pypdf

GOOD_TEXT = (
    "Report {n}. Sales in region {n} rose {n} percent in May. The team hired two people and "
    "closed the old warehouse. Costs fell slightly; the outlook for June is stable.\n"
)


@dataclass(frozen=True)
class Expected:
    """What reading a corpus file must give: refused with ``reason``, or read (``None``)."""

    reason: str | None
    shown_as: str  # the file's name as reports show it


def _docx_bytes(extra: dict[str, bytes] | None = None) -> bytes:
    document = docx.Document()
    document.add_paragraph("A normal paragraph before the padding.")
    buffer = io.BytesIO()
    document.save(buffer)
    if extra:
        with zipfile.ZipFile(buffer, "a", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, data in extra.items():
                archive.writestr(name, data)
    return buffer.getvalue()


def _pdf_pages(count: int) -> bytes:
    writer = pypdf.PdfWriter()
    for _ in range(count):
        writer.add_blank_page(width=72, height=72)
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def _encrypted_pdf() -> bytes:
    writer = pypdf.PdfWriter()
    writer.add_blank_page(width=72, height=72)
    writer.encrypt(user_password="secret-pw", owner_password="owner")
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def make_corpus(folder: Path, good: int = 20, outside: Path | None = None) -> dict[str, Expected]:
    """Write ``good`` ordinary reports and every hostile file into ``folder`` (created);
    ``outside``: a folder for the targets of links that lead out (default: a sibling)."""
    folder.mkdir(parents=True)
    outside = outside or folder.parent / f"{folder.name}-outside"
    outside.mkdir(parents=True, exist_ok=True)
    expected: dict[str, Expected] = {}

    def add(name: str | bytes, data: bytes, reason: str | None, shown: str | None = None) -> Path:
        path = Path(os.fsdecode(os.path.join(os.fsencode(folder), os.fsencode(name))))
        path.write_bytes(data)
        expected[path.name] = Expected(reason, shown or path.name)
        return path

    for n in range(1, good + 1):
        add(f"report-{n:02d}.txt", GOOD_TEXT.format(n=n).encode(), None)
    # size and shape
    add("bomb.docx", _docx_bytes({"word/padding.xml": b"<w:p/>" * 12_000_000}), "too_large")
    deep = "<html><body>" + "<div>" * 100_000 + "deep" + "</div>" * 100_000 + "</body></html>"
    add("deep.html", deep.encode(), "too_complex")
    add("pages.pdf", _pdf_pages(5_001), "too_large")
    huge = folder / "huge.txt"
    with huge.open("wb") as handle:  # sparse: 60 MB on paper, no time to write
        handle.truncate(60_000_000)
    expected[huge.name] = Expected("too_large", huge.name)
    # plain bad files
    add("empty.txt", b"", "empty")
    add("binary.txt", b"\x00\x01\x02binary" * 100, "binary")
    add("damaged.pdf", b"%PDF-1.7\n1 0 obj <<", "corrupt")
    add("damaged.docx", b"PK\x03\x04 not really a zip", "corrupt")
    add("locked.pdf", _encrypted_pdf(), "password_protected")
    # names
    add(b"caf\xe9.txt", GOOD_TEXT.format(n=90).encode(), "name_not_utf8", "caf\\xe9.txt")
    add("two\nlines.txt", GOOD_TEXT.format(n=91).encode(), None, "two\\u000alines.txt")
    add("invoice\u202etxt.exe.txt", GOOD_TEXT.format(n=92).encode(), None, "invoice\\u202etxt.exe.txt")
    add("bell\x07.txt", GOOD_TEXT.format(n=93).encode(), None, "bell\\u0007.txt")
    # links, FIFOs, duplicates, unreadable
    secret = outside / "secret.txt"
    secret.write_text("The vault code is 4417. Never summarize this.\n")
    (folder / "link-out.txt").symlink_to(secret)
    expected["link-out.txt"] = Expected("link_outside", "link-out.txt")
    (folder / "link-in.txt").symlink_to(folder / "report-01.txt")
    expected["link-in.txt"] = Expected(None, "link-in.txt")
    (folder / "dangling.txt").symlink_to(folder / "no-such-file.txt")
    expected["dangling.txt"] = Expected("unreadable", "dangling.txt")
    os.mkfifo(folder / "fifo.txt")
    expected["fifo.txt"] = Expected("unreadable", "fifo.txt")
    add("copy-of-report-02.txt", (folder / "report-02.txt").read_bytes(), None)
    unreadable = add("unreadable.txt", GOOD_TEXT.format(n=94).encode(), "unreadable")
    unreadable.chmod(0)  # unreadable only for a user other than root
    return expected


HOSTILE_REASONS = frozenset(
    {
        "too_large",
        "too_complex",
        "empty",
        "binary",
        "corrupt",
        "password_protected",
        "name_not_utf8",
        "link_outside",
        "unreadable",
    }
)
