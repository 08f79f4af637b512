"""Reading reports for the batch job: real PDF, DOCX, HTML, Markdown and text files built in
tmp_path, and every bad input turned into a DocumentError whose message names the file."""

from __future__ import annotations

import hashlib
import os
import pickle
import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docx
import pypdf
import pytest
from fpdf import FPDF
from tierflow.errors import TierflowError
from tierflow.tools.readers import (
    SUPPORTED_SUFFIXES,
    DocumentError,
    content_hash,
    find_inputs,
    read_document,
)

SENTENCES = "Quarterly revenue rose by four percent. Costs fell in every region. The outlook is stable."


def make_pdf(path: Path, text: str = SENTENCES) -> Path:
    pdf = FPDF()
    pdf.add_page()
    if text:
        pdf.set_font("helvetica")
        pdf.multi_cell(0, 10, text)
    pdf.output(str(path))
    return path


def make_encrypted_pdf(path: Path, user_password: str) -> Path:
    writer = pypdf.PdfWriter()
    writer.append(pypdf.PdfReader(make_pdf(path.with_name("plain.pdf"))))
    writer.encrypt(user_password=user_password, owner_password="owner")
    with path.open("wb") as stream:
        writer.write(stream)
    return path


def make_docx(path: Path) -> Path:
    document = docx.Document()
    document.add_heading("Site report", level=1)
    document.add_paragraph("The pumps were inspected on Monday.")
    table = document.add_table(rows=2, cols=2)
    for row, cells in zip(table.rows, [("pump", "status"), ("P-1", "ok")], strict=True):
        for cell, value in zip(row.cells, cells, strict=True):
            cell.text = value
    document.add_paragraph("No further action is needed.")
    document.save(str(path))
    return path


