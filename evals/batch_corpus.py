"""The batch summarization benchmark's corpus: 22 real documents in five formats.

The texts are real documentation shipped by Debian packages, so the corpus builds offline:

* ``python3.11-doc``: Python HOWTOs, tutorial chapters, FAQs and "What's New" documents
  (PSF licence), from the reStructuredText sources under ``html/_sources/`` and the
  rendered pages under ``html/``. None of them is one of ``documents.HOWTOS``, so this
  corpus and the summarization evaluation's do not overlap.
* ``debian-reference-en``: the Debian Reference's preface (GPL-2+).
* ``git``: the Git 2.39 release notes (GPL-2); ``xz-utils``: its FAQ (public domain);
  ``man-db``: its FAQ (GPL-2+); ``base-files``: the Apache-2.0 licence text.

Each source is cut at a paragraph boundary to a length of its own (a few short, most
medium, five long; about 130,000 characters in all) and written in one format: ``.txt``
(plain text), ``.md`` (reStructuredText lightly converted), ``.html`` (the real page, its
main content only), ``.pdf`` (fpdf2, core fonts) and ``.docx`` (python-docx).
``sources.json`` records each file's source, licence, title, length and SHA-256.

The files are committed in ``evals/data/batch/``. To rebuild them (Debian, as root)::

    apt-get install python3.11-doc debian-reference-en git xz-utils man-db
    pip install -e '.[dev]'   # fpdf2 and python-docx
    python -m tierflow.evals.batch_corpus
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import json
import re
import textwrap
import unicodedata
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, NamedTuple, TypedDict

from tierflow.errors import TierflowError

__all__ = ["CORPUS_DIR", "CorpusEntry", "Format", "build_corpus", "load_manifest"]

CORPUS_DIR = Path(__file__).resolve().parent / "data" / "batch"
_PY = "/usr/share/doc/python3.11/html"
_PSF = "PSF-2.0 (Python documentation)"
_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)  # fixed dates keep PDF/DOCX bytes stable


Format = Literal["txt", "md", "html", "pdf", "docx"]
_FORMATS: dict[str, Format] = {"txt": "txt", "md": "md", "html": "html", "pdf": "pdf", "docx": "docx"}


class CorpusEntry(TypedDict):
    """One line of ``sources.json``: ``chars`` counts the text a reader extracts from ``file``."""

    file: str
    format: Format
    source: str
    licence: str
    title: str
    chars: int
    sha256: str


class _Source(NamedTuple):
    file: str
    package: str
    path: str
    licence: str
    limit: int  # characters of text at most, cut at a paragraph boundary
    title: str = ""  # for plain-text sources, which have no markup to take it from


def _py(file: str, path: str, limit: int) -> _Source:
    return _Source(file, "python3.11-doc", f"{_PY}/{path}", _PSF, limit)


_SOURCES: tuple[_Source, ...] = (
    _Source("git-2.39-release-notes.txt", "git", "/usr/share/doc/git/RelNotes/2.39.0.txt", "GPL-2", 12500,
            "Git v2.39 Release Notes"),
    _Source("xz-utils-faq.txt", "xz-utils", "/usr/share/doc/xz-utils/faq.txt.gz", "public domain", 5500,
            "XZ Utils FAQ"),
    _Source("man-db-faq.txt", "man-db", "/usr/share/doc/man-db/FAQ", "GPL-2+", 3000,
            "man-db: Frequently Asked Questions"),
    _Source("apache-2.0-licence.txt", "base-files", "/usr/share/common-licenses/Apache-2.0",
            "Apache-2.0 (verbatim copying permitted)", 5000, "Apache License, Version 2.0"),
    _py("python-dealing-with-bugs.txt", "_sources/bugs.rst.txt", 5000),
    _py("python-tutorial-whatnow.md", "_sources/tutorial/whatnow.rst.txt", 3000),
    _py("python-tutorial-venv.md", "_sources/tutorial/venv.rst.txt", 6000),
    _py("python-installing-modules.md", "_sources/installing/index.rst.txt", 5000),
    _py("python-faq-general.md", "_sources/faq/general.rst.txt", 12500),
    _py("python-whatsnew-3.11.html", "whatsnew/3.11.html", 13000),
    _py("python-howto-unicode.html", "howto/unicode.html", 6000),
    _py("python-tutorial-interactive.html", "tutorial/interactive.html", 3000),
    _py("python-faq-windows.html", "faq/windows.html", 5000),
    _Source("debian-reference-preface.html", "debian-reference-en",
            "/usr/share/debian-reference/pr01.en.html", "GPL-2+", 5000),
    _py("python-whatsnew-3.0.pdf", "_sources/whatsnew/3.0.rst.txt", 12500),
    _py("python-howto-urllib2.pdf", "_sources/howto/urllib2.rst.txt", 5500),
    _py("python-tutorial-floatingpoint.pdf", "_sources/tutorial/floatingpoint.rst.txt", 4500),
    _py("python-tutorial-appetite.pdf", "_sources/tutorial/appetite.rst.txt", 4500),
    _py("python-howto-functional.docx", "_sources/howto/functional.rst.txt", 12000),
    _py("python-faq-design.docx", "_sources/faq/design.rst.txt", 6000),
    _py("python-howto-logging.docx", "_sources/howto/logging.rst.txt", 5500),
    _py("python-faq-installed.docx", "_sources/faq/installed.rst.txt", 2500),
)  # fmt: skip


# --- reStructuredText as blocks ------------------------------------------------------------


class _Block(NamedTuple):
    kind: Literal["heading", "para", "code", "table"]  # a table's text: rows of tab-separated cells
    text: str
    level: int = 0


_VERSION_NOTES = {"versionadded", "versionchanged", "deprecated", "only"}  # their argument is no prose
_KEEP_BODY = {"note", "warning", "seealso", "tip", "important", "caution", "attention", "impl-detail",
              "admonition", "topic", "sidebar", *_VERSION_NOTES}  # fmt: skip
_CODE_BODY = {"code-block", "sourcecode", "code", "doctest", "testcode", "parsed-literal", "productionlist"}
_CODE_ROLES = {"func", "meth", "class", "mod", "attr", "data", "const", "exc", "obj", "envvar", "option",
               "program", "file", "samp", "keyword", "type", "macro", "member", "source", "kbd"}  # fmt: skip
_PREFIXES = {"pep": "PEP ", "rfc": "RFC ", "issue": "bpo-", "gh": "gh-"}
_BULLET = re.compile(r"^\s*([-*+]|#\.|\d+\.)\s+")
_RULE = r"""([-=~^*#+'"`:.])\{n}{{2,}}[ \t]*\n"""
_LABEL = re.compile(  # ".. _label:", more labels or blank lines, then a heading (overlined or not)
    rf"^\.\. _([^:\n]+):[ \t]*\n(?=(?:[ \t]*\n|\.\. _[^\n]*\n)*(?:{_RULE.format(n=2)})?"
    rf"[ \t]*(\S[^\n]*?)[ \t]*\n{_RULE.format(n=4)})",
    re.M,
)


def _is_rule(line: str) -> bool:
    s = line.strip()
    return len(s) >= 3 and len(set(s)) == 1 and s[0] in "=-~^*#+'\"`:."


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _indented_end(lines: list[str], start: int, indent: int) -> int:
    """The first line from ``start`` that is not blank and indented ``indent`` or less."""
    i = start
    while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > indent):
        i += 1
    return i


@functools.cache
def _ref_titles() -> dict[str, str]:
    """Section titles of the Python documentation by label, as Sphinx shows ``:ref:`label```."""
    titles: dict[str, str] = {}
    for path in Path(f"{_PY}/_sources").rglob("*.rst.txt"):
        for match in _LABEL.finditer(path.read_text(encoding="utf-8")):
            titles.setdefault(match.group(1), re.sub(r":[\w:]+:|`", "", match.group(3)))
    return titles


def _role(match: re.Match[str], md: bool) -> str:
    role, body = match.group(1), match.group(2)
    titled = re.fullmatch(r"(.*?)\s*<([^>]*)>", body, re.S)
    if titled:
        return titled.group(1)
    if role in ("ref", "doc"):
        return _ref_titles().get(body, body.rsplit("/", 1)[-1].replace("-", " "))
    text = body.lstrip("!~")
    text = text.rsplit(".", 1)[-1] if body.startswith("~") else text
    if role in _PREFIXES:
        return _PREFIXES[role] + text
    text += "()" if role in ("func", "meth") and not text.endswith(")") else ""
    return f"`{text}`" if md and role in _CODE_ROLES else text


def _unescape(match: re.Match[str]) -> str:
    escaped = match.group(1)
    return match.group(0) if escaped is None else "" if escaped == " " else escaped


def _inline(text: str, md: bool) -> str:
    text = re.sub(r"``.+?``|\\(.)", _unescape, text)  # backslash escapes, but not in literals
    text = re.sub(r":(?:[\w-]+:)*([\w-]+):`([^`]*)`", lambda m: _role(m, md), text)
    text = re.sub(r"``(.+?)``", r"`\1`" if md else r"\1", text)
    link = r"[\1](\2)" if md else r"\1"
    text = re.sub(r"`([^`<]+?)\s*<([^>`]+)>`__?", link, text)
    text = re.sub(r"`([^`<]+?)`__?", r"\1", text)
    text = re.sub(r"\s*\[(#\w*|\d+)\]_", "", text)
    if not md:
        text = re.sub(r"\*\*(.+?)\*\*", r"\1", text)
        text = re.sub(r"(?<![\w*])\*(\S(?:.*?\S)?)\*(?![\w*])", r"\1", text)
    return text


def _table_rows(lines: list[str]) -> list[list[str]]:
    """The cells of a grid table (``+---+``) or a simple table (``===  ===``), row by row."""
    grid = lines[0].startswith("+")
    edges = [m.start() for m in re.finditer(r"\+" if grid else r"(?<!=)=", lines[0])]
    spans = list(zip(edges, [*edges[1:], None], strict=True))
    if grid:
        spans = [(start + 1, end) for start, end in spans[:-1]]
    rows: list[list[str]] = []
    fresh = True  # the next content line starts a row
    for line in lines:
        if re.fullmatch(r"[+=\- ]+", line.strip()):
            fresh = True
            continue
        cells = [line[start:end].strip(" |") for start, end in spans]
        if fresh or not grid:
            rows.append(cells)
        else:
            rows[-1] = [f"{old} {new}".strip() for old, new in zip(rows[-1], cells, strict=True)]
        fresh = False
    return rows


def _rst_blocks(source: str, md: bool) -> list[_Block]:
    """Headings, paragraphs and code blocks of a reStructuredText document, in order."""
    lines = source.expandtabs().splitlines()
    styles: list[tuple[str, bool]] = []
    blocks: list[_Block] = []
    para: list[str] = []
    literal: int | None = None  # the indentation of a paragraph that ended in "::"

    def flush() -> None:
        nonlocal literal
        if not para:
            return
        if para[0].lstrip().startswith("+-") or re.fullmatch(r"=+( +=+)+", para[0].strip()):
            rows = _table_rows(textwrap.dedent("\n".join(para)).splitlines())
            blocks.append(_Block("table", "\n".join("\t".join(_inline(c, md) for c in row) for row in rows)))
        elif para[0].lstrip().startswith(">>>"):
            blocks.append(_Block("code", textwrap.dedent("\n".join(para))))
        else:
            term = len(para) > 1 and not _BULLET.match(para[0]) and _indent(para[1]) > _indent(para[0])
            text = " ".join(line.strip() for line in para)
            if term:  # a definition list item: "term: definition"
                text = para[0].strip().rstrip(":") + ": " + " ".join(line.strip() for line in para[1:])
            if text.endswith("::"):
                literal = _indent(para[0])
                text = text[:-2].rstrip() + (":" if not text.endswith(" ::") else "")
            text = _BULLET.sub(lambda m: "- " if m.group(1) in "-*+" else m.group(0).lstrip(), text)
            if text.strip():
                blocks.append(_Block("para", _inline(text, md)))
        para.clear()

    i = 0
    while i < len(lines):
        line, nxt = lines[i], lines[i + 1] if i + 1 < len(lines) else ""
        indent = _indent(line)
        heading = None
        if _is_rule(line) and nxt.strip() and i + 2 < len(lines) and _is_rule(lines[i + 2]):
            heading, style, step = nxt.strip(), (line.strip()[0], True), 3
        elif line.strip() and not indent and not para and _is_rule(nxt) and nxt == nxt.rstrip():
            heading, style, step = line.strip(), (nxt.strip()[0], False), 2
        if heading is not None:
            flush()
            styles += [] if style in styles else [style]
            blocks.append(_Block("heading", _inline(heading, md), min(styles.index(style) + 1, 4)))
            i, literal = i + step, None
            continue
        if not line.strip() or _is_rule(line) or re.match(r"^:[A-Za-z][\w ]*:(\s|$)", line):
            flush()
            i += 1
            continue
        if literal is not None and not para:
            start, literal = literal, None
            if indent > start:
                end = _indented_end(lines, i, start)
                blocks.append(_Block("code", textwrap.dedent("\n".join(lines[i:end])).strip("\n")))
                i = end
                continue
        directive = re.match(r"\s*\.\.(?:\s+([\w:-]+)::(.*))?(\s|$)", line)
        if directive:
            flush()
            end = _indented_end(lines, i + 1, indent)
            body = textwrap.dedent("\n".join(lines[i + 1 : end]))
            body = re.sub(r"\A(\s*:[\w-]+:.*\n)+", "", body + "\n")  # directive options
            name, argument = (directive.group(1) or "").split(":")[-1], (directive.group(2) or "").strip()
            if name in _CODE_BODY and body.strip():
                blocks.append(_Block("code", body.strip("\n")))
            elif name in _KEEP_BODY:
                blocks.extend(_rst_blocks(f"{'' if name in _VERSION_NOTES else argument}\n{body}", md))
            i = end
            continue
        if para and _BULLET.match(line):
            flush()
        para.append(line)
        i += 1
    flush()
    return blocks


def _plain_block(block: _Block) -> str:
    if block.kind == "code":
        return textwrap.indent(block.text, "    ")
    return block.text.replace("\t", " | ") if block.kind == "table" else block.text


def _md_block(block: _Block) -> str:
    if block.kind == "heading":
        return "#" * block.level + " " + block.text
    if block.kind == "table":
        rows = [f"| {line.replace(chr(9), ' | ')} |" for line in block.text.splitlines()]
        return "\n".join([rows[0], "|" + " --- |" * (rows[0].count(" | ") + 1), *rows[1:]])
    return f"```\n{block.text}\n```" if block.kind == "code" else block.text


def _fit(blocks: list[_Block], limit: int, render: Callable[[_Block], str]) -> list[_Block]:
    """The longest leading run of blocks whose rendering fits ``limit``, cut at a clean end."""
    kept: list[_Block] = []
    size = -2
    for block in blocks:
        size += len(render(block)) + 2
        if size > limit:
            break
        kept.append(block)
    while kept and (kept[-1].kind == "heading" or kept[-1].text.endswith(":")):
        kept.pop()  # a heading or an introduction to what was cut off
    return kept


def _cut(text: str, limit: int) -> str:
    """Plain text cut at the last paragraph break before ``limit``, at a clean end."""
    if len(text) <= limit:
        return text.strip()
    paragraphs = text[: text.rfind("\n\n", 0, limit)].strip().split("\n\n")
    while len(paragraphs) > 1 and (
        paragraphs[-1].endswith((":", "?")) or "\n" not in paragraphs[-1] and paragraphs[-1][-1] not in '.)!"'
    ):
        paragraphs.pop()  # a heading, a question or an introduction to what was cut off
    return "\n\n".join(paragraphs)


# --- writers: one per format --------------------------------------------------------------


def _latin1(text: str) -> str:
    """Text fpdf2's core fonts can draw: close ASCII for what latin-1 lacks."""
    table = {"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "--",
             "\u2026": "...", "\u2022": "*", "\u2192": "->", "\u2190": "<-", "\u2264": "<=", "\u2265": ">=",
             "\u2260": "!=", "\u2212": "-", "\u00a0": " ", "\u2009": " ", "\u200b": ""}  # fmt: skip
    text = "".join(table.get(ch, ch) for ch in text)
    text = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in text if ord(ch) < 256 and not unicodedata.combining(ch))


