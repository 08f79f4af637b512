"""The batch summarization job with scripted tiers: the map-reduce graph, the report, bad
input isolated, resume after a crash between documents and after kill -9 inside one,
reruns that skip unchanged files, and local worker processes. (Real models, the task
graph's long observations and Ray: tests/test_batch_real.py and tests/test_batch_ray.py.)"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from tierflow.agents.protocol import Message
from tierflow.agents.scripted import ScriptedModel
from tierflow.agents.tiers import Tiers
from tierflow.app import App
from tierflow.batch.job import JobRequest, run_job
from tierflow.batch.jobs import JobStore
from tierflow.batch.worker import DocumentOutcome, DocumentTask, SummaryOptions
from tierflow.errors import LLMUnavailableError
from tierflow.records import Progress
from tierflow.settings import Settings

from tests.batch_support import (
    dying_tiers,
    gist,
    paragraphs,
    pid_tiers,
    scripted_app,
    scripted_tiers,
    text_of,
    write_reports,
)

OPTIONS = SummaryOptions(chunk_tokens=80)  # scripted models count 3 characters a token


@pytest.fixture
def reports(tmp_path: Path) -> Path:
    return write_reports(tmp_path / "reports")


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    with scripted_app(tmp_path / "data") as built:
        yield built


def job(app: App, *inputs: Path, **fields: Any) -> Any:
    return run_job(JobRequest(inputs=[str(p) for p in inputs], options=OPTIONS, **fields), app)


def test_a_long_document_is_mapped_over_its_chunks_and_reduced(app: App, reports: Path) -> None:
    report = job(app, reports / "a_long.txt")
    assert report.ok, report.to_markdown()
    (document,) = report.documents
    assert document.chunks > 3
    trace = app.store.get_run(document.run_id)
    nodes = [step.node for step in trace.steps]
    assert nodes[0] == "split" and nodes[-1] == "document_summary"
    assert nodes.count("summarize_chunk") == document.chunks and "collapse" in nodes
    # each chunk's summary quotes its chunk: the map kept the chunks' order
    chunk_summaries = [s.model_calls[0].raw_output for s in trace.steps if s.node == "summarize_chunk"]
    assert chunk_summaries == sorted(chunk_summaries, key=lambda text: int(text.split()[2]))
    for step in trace.steps:
        for call in step.model_calls:
            text = call.messages[-1]["content"]
            assert len(text) // 3 <= 80 + 200  # the chunk (80 tokens) and the prompt's own words


def test_the_report_has_each_document_then_the_synthesis_then_totals(app: App, reports: Path) -> None:
    report = job(app, reports)
    assert report.ok and report.totals.succeeded == 3, report.to_markdown()
    markdown = report.to_markdown()
    order = [markdown.index(h) for h in ("## Documents", "## Cross-document report", "## Totals")]
    assert order == sorted(order)
    for name in ("a_long.txt", "b_short.md", "c_page.html"):
        assert f"{name} (succeeded)" in markdown
    assert "SLM share" in markdown and "LLM tokens" in markdown
    data = json.loads(report.to_json_text())
    assert [d["status"] for d in data["documents"]] == ["succeeded"] * 3
    assert data["synthesis"] and data["synthesis_run_id"]
    assert set(data["totals"]) >= {"succeeded", "failed", "skipped", "slm_share", "llm_tokens", "seconds"}
    synthesis = app.store.get_run(data["synthesis_run_id"])
    assert [s.node for s in synthesis.steps][-2:] == ["synthesis", "check_report"]
    assert synthesis.steps[-2].model_calls[0].tier == "llm"  # the report is the LLM's by default
    assert all(d["slm_calls"] >= 1 and d["llm_calls"] == 0 for d in data["documents"])


def test_many_summaries_are_reported_on_in_groups(
    app: App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tierflow.batch.job.SYNTHESIS_GROUP_CHARS", 200)  # one call reads 200 characters
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(12):
        (folder / f"r{i:02}.txt").write_text(f"Report {i} " + "words " * 30)
    report = run_job(JobRequest(inputs=[str(folder)], options=OPTIONS), app)
    assert report.ok
    groups = app.store.get_run(report.synthesis_run_id).steps
    assert all(len(step.model_calls[0].messages[-1]["content"]) < 200 + 400 for step in groups[:-2])
    nodes = [step.node for step in app.store.get_run(report.synthesis_run_id).steps]
    assert nodes.count("synthesis_part") >= 1 and nodes[-2:] == ["synthesis", "check_report"]


@pytest.mark.parametrize("fifo", [True, False])
def test_bad_files_fail_alone_with_their_reason(app: App, reports: Path, fifo: bool) -> None:
    (reports / "empty.txt").write_bytes(b"")
    (reports / "binary.txt").write_bytes(b"\x00\x01\x02" * 100)
    (reports / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    (reports / "truncated.pdf").write_bytes(b"%PDF-1.7\n1 0 obj <<")
    (reports / "gone.txt").symlink_to(reports / "nowhere.txt")
    if fifo:
        os.mkfifo(reports / "pipe.txt")
    report = job(app, reports)
    reasons = {d.name: d.reason or "" for d in report.documents if d.status == "failed"}
    assert reasons["empty.txt"].startswith("empty:")
    assert reasons["binary.txt"].startswith("binary:")
    assert reasons["truncated.pdf"].startswith("corrupt:")
    assert reasons["gone.txt"].startswith("unreadable:")
    assert ("pipe.txt" in reasons) == fifo
    assert report.totals.succeeded == 4 and not report.ok and report.status == "failed"
    [latin1] = [d for d in report.documents if d.name == "latin1.txt"]  # read, in its encoding
    assert (latin1.status, latin1.encoding) == ("succeeded", "cp1252")
    assert "read as cp1252" in report.to_markdown()


def test_a_document_whose_model_call_fails_fails_alone(tmp_path: Path, reports: Path) -> None:
    def fail_on_beta(messages: list[Message]) -> str:
        if "Beta" in messages[-1]["content"]:
            raise LLMUnavailableError("the endpoint refused the request")
        return gist(messages)

    settings = Settings(data_dir=tmp_path / "data")
    tiers = Tiers(ScriptedModel([fail_on_beta] * 100), ScriptedModel([fail_on_beta] * 100, tier="llm"))
    with App(settings, tiers=tiers) as app:
        report = job(app, reports)
    failed = [d for d in report.documents if d.status == "failed"]
    assert [d.name for d in failed] == ["b_short.md"]
    assert "the endpoint refused the request" in (failed[0].reason or "")
    assert failed[0].run_id is not None  # its trace is kept
    assert report.totals.succeeded == 2


class CrashAfter:
    """Progress that raises (as a crash would stop the driver) after ``n`` documents; the
    job's id comes from the first report's note."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.job_id = ""

    def __call__(self, report: Progress) -> None:
        if not self.job_id:
            self.job_id = report.note.split()[1]
        if report.outcome:
            self.n -= 1
            if self.n == 0:
                raise KeyboardInterrupt


