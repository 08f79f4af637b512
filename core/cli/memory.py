"""``tierflow memory ...``: users' documents in the long-term memory (add, search, list,
forget, ask) and the memory of verified decisions (rebuild)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from tierflow.cli.render import ProgressPrinter
from tierflow.cli.support import (
    JsonOption,
    PolicyOption,
    emit_json,
    err,
    out,
    parse_tiers,
    progress_display,
    report_run,
    settings,
)
from tierflow.errors import TaskInputError, TierflowError
from tierflow.optional import require

if TYPE_CHECKING:
    from tierflow.memory.documents import DocumentMemory

__all__ = ["memory_app"]

memory_app = typer.Typer(
    no_args_is_help=True, help="Long-term memory: your documents, and the verified decisions."
)

CollectionOption = Annotated[str, typer.Option("--collection", help="The collection (default: default).")]
CollectionsOption = Annotated[
    list[str] | None, typer.Option("--collection", help="Only these collections (default: all).")
]


def _documents() -> DocumentMemory:
    from tierflow.app import load_embeddings
    from tierflow.memory.documents import DocumentMemory

    conf = settings()
    return DocumentMemory.open(conf.documents_dir(), load_embeddings(conf, progress_display()))


@memory_app.command("add")
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
    follow_links: Annotated[
        bool, typer.Option("--follow-links", help="Read links in the folders that lead out of them.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Add documents (.txt .md .html .pdf .docx) to the memory: unchanged files are left as
    they are, changed ones replace their chunks, unreadable ones are reported. A link found
    in a folder that leads out of it is refused unless --follow-links."""
    require("pypdf", "docx", "bs4", purpose="reading documents")
    from tierflow.tools.readers import BoundedReader, find_inputs, printable_name

    files = find_inputs(paths, follow_links=follow_links)
    memory = _documents()
    with progress_display() as progress, BoundedReader() as reader:
        results = memory.add_all(
            files, collection=collection, local_only=local_only, on_progress=progress, read=reader.read
        )
    if as_json:
        emit_json([vars(result) for result in results])
    else:
        for result in results:
            detail = f"{result.chunks} chunk(s)" if result.status != "failed" else result.reason or ""
            shown = escape(printable_name(result.source))
            out.print(f"{result.status:9} {shown} ({escape(printable_name(detail))})", highlight=False)
    failed = sum(result.status == "failed" for result in results)
    err.print(
        f"{len(results) - failed} file(s) in the collection {collection!r}, {failed} failed", highlight=False
    )
    raise typer.Exit(1 if failed else 0)


MAX_QUERY_CHARS = 2000
"""The longest query or question ``memory search`` and ``memory ask`` take."""


@memory_app.command("search")
def memory_search(
    query: Annotated[str, typer.Argument(help="What to look for, in plain language.")],
    k: Annotated[int, typer.Option("--k", min=1, max=100, help="How many chunks.")] = 5,
    collection: CollectionsOption = None,
    as_json: JsonOption = False,
) -> None:
    """The chunks that best match QUERY, best first (by meaning, plus the words they share
    with it), with their source and position."""
    from tierflow.graphs.runner import check_text

    query = check_text(
        query, "query", limit=MAX_QUERY_CHARS, example='tierflow memory search "refund policy"'
    )
    hits = _documents().search(query, k=k, collections=collection or None)
    if as_json:
        emit_json(
            [
                {"ranking": round(hit.ranking, 4), "similarity": round(hit.similarity, 4), **vars(hit.chunk)}
                for hit in hits
            ]
        )
        return
    if not hits:
        err.print("nothing found: add documents with `tierflow memory add PATH`")
    for hit in hits:
        c = hit.chunk
        where = f"{c.source} #{c.position} ({c.collection}{', local-only' if c.local_only else ''})"
        out.print(f"[bold]{hit.ranking:.3f}[/] [dim](similarity {hit.similarity:.3f})[/] {escape(where)}")
        out.print(escape(c.text[:400] + ("…" if len(c.text) > 400 else "")), highlight=False)
        out.print()


@memory_app.command("list")
def memory_list(as_json: JsonOption = False) -> None:
    """The stored documents per collection."""
    from rich.table import Table

    sources = _documents().sources()
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


@memory_app.command("forget")
def memory_forget(
    source: Annotated[str | None, typer.Argument(help="The file whose chunks to remove.")] = None,
    every: Annotated[bool, typer.Option("--all", help="Remove every document (not the decisions).")] = False,
) -> None:
    """Remove a document's chunks from every collection, or all documents with --all."""
    if (source is None) == (not every):
        raise TaskInputError("give a SOURCE or --all", hint="`tierflow memory list` shows the sources.")
    memory = _documents()
    removed = memory.forget_all() if every else memory.forget(str(source))
    if not every and removed == 0:  # nothing matched: exit status 1, as for a run id that matches none
        raise TierflowError(
            f"no stored chunk comes from {source}", hint="`tierflow memory list` shows the sources."
        )
    out.print(f"{removed} chunk(s) removed")


@memory_app.command("ask")
def memory_ask(
    question: Annotated[str, typer.Argument(help="A question your documents answer.")],
    k: Annotated[int, typer.Option("--k", min=1, max=20, help="How many chunks to answer from.")] = 4,
    collection: CollectionsOption = None,
    policy: PolicyOption = "settings",
    local_only: Annotated[bool, typer.Option(help="Keep every step on the local SLM.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Answer QUESTION from the documents in the memory, naming the chunks it used; a
    question they do not answer gets "not found" rather than a guess."""
    from tierflow.app import App
    from tierflow.graphs.citing import build_qa_graph
    from tierflow.graphs.runner import check_text

    question = check_text(
        question, "question", limit=MAX_QUERY_CHARS, example='tierflow memory ask "How do I reset it?"'
    )
    conf = settings()
    chosen = parse_tiers(policy, [])
    with App(conf, on_progress=progress_display()) as tierflow_app:
        graph = build_qa_graph(lambda: tierflow_app.documents, k=k, collections=collection or None)
        result = tierflow_app.run_graph(
            graph,
            {"question": question},
            policy=chosen,
            local_only=local_only,
            name="memory ask",
            task=question,
            on_event=ProgressPrinter(err),
        )
        trace = tierflow_app.store.get_run(result.run_id)
    report_run(result, trace, str((result.state or {}).get("answer") or ""), as_json)


@memory_app.command("rebuild")
def memory_rebuild(
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Move the current memory aside first (e.g. a corrupt one).")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Refill the memory of verified decisions from the stored runs' traces."""
    import time

    from tierflow.app import open_recall
    from tierflow.memory.rebuild import rebuild_decisions
    from tierflow.memory.traces import TraceStore

    conf = settings()
    folder = conf.resolved_memory_dir() / "decisions"
    moved = None
    if fresh and folder.exists():
        moved = folder.with_name(f"decisions.moved-{time.strftime('%Y%m%d-%H%M%S')}")
        folder.rename(moved)
    recall = open_recall(conf, progress_display(), learn=True)
    store = TraceStore.from_url(conf.resolved_database_url())
    runs, added = rebuild_decisions(store, recall.memory)
    summary = {"runs": runs, "added": added, "decisions": recall.memory.count(), "memory": str(folder)}
    if moved is not None:
        summary["moved_aside"] = str(moved)
    if as_json:
        emit_json(summary)
    else:
        aside = f" (the old one is in {moved})" if moved else ""
        out.print(f"{added} decisions added from {runs} runs; {summary['decisions']} in {folder}{aside}")