def _write_pdf(path: Path, title: str, blocks: list[_Block]) -> None:
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.set_creation_date(_EPOCH)
    pdf.set_title(_latin1(title))
    pdf.set_margins(20, 20, 20)
    pdf.add_page()
    for block in blocks:
        if block.kind == "heading":
            pdf.set_font("helvetica", "B", {1: 16, 2: 13}.get(block.level, 11))
            pdf.ln(3)
        elif block.kind == "code":
            pdf.set_font("courier", "", 8.5)
        else:
            pdf.set_font("helvetica", "", 10.5)
        pdf.multi_cell(0, 5.2, _latin1(_plain_block(block)), new_x="LMARGIN", new_y="NEXT")
        pdf.ln(2)
    pdf.output(str(path))


def _write_docx(path: Path, title: str, blocks: list[_Block]) -> None:
    import docx
    from docx.shared import Pt

    document = docx.Document()
    document.core_properties.title = title
    document.core_properties.created = document.core_properties.modified = _EPOCH
    for block in blocks:
        if block.kind == "heading":
            document.add_heading(block.text, level=block.level - 1 if block.level > 1 else 0)
        elif block.kind == "code":
            run = document.add_paragraph().add_run(block.text)
            run.font.name, run.font.size = "Courier New", Pt(9)
        elif block.kind == "table":
            rows = [line.split("\t") for line in block.text.splitlines()]
            table = document.add_table(rows=len(rows), cols=len(rows[0]), style="Table Grid")
            for cells, row in zip(table.rows, rows, strict=True):
                for cell, text in zip(cells.cells, row, strict=True):
                    cell.text = text
        elif block.text.startswith("- "):
            document.add_paragraph(block.text[2:], style="List Bullet")
        else:
            document.add_paragraph(block.text)
    buffer = io.BytesIO()
    document.save(buffer)
    with zipfile.ZipFile(buffer) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as out:
        for info in src.infolist():  # zip entries carry the time of saving; pin it
            pinned = zipfile.ZipInfo(info.filename, date_time=(2024, 1, 1, 0, 0, 0))
            out.writestr(pinned, src.read(info), compress_type=zipfile.ZIP_DEFLATED)