def test_a_job_stopped_between_documents_continues_without_redoing_any(app: App, reports: Path) -> None:
    crash = CrashAfter(1)
    with pytest.raises(KeyboardInterrupt):
        run_job(JobRequest(inputs=[str(reports)], options=OPTIONS), app, on_progress=crash)
    jobs = JobStore(app.store)
    stopped = jobs.get(crash.job_id)
    assert stopped.status == "interrupted" and "--resume" in (stopped.error or "")
    before = float((stopped.options or {})["wall_seconds"])  # the stopped run's time is kept
    first = {d.path: d for d in jobs.documents(stopped.id)}
    assert [d.status for d in first.values()] == ["succeeded", "pending", "pending"]

    again = job(app, reports)  # the same command continues the same job
    assert again.job_id == stopped.id and again.ok
    assert again.totals.seconds == pytest.approx(before + again.totals.this_run_seconds, abs=0.01)
    assert before > 0 and again.totals.seconds > again.totals.this_run_seconds  # at b666717: this run only
    second = {d.path: d for d in jobs.documents(stopped.id)}
    done_before = next(path for path, d in first.items() if d.status == "succeeded")
    assert second[done_before].run_id == first[done_before].run_id  # not redone
    assert all(d.status == "succeeded" for d in second.values())
    assert len(app.store.list_runs(limit=100)) == 3 + 1  # three documents and the synthesis

    resumed = run_job(JobRequest(resume=stopped.id[:6], options=OPTIONS), app)
    assert resumed.ok and resumed.job_id == stopped.id  # nothing left: nothing redone,
    assert resumed.synthesis_run_id == again.synthesis_run_id  # not even the report
    assert len(app.store.list_runs(limit=100)) == 3 + 1


