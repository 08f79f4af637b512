"""Memory: the users' documents in the long-term memory (``tierflow memory add/search/list/
forget``): what is stored, adding files and folders, searching, and forgetting.

File names, paths and chunks are the user's text: they are shown as text (``st.text``,
``st.code``, data frames), never as Markdown or HTML."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import PurePath
from typing import Literal

import pandas as pd
import streamlit as st
from tierflow.errors import TierflowError
from tierflow.memory.documents import DEFAULT_COLLECTION, Added, DocumentMemory, Hit, Source, check_name
from tierflow.tools.readers import find_inputs
from tierflow.ui.resources import current_app

ADD_COMMAND = "tierflow memory add PATH"
LOCAL_ONLY_BADGE = ":orange-badge[local only]"
NOTICE_KEY = "memory_notice"
FORGET_KEY = "memory_forget_source"
CONFIRM_KEY = "memory_forget_confirm"
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~:$])")


# What a forget button did (kind, message, hint), shown once on the run that follows its
# callback. A tuple, not a class of this script: the script's classes are new on every run.
# (A comment, not a docstring: Streamlit would show a bare string on the page.)
Notice = tuple[Literal["success", "warning", "error"], str, str]


def plain(text: str) -> str:
    """``text`` for a Markdown element (``st.error``): every Markdown character escaped."""
    return _MARKDOWN.sub(r"\\\1", text)


def show_error(exc: TierflowError) -> None:
    st.error(plain(exc.message), icon=":material/error:")
    if exc.hint:
        st.caption(exc.hint)  # our own text, naming the setting or command that fixes it


def path_specs(text: str) -> list[str]:
    """Files, folders or globs, one per line or separated by commas."""
    return [spec.strip() for spec in re.split(r"[,\n]", text) if spec.strip()]


def sources_frame(sources: list[Source]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "file": PurePath(s.source).name,
                "collection": s.collection,
                "chunks": s.chunks,
                "local only": s.local_only,
                "added": datetime.fromisoformat(s.added_at),
                "path": s.source,
            }
            for s in sources
        ],
        columns=["file", "collection", "chunks", "local only", "added", "path"],
    )


def outcomes_frame(results: list[Added]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "file": PurePath(r.source).name,
                "status": r.status,
                "chunks": r.chunks,
                "reason": r.reason or "",
                "path": r.source,
            }
            for r in results
        ],
        columns=["file", "status", "chunks", "reason", "path"],
    )


def show_sources(sources: list[Source]) -> None:
    if not sources:
        st.info("No documents in the memory yet. Add files or folders below, or from a terminal:")
        st.code(ADD_COMMAND, language="bash")
        return
    chunks = sum(s.chunks for s in sources)
    collections = len({s.collection for s in sources})
    st.caption(f"{len(sources)} file(s), {chunks} chunk(s) in {collections} collection(s)")
    st.dataframe(
        sources_frame(sources),
        hide_index=True,
        width="stretch",
        column_config={"added": st.column_config.DatetimeColumn("added", format="YYYY-MM-DD HH:mm:ss")},
    )


def add_documents(memory: DocumentMemory) -> None:
    """The form, then each file's outcome as it is read (unchanged files are left alone)."""
    with st.form("memory_add"):
        paths = st.text_area(
            "Files or folders on this machine",
            key="memory_paths",
            placeholder="~/notes\n/srv/reports/2024, ~/manual.pdf",
            help="One per line or separated by commas; folders are read recursively for .txt, .md, "
            ".html, .pdf and .docx files; globs work too. The console reads them where it runs.",
        )
        left, right = st.columns([2, 1], vertical_alignment="bottom")
        collection = left.text_input("Collection", value=DEFAULT_COLLECTION, key="memory_collection")
        local_only = right.checkbox(
            "Local only",
            key="memory_local_only",
            help="For a new collection: its chunks never go to the LLM tier. "
            "An existing collection keeps its own setting.",
        )
        submitted = st.form_submit_button("Add", type="primary")
    if not submitted:
        return
    try:
        name = check_name(collection.strip())
        files = find_inputs(path_specs(paths))
    except TierflowError as exc:
        show_error(exc)
        return
    done: list[Added] = []
    bar = st.progress(0.0, text=f"0 of {len(files)} file(s) read")

    try:  # file by file, so that the files read before a failure are still listed below
        for path in files:
            done.append(memory.add(path, collection=name, local_only=True if local_only else None))
            bar.progress(len(done) / len(files), text=f"{len(done)} of {len(files)} file(s) read")
    except TierflowError as exc:
        show_error(exc)  # the files read before it are still listed below
    if not done:
        return
    failed = sum(r.status == "failed" for r in done)
    summary = f"{len(done) - failed} file(s) in the collection '{name}', {failed} failed"
    (st.warning if failed else st.success)(summary)
    st.dataframe(outcomes_frame(done), hide_index=True, width="stretch")


