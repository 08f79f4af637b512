"""Jobs: the batch summarization jobs (``tierflow summarize``), their progress, each
document's outcome with a link to its run, and the cross-document synthesis."""

from __future__ import annotations

from collections import Counter
from pathlib import PurePath

import pandas as pd
import streamlit as st
from tierflow.batch.jobs import FINISHED, JobNotFoundError, JobStore
from tierflow.memory.traces.tables import Job, JobDocument
from tierflow.records import slm_share
from tierflow.ui.resources import current_app
from tierflow.ui.views import STATUS_BADGE

REFRESH_SECONDS = 3
START_COMMAND = "tierflow summarize REPORTS/ --out report.md"


def documents_share(documents: list[JobDocument]) -> float | None:
    slm = sum(d.slm_calls for d in documents)
    return slm_share(slm, slm + sum(d.llm_calls for d in documents))


def jobs_frame(jobs: list[Job], documents: dict[str, list[JobDocument]]) -> pd.DataFrame:
    rows = []
    for job in jobs:
        docs = documents[job.id]
        count = Counter(d.status for d in docs)
        inputs = ", ".join(job.inputs)
        rows.append(
            {
                "job": job.id,
                "status": job.status,
                "created": job.created_at,
                "succeeded": count["succeeded"],
                "failed": count["failed"],
                "skipped": count["skipped"],
                "pending": count["pending"] + count["running"],
                "total": len(docs),
                "SLM share": documents_share(docs),
                "LLM tokens": sum(d.llm_tokens for d in docs),
                "inputs": inputs if len(inputs) <= 60 else inputs[:59] + "…",
            }
        )
    return pd.DataFrame(rows)


def reason_of(document: JobDocument) -> str:
    if document.reason:
        return document.reason
    if document.reused_from:
        return f"unchanged: reuses the summary from job {document.reused_from}"
    return ""


DOCUMENT_COLUMNS = [
    "#", "file", "status", "reason", "chunks", "SLM calls", "LLM calls", "LLM tokens",
    "seconds", "SLM seconds", "LLM seconds", "escalated", "encoding", "run",
]  # fmt: skip


def documents_frame(documents: list[JobDocument]) -> pd.DataFrame:
    """One row per document, with where its time went: SLM and LLM seconds, and the SLM
    outputs sent to the LLM by reason."""
    rows = [
        {
            "#": d.position,
            "file": PurePath(d.path).name,
            "status": d.status,
            "reason": reason_of(d),
            "chunks": d.chunks,
            "SLM calls": d.slm_calls,
            "LLM calls": d.llm_calls,
            "LLM tokens": d.llm_tokens,
            "seconds": d.seconds,
            "SLM seconds": d.slm_seconds or 0.0,
            "LLM seconds": d.llm_seconds or 0.0,
            "escalated": ", ".join(f"{why} ×{n}" for why, n in (d.escalations or {}).items()),
            "encoding": d.encoding or "",
            "run": d.run_id or "",
        }
        for d in documents
    ]
    return pd.DataFrame(rows, columns=DOCUMENT_COLUMNS)


def open_run_link(documents: list[JobDocument]) -> None:
    """A document picked by name, and a link to its run on the Run detail page."""
    labels = {d.run_id: f"{d.position} · {PurePath(d.path).name} · {d.status}" for d in documents if d.run_id}
    if not labels:
        return
    left, right = st.columns([3, 2], vertical_alignment="bottom")
    run_id = left.selectbox("A document's run", list(labels), format_func=labels.__getitem__, key="job_run")
    if run_id:
        right.page_link(
            "screens/run_detail.py",
            label=f"Open run {run_id[:8]}",
            icon=":material/account_tree:",
            query_params={"run": run_id},
        )