def truncated(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def test_text_is_normalized_and_a_bom_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes("\ufeffFirst line   \r\nsecond line\t\r\n\r\n\r\n\r\nlast line\n\n".encode())
    document = read_document(path)
    assert document.text == "First line\nsecond line\n\nlast line"
    assert (document.kind, document.path, document.size) == ("text", path, path.stat().st_size)
    assert document.content_hash == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("suffix", [".md", ".markdown", ".MD"])
def test_markdown_is_read_as_is(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"readme{suffix}"
    path.write_text("# Title\n\nSome *emphasis* and a [link](https://example.com).\n")
    document = read_document(path)
    assert document.kind == "markdown"
    assert document.text == "# Title\n\nSome *emphasis* and a [link](https://example.com)."


def test_html_keeps_the_text_and_drops_scripts_styles_and_head(tmp_path: Path) -> None:
    path = tmp_path / "page.html"
    path.write_text(
        "<!DOCTYPE html><html><head><title>Tab title</title><style>p { color: red }</style></head>"
        "<body><script>var secret = 1;</script><noscript>Enable JS</noscript><!-- a comment -->"
        "<h1>Results</h1><p>Revenue <b>rose</b>\n   by four\npercent.</p><p>Line one<br>line two</p>"
        "<table><tr><td>pump</td><td>ok</td></tr></table><template>hidden</template></body></html>"
    )
    text = read_document(path).text
    assert text == "Results\n\nRevenue rose by four percent.\n\nLine one\nline two\n\npump\tok"
    for unwanted in ("secret", "color", "Tab title", "Enable JS", "comment", "hidden"):
        assert unwanted not in text


def test_html_in_a_declared_charset_is_decoded(tmp_path: Path) -> None:
    path = tmp_path / "legacy.htm"
    path.write_bytes(
        '<html><head><meta charset="iso-8859-1"></head><body><p>café</p></body></html>'.encode("latin-1")
    )
    document = read_document(path)
    assert (document.kind, document.text) == ("html", "café")


def test_pdf_text_is_extracted(tmp_path: Path) -> None:
    path = make_pdf(tmp_path / "report.pdf")
    document = read_document(path)
    assert document.kind == "pdf"
    assert "Costs fell in every region." in " ".join(document.text.split())


def test_pdf_with_an_empty_user_password_is_read(tmp_path: Path) -> None:
    path = make_encrypted_pdf(tmp_path / "restricted.pdf", user_password="")
    assert pypdf.PdfReader(path).is_encrypted
    assert "Quarterly revenue" in read_document(path).text


def test_docx_paragraphs_and_tables_come_in_document_order(tmp_path: Path) -> None:
    document = read_document(make_docx(tmp_path / "site.docx"))
    assert document.kind == "docx"
    assert document.text == (
        "Site report\nThe pumps were inspected on Monday.\n\n"
        "pump\tstatus\nP-1\tok\n\nNo further action is needed."
    )


def missing(tmp_path: Path) -> Path:
    return tmp_path / "gone.txt"


def dangling_link(tmp_path: Path) -> Path:
    path = tmp_path / "link.txt"
    path.symlink_to(tmp_path / "nowhere.txt")
    return path


def folder(tmp_path: Path) -> Path:
    path = tmp_path / "x.txt"
    path.mkdir()
    return path


def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "pipe.txt"
    os.mkfifo(path)
    return path


def empty_file(tmp_path: Path) -> Path:
    path = tmp_path / "empty.pdf"
    path.touch()
    return path


def blank_markdown(tmp_path: Path) -> Path:
    path = tmp_path / "blank.md"
    path.write_text("  \n\n\t\n")
    return path


def binary_text(tmp_path: Path) -> Path:
    path = tmp_path / "blob.txt"
    path.write_bytes(b"header\x00\x01\x02\x00more")
    return path


def noise_text(tmp_path: Path) -> Path:
    """Bytes no encoding reads as text (and no NUL among them)."""
    path = tmp_path / "noise.txt"
    noise = random.Random(1)
    path.write_bytes(b"report " + bytes(noise.randrange(1, 256) for _ in range(2000)))
    return path


def password_pdf(tmp_path: Path) -> Path:
    return make_encrypted_pdf(tmp_path / "locked.pdf", user_password="secret")


def truncated_pdf(tmp_path: Path) -> Path:
    return truncated(make_pdf(tmp_path / "cut.pdf"))


def truncated_docx(tmp_path: Path) -> Path:
    return truncated(make_docx(tmp_path / "cut.docx"))


def text_named_docx(tmp_path: Path) -> Path:
    path = tmp_path / "renamed.docx"
    path.write_text("not a zip at all")
    return path


def blank_pdf(tmp_path: Path) -> Path:
    return make_pdf(tmp_path / "scan.pdf", text="")


def spreadsheet(tmp_path: Path) -> Path:
    path = tmp_path / "figures.xlsx"
    path.write_bytes(b"PK\x03\x04 pretend spreadsheet")
    return path


@pytest.mark.timeout(10)  # a FIFO opened for reading would block here forever
@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (missing, "unreadable"),
        (dangling_link, "unreadable"),
        (folder, "unreadable"),
        (fifo, "unreadable"),
        (empty_file, "empty"),
        (blank_markdown, "empty"),
        (binary_text, "binary"),
        (noise_text, "unknown_encoding"),
        (password_pdf, "password_protected"),
        (truncated_pdf, "corrupt"),
        (truncated_docx, "corrupt"),
        (text_named_docx, "corrupt"),
        (blank_pdf, "empty"),
        (spreadsheet, "unsupported"),
    ],
    ids=lambda value: getattr(value, "__name__", value),
)
def test_bad_inputs_raise_a_document_error_naming_the_file(
    tmp_path: Path, make: Callable[[Path], Path], reason: str
) -> None:
    path = make(tmp_path)
    with pytest.raises(DocumentError) as caught:
        read_document(path)
    assert caught.value.reason == reason
    assert path.name in caught.value.message
    assert caught.value.hint


def test_error_hints_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(DocumentError) as caught:
        read_document(noise_text(tmp_path))
    assert (
        re.search(r"offset \d+", caught.value.message) and "iconv -f ENCODING -t utf-8" in caught.value.hint
    )
    with pytest.raises(DocumentError) as caught:
        read_document(spreadsheet(tmp_path))
    assert all(suffix in caught.value.hint for suffix in SUPPORTED_SUFFIXES)
    with pytest.raises(DocumentError) as caught:
        read_document(blank_pdf(tmp_path))
    assert "scanned image" in caught.value.hint
    with pytest.raises(DocumentError) as caught:
        read_document(truncated_pdf(tmp_path))
    assert "damaged or truncated" in caught.value.message


