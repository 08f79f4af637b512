"""``tierflow memory add/search/list/forget``: users' documents in the long-term memory."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from tierflow.cli_support import JsonOption, emit_json, err, fail, out, pull_progress, settings
from tierflow.errors import TaskInputError, TierflowError
from tierflow.optional import require

if TYPE_CHECKING:
    from tierflow.memory.documents import DocumentMemory

__all__ = ["memory_add", "memory_search", "memory_list", "memory_forget", "CollectionsOption"]

CollectionOption = Annotated[str, typer.Option("--collection", help="The collection (default: default).")]
CollectionsOption = Annotated[
    list[str] | None, typer.Option("--collection", help="Only these collections (default: all).")
]


def _documents() -> DocumentMemory:
    from tierflow.app import load_embeddings
    from tierflow.memory.documents import DocumentMemory

    conf = settings()
    return DocumentMemory.open(conf.documents_dir(), load_embeddings(conf, pull_progress()))


def memory_add(
    paths: Annotated[list[str], typer.Argument(help="Files, folders (read recursively) or globs.")],
    collection: CollectionOption = "default",
    local_only: Annotated[
        bool | None,
        typer.Option(
            "--local-only/--not-local-only",
            help="A new collection's privacy: its chunks never go to the LLM.",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Add documents (.txt .md .html .pdf .docx) to the memory: unchanged files are left as
    they are, changed ones replace their chunks, unreadable ones are reported."""
    try:
        require("pypdf", "docx", "bs4", purpose="reading documents")
    except TierflowError as exc:
        fail(exc)
    from tierflow.batch.readers import find_inputs

    try:
        files = find_inputs(paths)
        memory = _documents()
        with Progress(
            TextColumn("adding"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=err,
            transient=True,
        ) as bar:
            task = bar.add_task("files", total=len(files))
            results = memory.add_all(
                files,
                collection=collection,
                local_only=local_only,
                on_added=lambda added: bar.advance(task),
            )
    except TaskInputError as exc:
        fail(exc, code=2)
    except TierflowError as exc:
        fail(exc)
    if as_json:
        emit_json([vars(result) for result in results])
    else:
        for result in results:
            detail = f"{result.chunks} chunk(s)" if result.status != "failed" else result.reason or ""
            out.print(f"{result.status:9} {escape(result.source)} ({escape(detail)})", highlight=False)
    failed = sum(result.status == "failed" for result in results)
    err.print(
        f"{len(results) - failed} file(s) in the collection {collection!r}, {failed} failed", highlight=False
    )
    raise typer.Exit(1 if failed else 0)


def memory_search(
    query: Annotated[str, typer.Argument(help="What to look for, in plain language.")],
    k: Annotated[int, typer.Option("--k", min=1, max=100, help="How many chunks.")] = 5,
    collection: CollectionsOption = None,
    as_json: JsonOption = False,
) -> None:
    """The chunks that best match QUERY, best first (by meaning, plus the words they share
    with it), with their source and position."""
    try:
        hits = _documents().search(query, k=k, collections=collection or None)
    except TierflowError as exc:
        fail(exc)
    if as_json:
        emit_json(
            [
                {"score": round(hit.score, 4), "similarity": round(hit.similarity, 4), **vars(hit.chunk)}
                for hit in hits
            ]
        )
        return
    if not hits:
        err.print("nothing found: add documents with `tierflow memory add PATH`")
    for hit in hits:
        c = hit.chunk
        where = f"{c.source} #{c.position} ({c.collection}{', local-only' if c.local_only else ''})"
        out.print(f"[bold]{hit.score:.3f}[/] [dim](similarity {hit.similarity:.3f})[/] {escape(where)}")
        out.print(escape(c.text[:400] + ("…" if len(c.text) > 400 else "")), highlight=False)
        out.print()


def memory_list(as_json: JsonOption = False) -> None:
    """The stored documents per collection."""
    from rich.table import Table

    try:
        sources = _documents().sources()
    except TierflowError as exc:
        fail(exc)
    if as_json:
        emit_json([vars(source) for source in sources])
        return
    if not sources:
        err.print("no documents yet: add some with `tierflow memory add PATH`")
        return
    table = Table("collection", "source", "chunks", "local-only", "added")
    for s in sources:
        table.add_row(
            s.collection, escape(s.source), str(s.chunks), "yes" if s.local_only else "", s.added_at
        )
    out.print(table)


def memory_forget(
    source: Annotated[str | None, typer.Argument(help="The file whose chunks to remove.")] = None,
    every: Annotated[bool, typer.Option("--all", help="Remove every document (not the decisions).")] = False,
) -> None:
    """Remove a document's chunks from every collection, or all documents with --all."""
    if (source is None) == (not every):
        fail(
            TaskInputError("give a SOURCE or --all", hint="`tierflow memory list` shows the sources."), code=2
        )
    try:
        memory = _documents()
        removed = memory.forget_all() if every else memory.forget(str(source))
    except TierflowError as exc:
        fail(exc)
    if not every and removed == 0:
        fail(
            TaskInputError(
                f"no stored chunk comes from {source}", hint="`tierflow memory list` shows the sources."
            )
        )
    out.print(f"{removed} chunk(s) removed")