def show_hit(rank: int, hit: Hit) -> None:
    chunk = hit.chunk
    with st.container(border=True):
        # only our own labels and numbers go through Markdown (a collection name is checked)
        badge = f" · {LOCAL_ONLY_BADGE}" if chunk.local_only else ""
        st.markdown(
            f"**{rank}. ranking {hit.ranking:.2f}** (similarity {hit.similarity:.2f})"
            f" · part {chunk.position + 1} · collection `{chunk.collection}`{badge}"
        )
        st.text(f"{PurePath(chunk.source).name}  ({PurePath(chunk.source).parent})")
        st.code(chunk.text, language=None, wrap_lines=True)


def search_documents(memory: DocumentMemory, collections: list[str]) -> None:
    with st.form("memory_search"):
        query = st.text_input("Query", key="memory_query", placeholder="e.g. How do I report a bug?")
        left, right = st.columns([1, 3])
        k = left.number_input("Chunks", min_value=1, max_value=20, value=5, step=1, key="memory_k")
        chosen = right.multiselect(
            "Only these collections", collections, key="memory_collections", placeholder="all collections"
        )
        submitted = st.form_submit_button("Search")
    if not submitted:
        return
    if not query.strip():
        st.error("Type what to look for.")
        return
    try:
        hits = memory.search(query, k=int(k), collections=chosen or None)
    except TierflowError as exc:
        show_error(exc)
        return
    if not hits:
        st.info("Nothing found: add documents first.")
    for rank, hit in enumerate(hits, 1):
        show_hit(rank, hit)


def forget_source(memory: DocumentMemory) -> None:
    """The Forget button's callback: it runs before the page, which then lists what is left."""
    try:
        removed = memory.forget(str(st.session_state[FORGET_KEY]))
    except TierflowError as exc:
        st.session_state[NOTICE_KEY] = ("error", plain(exc.message), exc.hint)
        return
    if removed == 0:
        st.session_state[NOTICE_KEY] = ("warning", "No stored chunk comes from that file.", "")
    else:
        st.session_state[NOTICE_KEY] = ("success", f"{removed} chunk(s) removed", "")


def forget_everything(memory: DocumentMemory) -> None:
    st.session_state[CONFIRM_KEY] = False  # each "everything" asks again
    try:
        removed = memory.forget_all()
    except TierflowError as exc:
        st.session_state[NOTICE_KEY] = ("error", plain(exc.message), exc.hint)
        return
    st.session_state[NOTICE_KEY] = ("success", f"{removed} chunk(s) removed", "")


def forget_documents(memory: DocumentMemory, sources: list[Source]) -> None:
    chunks: dict[str, int] = {}
    for s in sources:  # a file in several collections is forgotten from all of them
        chunks[s.source] = chunks.get(s.source, 0) + s.chunks
    if not chunks:
        st.caption("Nothing to forget.")
        return
    st.selectbox(
        "A file to forget (every chunk of it, in every collection)",
        list(chunks),
        key=FORGET_KEY,
        format_func=lambda source: f"{PurePath(source).name} · {chunks[source]} chunk(s) · {source}",
    )
    st.button("Forget this file", key="memory_forget", on_click=forget_source, args=(memory,))
    st.divider()
    confirmed = st.checkbox("Yes, remove every document (not the decisions)", key=CONFIRM_KEY)
    st.button(
        "Forget everything",
        key="memory_forget_all",
        type="primary",
        disabled=not confirmed,
        on_click=forget_everything,
        args=(memory,),
    )


def show_notice() -> None:
    notice: Notice | None = st.session_state.pop(NOTICE_KEY, None)
    if notice is not None:
        kind, message, hint = notice
        {"success": st.success, "warning": st.warning, "error": st.error}[kind](message)
        if hint:
            st.caption(hint)


app = current_app()
st.title("Memory")
st.caption(
    "Your documents, cut into chunks and embedded on this machine, for tasks to draw on. "
    "A local-only collection's chunks never go to the LLM."
)
show_notice()
try:
    memory = app.documents
except TierflowError as exc:
    show_error(exc)
    st.stop()

listing = st.container()  # filled last, so that it shows what the forms below just did
add_tab, search_tab, forget_tab = st.tabs(["Add documents", "Search", "Forget"])
with add_tab:
    add_documents(memory)
try:
    sources = memory.sources()
    collections = memory.collections()
except TierflowError as exc:
    with listing:
        show_error(exc)
    st.stop()
with search_tab:
    search_documents(memory, collections)
with forget_tab:
    forget_documents(memory, sources)
with listing:
    show_sources(sources)