def test_a_rerun_skips_unchanged_files_and_redoes_changed_ones(app: App, reports: Path) -> None:
    first = job(app, reports)
    (reports / "b_short.md").write_text("# Beta\n\nBeta sold 5 units in June.")
    second = job(app, reports)
    assert second.job_id != first.job_id
    status = {d.name: d for d in second.documents}
    assert status["a_long.txt"].status == "skipped" and status["c_page.html"].status == "skipped"
    assert status["a_long.txt"].reused_from == first.job_id
    assert status["a_long.txt"].summary == first.documents[0].summary
    assert status["b_short.md"].status == "succeeded" and "5 units" in (status["b_short.md"].summary or "")
    assert second.ok and second.totals.skipped == 2 and second.totals.succeeded == 1


def test_kill_9_inside_a_document_loses_nothing_finished(tmp_path: Path, app: App) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a_first.txt").write_text("First report: revenue was 10 units.")
    (folder / "b_slow.txt").write_text("SLOW report that hangs the model.")
    (folder / "c_last.txt").write_text("Last report: costs were 4 units.")
    inside = tmp_path / "inside.flag"
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.batch_job_run", str(tmp_path / "data"), str(folder)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "TIERFLOW_TEST_INSIDE_FLAG": str(inside)},
    )
    deadline = time.monotonic() + 120
    while not inside.exists():
        assert process.poll() is None and time.monotonic() < deadline, "the job never reached b_slow.txt"
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    output, _ = process.communicate(timeout=30)
    job_id = output.split()[1]
    assert "finished a_first.txt" in output

    jobs = JobStore(app.store)
    assert jobs.get(job_id).status == "running"
    before = {Path(d.path).name: d for d in jobs.documents(job_id)}
    assert before["a_first.txt"].status == "succeeded" and before["b_slow.txt"].status == "running"
    assert jobs.list_jobs()[0].status == "interrupted"  # the dead process is noticed

    report = run_job(JobRequest(resume=job_id, options=OPTIONS), app)
    assert report.ok, report.to_markdown()
    after = {d.name: d for d in report.documents}
    assert after["a_first.txt"].run_id == before["a_first.txt"].run_id
    assert after["b_slow.txt"].summary and after["c_last.txt"].summary
    killed_runs = [r for r in app.store.list_runs(limit=20) if r.status == "interrupted"]
    assert len(killed_runs) == 1  # the attempt that was killed, shown as interrupted


_JOB_SCRIPT = """
import sys
from pathlib import Path

from tests.batch_support import scripted_app
from tierflow.batch.job import JobRequest, run_job
from tierflow.batch.worker import SummaryOptions

def main():
    with scripted_app(Path(sys.argv[1])) as app:
        request = JobRequest(inputs=[sys.argv[2]], options=SummaryOptions(chunk_tokens=80))
        print("succeeded", run_job(request, app).totals.succeeded)
"""