def show_progress(store: JobStore, job_id: str, *, was_running: bool) -> None:
    """Progress, counts and the per-document table; refreshed on a timer while the job runs."""
    store.reconcile()  # a job whose process died shows as interrupted, not running forever
    job = store.get(job_id)
    if was_running and job.status != "running":
        st.rerun()  # it just ended: redraw the whole page (status, synthesis, error)
    documents = store.documents(job_id)
    count = Counter(d.status for d in documents)
    finished = sum(count[status] for status in FINISHED)
    total = len(documents)
    st.progress(finished / total if total else 0.0, text=f"{finished} of {total} documents finished")
    columns = st.columns(6)
    for column, status in zip(
        columns, ("succeeded", "failed", "skipped", "running", "pending"), strict=False
    ):
        column.metric(status, count[status])
    share = documents_share(documents)
    columns[5].metric("SLM share", f"{100 * share:.0f}%" if share is not None else "–")
    st.dataframe(
        documents_frame(documents),
        hide_index=True,
        width="stretch",
        column_config={
            name: st.column_config.NumberColumn(name, format="%.1f")
            for name in ("seconds", "SLM seconds", "LLM seconds")
        },
    )
    open_run_link(documents)


app = current_app()
store = JobStore(app.store)
st.title("Jobs")

jobs = store.list_jobs(limit=200)
wanted = st.query_params.get("job")
chosen: Job | None = None
if wanted:
    try:
        chosen = store.get(wanted)  # an id or a unique prefix of one
    except JobNotFoundError as exc:
        st.warning(f"There is no job {wanted!r} ({exc.message}); pick one below.")
if chosen is not None and chosen.id not in {job.id for job in jobs}:
    jobs = [chosen, *jobs]
if not jobs:
    st.info("No batch jobs yet. Summarize a folder of reports with:")
    st.code(START_COMMAND, language="bash")
    st.stop()

documents = {job.id: store.documents(job.id) for job in jobs}
st.dataframe(
    jobs_frame(jobs, documents),
    hide_index=True,
    width="stretch",
    column_config={
        "SLM share": st.column_config.ProgressColumn(
            "SLM share", min_value=0.0, max_value=1.0, format="percent"
        ),
        "created": st.column_config.DatetimeColumn("created", format="YYYY-MM-DD HH:mm:ss"),
    },
)

options = {job.id: f"{job.id} · {job.status} · {', '.join(job.inputs)[:70]}" for job in jobs}
keys = list(options)
job_id = st.selectbox(
    "Job",
    keys,
    index=keys.index(chosen.id) if chosen is not None else 0,
    format_func=options.__getitem__,
)
if job_id is None:
    st.stop()
st.query_params["job"] = job_id
job = next(j for j in jobs if j.id == job_id)

finished = f" · finished {job.finished_at:%Y-%m-%d %H:%M:%S}" if job.finished_at else ""
st.markdown(
    f"{STATUS_BADGE.get(job.status, job.status)} · created {job.created_at:%Y-%m-%d %H:%M:%S}{finished}"
)
st.caption("Inputs")
st.text("\n".join(job.inputs))
if job.error:
    st.error("The job stopped with an error:", icon=":material/error:")
    st.code(job.error, language=None, wrap_lines=True)

running = job.status == "running"
live = running and st.toggle("Refresh while it runs", value=True)
st.fragment(show_progress, run_every=REFRESH_SECONDS if live else None)(store, job.id, was_running=running)

if job.synthesis:
    st.subheader("Synthesis")
    # model output is text, never Markdown or HTML (ui/views.py): a report cannot run
    # scripts, restyle the console or load images from elsewhere
    st.text(job.synthesis)
    left, right = st.columns(2)
    left.download_button(
        "Download the report", job.synthesis, file_name=f"job-{job.id}.md", mime="text/markdown"
    )
    if job.synthesis_run_id:
        right.page_link(
            "screens/run_detail.py",
            label="Open the synthesis run",
            icon=":material/account_tree:",
            query_params={"run": job.synthesis_run_id},
        )
with st.expander("Options"):
    st.json(job.options)