def test_limits_on_bytes_and_characters(tmp_path: Path) -> None:
    path = tmp_path / "long.txt"
    path.write_text("word " * 100)
    with pytest.raises(DocumentError, match="long.txt is too large") as caught:
        read_document(path, max_bytes=100)
    assert caught.value.reason == "too_large"
    with pytest.raises(DocumentError, match="characters") as caught:
        read_document(path, max_chars=50)
    assert caught.value.reason == "too_large"
    assert read_document(path, max_bytes=500, max_chars=499).text.startswith("word word")


def test_document_errors_survive_pickling(tmp_path: Path) -> None:
    error = DocumentError("corrupt", "report.pdf is damaged.", hint="Export it again.")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.reason, copy.message, copy.hint) == ("corrupt", "report.pdf is damaged.", "Export it again.")


def test_content_hash_is_the_sha256_of_the_bytes(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_bytes(os.urandom(3_000_000))
    assert content_hash(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(DocumentError) as caught:
        content_hash(tmp_path)
    assert caught.value.reason == "unreadable"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "reports"
    for name in ["a.txt", "b.PDF", "notes.xlsx", "sub/c.md", "sub/deeper/d.docx", "sub/e.htm", "sub/f.bin"]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("x")
    for name in [".hidden/g.txt", "sub/.h.txt"]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("x")
    return root


def test_folders_are_walked_for_supported_files_skipping_hidden_ones(tree: Path) -> None:
    found = find_inputs([str(tree)])
    assert [path.relative_to(tree).as_posix() for path in found] == [
        "a.txt",
        "b.PDF",
        "sub/c.md",
        "sub/deeper/d.docx",
        "sub/e.htm",
    ]
    assert all(path.is_absolute() for path in found)


def test_globs_keep_supported_matches(tree: Path) -> None:
    found = find_inputs([str(tree / "**" / "*.*")])
    assert [path.name for path in found] == ["a.txt", "b.PDF", "c.md", "d.docx", "e.htm"]


def test_a_file_named_directly_is_kept_whatever_its_suffix(tree: Path) -> None:
    assert find_inputs([str(tree / "notes.xlsx")]) == [(tree / "notes.xlsx").resolve()]


def test_specs_are_deduplicated_and_sorted(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tree)
    found = find_inputs(["sub", "sub/c.md", str(tree / "sub" / "*.md"), "a.txt"])
    assert found == sorted(
        {(tree / name).resolve() for name in ["a.txt", "sub/c.md", "sub/deeper/d.docx", "sub/e.htm"]}
    )


@pytest.mark.parametrize("spec", ["no-such-folder", "reports/*.pdf", "reports/*", "reports/empty", ""])
def test_a_spec_matching_nothing_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spec: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "reports" / "empty").mkdir(parents=True)
    (tmp_path / "reports" / "old.doc.bak").write_text("x")
    with pytest.raises(TierflowError, match=re.escape(repr(spec))) as caught:
        find_inputs([spec])
    assert not isinstance(caught.value, DocumentError)
    assert "folders are read recursively" in caught.value.hint


def test_no_specs_is_an_error() -> None:
    with pytest.raises(TierflowError, match="No input files"):
        find_inputs([])


def test_zip_bombs_deep_html_and_huge_pdfs_are_refused_quickly(tmp_path: Path) -> None:
    """At 4569ff0 each of these read without limit: minutes of CPU, gigabytes of memory."""
    import time
    import zipfile

    bomb = make_docx(tmp_path / "bomb.docx")
    with zipfile.ZipFile(bomb, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("word/padding.xml", b"<w:p/>" * 12_000_000)  # 72 MB, about 70 KB packed
    assert bomb.stat().st_size < 2_000_000
    deep = tmp_path / "deep.html"
    deep.write_text("<html><body>" + "<div>" * 100_000 + "x" + "</div>" * 100_000 + "</body></html>")
    paged = tmp_path / "paged.pdf"
    writer = pypdf.PdfWriter()
    for _ in range(5_001):
        writer.add_blank_page(width=72, height=72)
    with paged.open("wb") as handle:
        writer.write(handle)
    for path, reason, says in (
        (bomb, "too_large", "a part that unpacks to 72,000,000 bytes"),
        (deep, "too_complex", "nests deeper than 512 levels"),
        (paged, "too_large", "5,001 pages"),
    ):
        started = time.monotonic()
        with pytest.raises(DocumentError) as info:
            read_document(path)
        assert info.value.reason == reason and says in info.value.message, info.value.message
        assert time.monotonic() - started < 20
    long_list = tmp_path / "list.html"  # many unclosed <li> and <p> are siblings, not a deep tree
    long_list.write_text("<ul>" + "<li><p>item" * 3_000 + "</ul>")
    assert "item" in read_document(long_list).text


def _stuck(path: Path) -> Any:
    """A reader whose parsing runs away (for the deadline test; module level, so a spawned
    worker can import it)."""
    import time

    time.sleep(60)


def test_a_read_that_runs_past_its_deadline_is_stopped_and_the_next_file_is_read(tmp_path: Path) -> None:
    import time

    from tierflow.tools.readers import BoundedReader

    good = tmp_path / "good.txt"
    good.write_text(SENTENCES)
    with BoundedReader(seconds=3.0, function=_stuck) as stuck:
        started = time.monotonic()
        with pytest.raises(DocumentError) as info:
            stuck.read(good)
        assert info.value.reason == "too_slow" and time.monotonic() - started < 20
    with BoundedReader(seconds=30.0) as reader:  # a fresh worker reads the next file
        assert reader.read(good).text == SENTENCES


def _exits(path: Path) -> Any:
    """A reader whose parser takes its process down (module level, for a spawned worker)."""
    os._exit(3)


def test_a_read_that_ends_its_process_fails_that_file_alone(tmp_path: Path) -> None:
    from tierflow.tools.readers import BoundedReader

    good = tmp_path / "good.txt"
    good.write_text(SENTENCES)
    with BoundedReader(seconds=30.0, function=_exits) as crashing:
        with pytest.raises(DocumentError) as info:
            crashing.read(good)
        assert info.value.reason == "crashed" and "exited (code 3)" in info.value.message
        crashing._function = read_document  # the next file gets a fresh worker
        assert crashing.read(good).text == SENTENCES


def test_a_reader_reports_the_errors_of_its_worker_as_its_own(tmp_path: Path) -> None:
    from tierflow.tools.readers import BoundedReader

    with BoundedReader() as reader:
        with pytest.raises(DocumentError) as info:
            reader.read(tmp_path / "missing.txt")
        assert info.value.reason == "unreadable"
        (tmp_path / "there.txt").write_text(SENTENCES)
        assert reader.read(tmp_path / "there.txt").text == SENTENCES  # the same worker goes on


@pytest.mark.parametrize(
    ("name", "text", "written_as", "read_as"),
    [
        ("menu.txt", "Le café est fermé à midi.", "latin-1", "cp1252"),
        ("menu.html", "<p>Café au lait, crème brûlée.</p>", "latin-1", "cp1252"),
        (
            "bericht.md",
            "Die Qualität hat sich verbessert; Größe und Maß sind gleich. " * 3,
            "cp1252",
            "cp1252",
        ),
        (
            "otchet.txt",
            "Отчёт о продажах за третий квартал показывает рост выручки. " * 3,
            "cp1251",
            "cp1251",
        ),
        ("wide.txt", "A report saved as UTF-16, with its byte-order mark.", "utf-16", "utf-16"),
        ("plain.txt", "Plain UTF-8: naïve café.", "utf-8", "utf-8"),
        ("marked.txt", "UTF-8 with a byte-order mark.", "utf-8-sig", "utf-8-sig"),
    ],
)
def test_text_in_other_encodings_is_read_with_the_encoding_detected_and_recorded(
    tmp_path: Path, name: str, text: str, written_as: str, read_as: str
) -> None:
    path = tmp_path / name
    path.write_bytes(text.encode(written_as))
    read = read_document(path)
    assert read.encoding == read_as
    expected = text.replace("<p>", "").replace("</p>", "").strip()
    assert read.text == expected


def test_a_declared_html_encoding_is_used(tmp_path: Path) -> None:
    path = tmp_path / "page.html"
    path.write_bytes('<meta charset="koi8-r"><p>Отчёт</p>'.encode("koi8-r"))
    read = read_document(path)
    assert (read.encoding, read.text) == ("koi8-r", "Отчёт")


def test_pdf_and_docx_have_no_encoding(tmp_path: Path) -> None:
    assert read_document(make_pdf(tmp_path / "a.pdf", text="Hello there")).encoding is None