@pytest.mark.parametrize("guarded", [False, True])
def test_a_job_started_from_a_script_without_a_main_guard_stops_at_once_and_says_why(
    tmp_path: Path, reports: Path, guarded: bool
) -> None:
    """Python starts the job's reader by importing the main script again: with no guard, the
    job would run again inside it. The job stops within seconds, naming the guard, instead
    of each document waiting out the reader's deadline; with the guard, it runs."""
    script = tmp_path / "job.py"
    ending = 'if __name__ == "__main__":\n    main()\n' if guarded else "main()\n"
    script.write_text(_JOB_SCRIPT + ending)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "data"), str(reports)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
    )
    if guarded:
        assert done.returncode == 0 and "succeeded 3" in done.stdout, done.stderr
        return
    assert done.returncode != 0 and time.monotonic() - started < 30
    # the reader's own import of the script is refused before it runs a job, and says so
    assert "run_job was called while a new helper process was starting" in done.stderr
    assert "ProcessStartError: The process that reads documents exited as it started" in done.stderr
    assert 'if __name__ == "__main__":' in done.stderr
    with scripted_app(tmp_path / "data") as app:
        (only,) = JobStore(app.store).list_jobs()  # no second job was started by the reader
        assert only.status == "interrupted"


def test_local_worker_processes_summarize_in_parallel(app: App, reports: Path) -> None:
    report = run_job(
        JobRequest(inputs=[str(reports)], options=OPTIONS, workers=2), app, make_tiers=scripted_tiers
    )
    assert report.ok and report.totals.succeeded == 3, report.to_markdown()
    for document in report.documents:  # traces written by the driver from the workers' logs
        trace = app.store.get_run(document.run_id)
        assert trace.status == "succeeded" and trace.steps[-1].node == "document_summary"


