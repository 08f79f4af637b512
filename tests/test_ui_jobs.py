"""The Jobs page under Streamlit's AppTest, on a real SQLite trace store: batch jobs written
with JobStore as ``tierflow summarize`` writes them (no models)."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from tierflow.app import App
from tierflow.batch.jobs import JobStatus, JobStore, NewDocument
from tierflow.memory.traces.tables import Job
from tierflow.settings import load_settings

from tests.test_ui_pages import page, texts

JOBS = "screens/jobs.py"
SYNTHESIS = "## Findings\n\nBoth reports name **late deliveries**."
INJECTION = "Findings <script>alert(1)</script> <b>bold</b>"
FAILED_REASON = "could not read the PDF: it is encrypted"


@pytest.fixture
def app(tmp_path: Path) -> App:
    return App(load_settings(workspace=tmp_path))


def summary_run(app: App, name: str) -> str:
    run_id: str = app.store.start_run(f"Summarize {name}", graph="summarize")
    app.store.finish_run(run_id, "succeeded", answer=f"The summary of {name}.")
    return run_id


def make_job(
    app: App, *, status: JobStatus = "succeeded", synthesis: str | None = SYNTHESIS
) -> tuple[Job, str]:
    """A job of four documents: done (with a real run), failed, skipped and pending."""
    jobs = JobStore(app.store)
    job = jobs.create(["reports/"], {"chunk_tokens": 800}, job_signature="sig")
    names = ["a.pdf", "b.pdf", "c.txt", "d.docx"]
    jobs.add_documents(job.id, [NewDocument(i, f"reports/{n}", None, 100) for i, n in enumerate(names)])
    done, failed, skipped, _pending = jobs.documents(job.id)
    run_id = summary_run(app, "a.pdf")
    jobs.update_document(
        done.id or 0,
        status="succeeded",
        run_id=run_id,
        chunks=3,
        slm_calls=3,
        llm_calls=1,
        llm_tokens=250,
        seconds=1.5,
        slm_seconds=0.9,
        llm_seconds=0.5,
        escalations={"copies_source": 1},
        encoding="cp1252",
    )
    jobs.update_document(failed.id or 0, status="failed", reason=FAILED_REASON)
    jobs.update_document(skipped.id or 0, status="skipped", reason="empty file: nothing to summarize")
    if status != "running":
        jobs.finish(job.id, status, synthesis=synthesis)
    return jobs.get(job.id), run_id


def test_the_page_lists_jobs_with_their_counts(app: App) -> None:
    job, _ = make_job(app)
    at = page(app, JOBS)
    (row,) = at.dataframe[0].value.to_dict("records")
    assert row["job"] == job.id and row["status"] == "succeeded" and row["inputs"] == "reports/"
    counts = {key: row[key] for key in ("succeeded", "failed", "skipped", "pending", "total")}
    assert counts == {"succeeded": 1, "failed": 1, "skipped": 1, "pending": 1, "total": 4}
    assert row["SLM share"] == 0.75 and row["LLM tokens"] == 250


def test_a_job_shows_progress_documents_and_a_link_to_each_run(app: App) -> None:
    job, run_id = make_job(app)
    at = page(app, JOBS, job=job.id)
    assert at.selectbox[0].value == job.id
    assert at.progress[0].value == 75  # three of four documents finished
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["succeeded"] == "1" and metrics["failed"] == "1" and metrics["pending"] == "1"
    documents = at.dataframe[1].value
    assert list(documents["file"]) == ["a.pdf", "b.pdf", "c.txt", "d.docx"]
    assert list(documents["status"]) == ["succeeded", "failed", "skipped", "pending"]
    assert documents.loc[1, "reason"] == FAILED_REASON
    assert documents.loc[0, "run"] == run_id and documents.loc[0, "LLM tokens"] == 250
    where = documents.loc[0, ["SLM seconds", "LLM seconds", "escalated", "encoding"]].tolist()
    assert where == [0.9, 0.5, "copies_source ×1", "cp1252"]  # where its time went
    (link,) = at.page_link
    assert link.proto.page.endswith("run_detail") and link.proto.query_string == f"run={run_id}"
    at = page(app, "screens/run_detail.py", run=run_id)  # where the link leads
    assert at.selectbox[0].value == run_id and "The summary of a.pdf." in texts(at)


def test_the_synthesis_is_shown_and_the_error_too(app: App) -> None:
    job, _ = make_job(app)
    at = page(app, JOBS, job=job.id)
    assert "Synthesis" in [h.value for h in at.subheader]
    assert SYNTHESIS in texts(at)
    assert at.download_button[0].proto.label == "Download the report"
    assert not at.error
    jobs = JobStore(app.store)
    jobs.finish(job.id, "failed", error="the LLM endpoint refused the request")
    at = page(app, JOBS, job=job.id)
    assert at.error and "the LLM endpoint refused the request" in texts(at)
    assert "Synthesis" not in [h.value for h in at.subheader]


def test_model_output_in_the_synthesis_is_never_rendered_as_html(app: App) -> None:
    job, _ = make_job(app, synthesis=INJECTION)
    at = page(app, JOBS, job=job.id)
    assert INJECTION in [t.value for t in at.text]  # shown as plain text, tags and all
    assert not any("alert(1)" in m.value for m in at.markdown)
    assert not any(m.proto.allow_html for m in at.markdown)
    assert "unsafe_allow_html=True" not in (Path(__file__).parents[1] / "ui" / JOBS).read_text()


def test_a_running_job_refreshes_itself(app: App) -> None:
    job, _ = make_job(app, status="running")
    at = page(app, JOBS, job=job.id[:6])  # an id prefix is enough
    assert at.selectbox[0].value == job.id
    assert at.toggle[0].label == "Refresh while it runs" and at.toggle[0].value
    assert at.progress[0].value == 75 and "running" in at.markdown[0].value
    at.toggle[0].set_value(False)
    at.run()
    assert not at.exception, at.exception


def test_no_jobs_shows_how_to_start_one(app: App) -> None:
    at = page(app, JOBS)
    assert "No batch jobs yet" in at.info[0].value
    assert "tierflow summarize REPORTS/ --out report.md" in [c.value for c in at.code]
    assert not at.dataframe


@pytest.mark.parametrize("with_a_job", [False, True])
def test_a_missing_job_id_is_a_message_not_a_traceback(app: App, with_a_job: bool) -> None:
    job = make_job(app)[0] if with_a_job else None
    at: AppTest = page(app, JOBS, job="nosuchjob")
    assert at.warning and "There is no job 'nosuchjob'" in at.warning[0].value
    if job is None:
        assert "No batch jobs yet" in at.info[0].value
    else:
        assert at.selectbox[0].value == job.id  # falls back to the newest job