def _html_text(markup: str) -> str:
    """An HTML page's visible text (its body), one line per line of text, spaces collapsed."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(markup, "html.parser")
    text = (soup.body or soup).get_text()
    return "\n".join(" ".join(line.split()) for line in text.splitlines() if line.strip())


def _html_page(markup: str, limit: int) -> tuple[str, str]:
    """(title, page): the main content of a Sphinx or DocBook page, cut to ``limit`` characters."""
    from bs4 import BeautifulSoup, Tag

    soup = BeautifulSoup(markup, "html.parser")
    main = soup.select_one('div[role="main"]') or soup.select_one("body > div.preface, body > div.chapter")
    if main is None:
        raise ValueError("no main content found")
    for junk in main.select("a.headerlink, nav, div.toc, div.navheader, div.navfooter, img"):
        junk.decompose()

    def trim(node: Tag, budget: int) -> int:
        for child in list(node.children):
            size = len(" ".join(child.get_text().split()))
            if budget > 0 and size <= budget:
                budget -= size
            elif budget > 0 and isinstance(child, Tag) and child.name in ("section", "div"):
                budget = trim(child, budget)
            else:
                child.extract()
                budget = 0
        return budget

    trim(main, limit)
    blocks = re.compile(r"^(h[1-6]|p|pre|ul|ol|dl|table)$")
    while (last := main.find_all(blocks)[-1:]) and last[0].name[0] == "h":
        last[0].decompose()
    for container in reversed(main.find_all(["section", "div"])):  # emptied by the cut
        if not container.get_text(strip=True):
            container.decompose()
    heading = main.find("h1")
    title = " ".join(heading.get_text().split()) if heading else ""
    title = re.sub(r"^[\d.]+\s+", "", title)
    head = f'<head>\n<meta charset="utf-8">\n<title>{title}</title>\n</head>'
    body = f"<body>\n<main>\n{main.decode_contents().strip()}\n</main>\n</body>"
    page = f'<!DOCTYPE html>\n<html lang="en">\n{head}\n{body}\n</html>\n'
    return title, page


# --- building -----------------------------------------------------------------------------


def _build_one(source: _Source, target: Path) -> CorpusEntry:
    raw_bytes = Path(source.path).read_bytes()
    raw = (gzip.decompress(raw_bytes) if source.path.endswith(".gz") else raw_bytes).decode("utf-8")
    fmt = _FORMATS[source.file.rsplit(".", 1)[-1]]
    out = target / source.file
    if fmt == "html":
        title, page = _html_page(raw, source.limit)
        out.write_text(page, encoding="utf-8")
        text = _html_text(page)
    elif not source.path.endswith(".rst.txt"):
        title, text = source.title, _cut(raw, source.limit)
        out.write_text(text + "\n", encoding="utf-8")
    else:
        render = _md_block if fmt == "md" else _plain_block
        blocks = _fit(_rst_blocks(raw, md=fmt == "md"), source.limit, render)
        title = next((b.text for b in blocks if b.kind == "heading"), source.title)
        text = "\n\n".join(render(b) for b in blocks)
        if fmt in ("md", "txt"):
            out.write_text(text + "\n", encoding="utf-8")
        else:
            (_write_pdf if fmt == "pdf" else _write_docx)(out, title, blocks)
    return CorpusEntry(
        file=source.file,
        format=fmt,
        source=f"{source.package}: {source.path}",
        licence=source.licence,
        title=title,
        chars=len(text),
        sha256=hashlib.sha256(out.read_bytes()).hexdigest(),
    )


def build_corpus(target: Path = CORPUS_DIR) -> list[CorpusEntry]:
    """(Re)build the corpus files in ``target`` from the Debian packages and write ``sources.json``."""
    missing = sorted({s.package for s in _SOURCES if not Path(s.path).is_file()})
    if missing:
        raise TierflowError(
            f"the batch corpus' sources are not installed (packages: {', '.join(missing)})",
            hint=f"Install them on Debian: apt-get install {' '.join(missing)}",
        )
    target.mkdir(parents=True, exist_ok=True)
    manifest = [_build_one(source, target) for source in _SOURCES]
    (target / "sources.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", "utf-8")
    return manifest


def load_manifest(directory: Path = CORPUS_DIR) -> list[CorpusEntry]:
    """The corpus' ``sources.json``: one entry per file, in a fixed order."""
    try:
        entries: list[CorpusEntry] = json.loads((directory / "sources.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise TierflowError(
            f"the batch corpus index {directory / 'sources.json'} cannot be read: {exc}",
            hint="Rebuild it with `python -m tierflow.evals.batch_corpus` (needs the Debian packages).",
        ) from None
    return entries


if __name__ == "__main__":
    built = build_corpus()
    for entry in built:
        print(f"{entry['file']:40} {entry['format']:5} {entry['chars']:>7,}  {entry['source']}")
    print(f"{len(built)} documents, {sum(e['chars'] for e in built):,} characters in {CORPUS_DIR}")