def test_a_long_job_starts_its_worker_processes_anew_every_so_many_documents(
    app: App, reports: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A llama.cpp process gains memory with every request: a long job restarts its worker
    processes between documents, and loses none of them."""
    for name in ("d.txt", "e.txt"):
        (reports / name).write_text(paragraphs(name[0] * 5, 3))
    pids = tmp_path / "pids"
    monkeypatch.setenv("TIERFLOW_TEST_PIDS", str(pids))
    request = JobRequest(inputs=[str(reports)], options=OPTIONS, workers=2, recycle_after=1)
    report = run_job(request, app, make_tiers=pid_tiers)
    assert report.ok and report.totals.succeeded == 5, report.to_markdown()
    # after each document the other one in flight finishes too: three rounds (2, 2, 1), each
    # on processes of its own (a pool starts one or two), more than 2 workers alone would be.
    # (With recycle_after=2 a round is 3 documents, and how many processes a pool starts for
    # them depends on timing.)
    assert len(set(pids.read_text().split())) >= 3


def test_recycling_waits_for_the_documents_in_flight_and_skips_the_end() -> None:
    from tierflow.batch.backends import InProcessBackend, Recycle

    events: list[str] = []

    def summarize(task: DocumentTask) -> DocumentOutcome:
        events.append(task.name)
        return DocumentOutcome(task.document_id, ok=True, run_id=None)

    tasks = [DocumentTask(n, f"doc{n}", "text") for n in range(1, 6)]
    InProcessBackend(summarize).run(
        tasks, lambda _: None, lambda _: None, Recycle(2, lambda: events.append("restart"))
    )
    assert events == ["doc1", "doc2", "restart", "doc3", "doc4", "restart", "doc5"]


def test_a_one_worker_job_keeps_its_slm_out_of_the_driver_when_it_restarts_its_models(
    tmp_path: Path, reports: Path
) -> None:
    """The driver lives as long as the job and only a process's end returns what llama.cpp
    gains: a one-worker job that would load its SLM into the driver summarizes in a worker
    process, which is restarted; where the SLM is elsewhere, or never restarted, it stays."""
    from tierflow.batch.backends import InProcessBackend, ProcessBackend
    from tierflow.batch.job import _backend

    endpoint = {"llm_base_url": "http://127.0.0.1:9/v1", "llm_model": "a-model"}  # never called
    settings = Settings(data_dir=tmp_path / "data", **endpoint)

    def backend(app: App, **fields: Any) -> object:
        return _backend(JobRequest(inputs=[str(reports)], options=OPTIONS, **fields), app, None)

    with App(settings) as app:
        chosen = backend(app)
        assert isinstance(chosen, ProcessBackend) and chosen.workers == 1
        # the user's own endpoint may compute elsewhere: its calls do not wait for the SLM's
        assert not chosen.config.llm_takes_turns
        assert isinstance(backend(app, recycle_after=0), InProcessBackend)
        assert isinstance(backend(app, shared_slm=True), InProcessBackend)  # the SLM's server restarts
    slm_server = settings.model_copy(update={"slm_base_url": "http://127.0.0.1:9/v1", "slm_model": "m"})
    with App(slm_server) as app:
        assert isinstance(backend(app), InProcessBackend)
    with App(settings, tiers=scripted_tiers(settings)) as app:  # tiers of the caller's
        assert isinstance(backend(app), InProcessBackend)


def test_a_worker_alone_on_the_embedded_server_takes_turns_with_its_slm() -> None:
    """Its LLM calls wait while a local model of its process computes, as in the driver's."""
    import threading

    from tierflow.agents.cores import LOCAL_TURNS, TakingTurns
    from tierflow.batch.worker import Worker, WorkerConfig

    settings = Settings()
    worker = Worker(WorkerConfig(settings, OPTIONS, scripted_tiers, llm_takes_turns=True))
    llm = worker.tiers.llm
    assert isinstance(llm, TakingTurns) and llm.name == "scripted-llm" and llm.tier == "llm"
    assert not isinstance(Worker(WorkerConfig(settings, OPTIONS, scripted_tiers)).tiers.llm, TakingTurns)
    answered = threading.Event()

    def call() -> None:
        llm.complete([{"role": "user", "content": "a text to summarize"}], max_tokens=20)
        answered.set()

    with LOCAL_TURNS:  # the SLM computes
        caller = threading.Thread(target=call)
        caller.start()
        assert not answered.wait(0.3)
    assert answered.wait(10)
    caller.join()


def test_a_worker_process_that_dies_has_its_document_done_again(
    app: App, reports: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (reports / "d_dies.txt").write_text("DIE once, then summarize fine.")
    monkeypatch.setenv("TIERFLOW_TEST_DIE_FLAG", str(tmp_path / "died.flag"))
    report = run_job(
        JobRequest(inputs=[str(reports)], options=OPTIONS, workers=2), app, make_tiers=dying_tiers
    )
    assert (tmp_path / "died.flag").exists()
    assert report.ok and report.totals.succeeded == 4, report.to_markdown()


def test_a_summary_that_cannot_escalate_is_kept_up_to_its_last_full_sentence(
    tmp_path: Path, reports: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    cut = ScriptedModel(["Beta sold 3 units. Then it went on and on"] * 10, finish_reason="length")
    with App(settings, tiers=Tiers(cut, ScriptedModel(tier="llm"))) as app:
        report = run_job(
            JobRequest(inputs=[str(reports / "b_short.md")], options=SummaryOptions(local_only=True)), app
        )
        (document,) = report.documents
        assert document.status == "succeeded" and document.summary == "Beta sold 3 units."
        (call,) = app.store.get_run(document.run_id).steps[-1].model_calls
        assert call.escalation_refused and "cut off" in (call.escalation_reason or "")


def test_a_summary_that_copies_its_text_escalates(tmp_path: Path) -> None:
    text = " ".join(f"Sentence {i} of the report says something about sales." for i in range(30))
    (tmp_path / "r.txt").write_text(text)
    settings = Settings(data_dir=tmp_path / "data")
    copier = ScriptedModel([text[:1200]] * 10)  # the SLM hands the text back
    writer = ScriptedModel(["The report is about sales."] * 10, tier="llm")
    with App(settings, tiers=Tiers(copier, writer)) as app:
        report = run_job(JobRequest(inputs=[str(tmp_path / "r.txt")]), app)
        (document,) = report.documents
        assert document.summary == "The report is about sales."
        slm_call = app.store.get_run(document.run_id).steps[-1].model_calls[0]
        # stopped while it was written, as soon as the copy was clear
        assert slm_call.escalated and (slm_call.escalation_reason or "").startswith("copies_source")
        assert slm_call.completion_tokens < len(text[:1200].split()) / 2
        assert document.escalations == {"copies_source": 1}


def test_a_resumed_job_keeps_its_own_options(app: App, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a_short.md").write_text("Alpha sold 3 units.")
    (folder / "b_long.txt").write_text(paragraphs("beta", 12))
    crash = CrashAfter(1)
    with pytest.raises(KeyboardInterrupt):
        run_job(JobRequest(inputs=[str(folder)], options=OPTIONS), app, on_progress=crash)
    other = SummaryOptions(chunk_tokens=5000, local_only=True)  # asked now, not what the job was
    report = run_job(JobRequest(resume=crash.job_id, options=other), app)
    long = next(d for d in report.documents if d.name == "b_long.txt")
    assert report.ok and long.chunks > 1  # still 80-token chunks


def test_hostile_file_names_fail_alone_or_are_shown_escaped(app: App, reports: Path) -> None:
    """A name that is not UTF-8 fails alone (at 4569ff0 it aborted the whole job, exit 70);
    a name with a newline or a right-to-left override is summarized and shown escaped, so it
    can neither break the report's Markdown nor reverse its text."""
    folder = reports.parent / "named"
    folder.mkdir()
    text = (reports / "b_short.md").read_text()
    (folder / os.fsdecode(b"caf\xe9.txt")).write_text(text)
    (folder / "two\nlines.txt").write_text(text)
    (folder / "invoice\u202etxt.exe.txt").write_text(text)
    (folder / "plain.txt").write_text(text)
    report = job(app, folder)
    by_status = {d.name: (d.status, d.reason) for d in report.documents}
    assert by_status["caf\\xe9.txt"][0] == "failed" and "name_not_utf8" in (
        by_status["caf\\xe9.txt"][1] or ""
    )
    assert by_status["two\\u000alines.txt"][0] == "succeeded"
    assert (
        by_status["invoice\\u202etxt.exe.txt"][0] == "succeeded" and by_status["plain.txt"][0] == "succeeded"
    )
    markdown = report.to_markdown()
    assert "\u202e" not in markdown and "two\nlines" not in markdown
    assert json.loads(report.to_json_text())  # the JSON report holds every document too


def test_links_out_of_the_folder_are_refused_unless_followed(app: App, reports: Path, tmp_path: Path) -> None:
    """At 4569ff0 `ln -s /etc/passwd DIR/x.txt` was summarized (and sent to the LLM). A link
    that stays inside the folder is read; one that leads out fails alone, and a resumed
    job does not read it either; --follow-links reads it."""
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("The vault code is 4417. " * 20)
    folder = reports.parent / "linked"
    folder.mkdir()
    (folder / "real.txt").write_text((reports / "b_short.md").read_text())
    (folder / "inside.txt").symlink_to(folder / "real.txt")
    (folder / "x.txt").symlink_to(secret)
    report = job(app, folder)
    status = {d.name: (d.status, d.reason or "") for d in report.documents}
    assert status["real.txt"][0] == status["inside.txt"][0] == "succeeded"
    assert status["x.txt"][0] == "failed" and status["x.txt"][1].startswith("link_outside:")
    assert all("4417" not in (d.summary or "") for d in report.documents)
    again = run_job(JobRequest(resume=report.job_id, options=OPTIONS), app)
    assert {d.name: d.status for d in again.documents}["x.txt"] == "failed"
    followed = job(app, folder, follow_links=True)
    assert {d.name: d.status for d in followed.documents}["x.txt"] == "succeeded"


def test_memory_add_refuses_links_out_of_the_folder(tmp_path: Path) -> None:
    from tierflow.memory.documents import DocumentMemory
    from tierflow.memory.embeddings import OfflineEmbeddings, embedding_model_dir
    from tierflow.settings import load_settings
    from tierflow.tools.readers import find_inputs

    secret = tmp_path / "secret.txt"
    secret.write_text("The vault code is 4417.")
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "notes.md").write_text("Team notes: the standup is at nine.")
    (folder / "x.md").symlink_to(secret)
    memory = DocumentMemory.open(
        None, OfflineEmbeddings(embedding_model_dir(load_settings().resolved_models_dir()))
    )
    results = {Path(r.source).name: r for r in memory.add_all(find_inputs([str(folder)]))}
    assert results["notes.md"].status == "added" and results["x.md"].status == "failed"
    assert "link_outside" in (results["x.md"].reason or "")
    stored = {Path(hit.chunk.source).name for hit in memory.search("vault code", k=20)}
    assert "x.md" not in stored and "secret.txt" not in stored  # (the in-memory store is shared)


def test_a_second_job_on_the_same_inputs_refuses_while_the_first_runs(app: App, reports: Path) -> None:
    """At b666717 two jobs on one folder at once each did all the work and paid the LLM twice."""
    from tierflow.batch.job import _open_job
    from tierflow.batch.jobs import JobBusyError

    first = job(app, reports)
    assert first.ok
    jobs = JobStore(app.store)
    request = JobRequest(inputs=[str(reports)], options=OPTIONS)
    stored = jobs.get(first.job_id)
    jobs.reopen(first.job_id)  # as if this live process were running it now
    with pytest.raises(JobBusyError, match=f"job {first.job_id} is already summarizing") as info:
        _open_job(jobs, request, str(stored.options["summary_signature"]))
    assert f"--resume {first.job_id}" in info.value.hint
    with pytest.raises(JobBusyError):
        run_job(JobRequest(resume=first.job_id, options=OPTIONS), app)
    jobs.finish(first.job_id, "interrupted")
    assert run_job(JobRequest(resume=first.job_id, options=OPTIONS), app).ok  # once it stopped


def test_a_document_summary_may_reuse_its_chunk_notes_word_for_word(tmp_path: Path) -> None:
    (tmp_path / "r.txt").write_text(paragraphs("gamma", 12))

    def first_sentence(note: str) -> str:
        return note.split(":", 1)[1].strip().split(". ")[0] + "."

    def summarize(messages: Sequence[Message]) -> str:
        text = text_of(messages)
        if text.startswith("Part 1 of"):  # the reduce step reuses each note's first sentence
            return " ".join(first_sentence(note) for note in text.split("\n\n"))
        numbers = list(dict.fromkeys(re.findall(r"paragraph (\d+)", text)))
        figures = ", ".join(dict.fromkeys(re.findall(r"figure (\d+)", text)))
        return (
            f"Part of the gamma report, its paragraphs {numbers[0]} to {numbers[-1]}, gives the figures "
            f"{figures}, each said three times over in the same plain words. Beyond that the part holds "
            "nothing else of note for a reader who wants the main points of the report, nor any "
            "names or dates or places at all, only the same words again and again."
        )

    settings = Settings(data_dir=tmp_path / "data")
    with App(settings, tiers=Tiers(ScriptedModel([summarize] * 100), ScriptedModel([], tier="llm"))) as app:
        report = run_job(
            JobRequest(inputs=[str(tmp_path / "r.txt")], options=SummaryOptions(chunk_tokens=400)), app
        )
        (document,) = report.documents
        assert document.status == "succeeded" and document.chunks > 1, report.to_markdown()
        last = app.store.get_run(document.run_id).steps[-1]
        assert last.node == "document_summary" and not last.model_calls[0].escalated
        assert document.llm_calls == 0 and document.escalations == {}
        assert document.summary is not None and document.summary.startswith("Part of the gamma report")
