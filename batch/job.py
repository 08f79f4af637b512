"""The batch summarization job's driver: find the inputs, continue or start a job, hand the
documents to a backend, commit each as it finishes, then write the cross-document report.

The driver alone writes the database. A document is committed the moment it finishes, so
after ``kill -9`` at any point the job continues (``--resume JOB_ID``, or the same command
again) without redoing a finished document. A bad file or a failed model call fails that
document only, with its reason.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from tierflow.agents.tiers import Tiers
from tierflow.batch.backends import Backend, InProcessBackend, ProcessBackend, RayBackend, Recycle
from tierflow.batch.jobs import JobBusyError, JobStore, NewDocument, signature
from tierflow.batch.report import JobReport, build_report
from tierflow.batch.worker import (
    DocumentOutcome,
    DocumentTask,
    SummaryOptions,
    WorkerConfig,
    summarize_document,
)
from tierflow.errors import ConfigError, refuse_while_a_process_starts
from tierflow.graphs.summaries import SYNTHESIS_GROUP_CHARS, summaries_text, synthesis_graph
from tierflow.memory.traces.tables import Job, JobDocument
from tierflow.memory.traces.tracelog import replay
from tierflow.records import OnProgress, Progress
from tierflow.tools.readers import (
    BoundedReader,
    DocumentError,
    Inputs,
    content_hash,
    find_inputs,
    name_is_utf8,
    printable_name,
)

if TYPE_CHECKING:
    from tierflow.app import App
    from tierflow.settings import Settings

__all__ = ["JobRequest", "run_job", "BackendName", "RECYCLE_AFTER"]

BackendName = Literal["local", "ray"]
RECYCLE_AFTER = 200
"""Documents between restarts of a job's model processes: a restart costs seconds (the models
load again), 200 documents take about an hour on 2 cores."""


@dataclass(frozen=True)
class JobRequest:
    """What to summarize and how (the ``tierflow summarize`` options)."""

    inputs: Sequence[str] = ()
    options: SummaryOptions = field(default_factory=SummaryOptions)
    workers: int = 1
    backend: BackendName = "local"
    ray_address: str | None = None
    resume: str | None = None
    synthesis: bool = True
    follow_links: bool = False
    """Read links found in the folders that lead out of them (refused by default)."""
    shared_slm: bool = False
    """Worker processes share one SLM server (started here) instead of loading a copy each."""
    recycle_after: int = RECYCLE_AFTER
    """Restart the worker processes and the model servers the job runs after this many
    documents (0: never), so that a long job's memory stays flat (``backends.Recycle``)."""


def run_job(
    request: JobRequest,
    app: App,
    *,
    on_progress: OnProgress | None = None,
    make_tiers: Callable[[Settings], Tiers] | None = None,
) -> JobReport:
    """Run (or continue) a summarization job and return its report. ``make_tiers`` builds a
    worker process's tiers (tests); by default they come from the settings.

    ``on_progress`` hears first a note with the job's id and how to resume it, then each
    document as it finishes (stage ``summarizing``, outcome ``succeeded`` or ``failed``, the
    reason as detail), then a note before the cross-document report."""
    refuse_while_a_process_starts("tierflow.run_job")
    progress = _JobProgress(on_progress or (lambda _: None))
    jobs = JobStore(app.store)
    if request.resume is not None:  # a job goes on with its own options, whatever is asked now
        stored = jobs.get(request.resume).options or {}
        request = replace(
            request, options=SummaryOptions.from_data(stored), synthesis=bool(stored.get("synthesis", True))
        )
    options = request.options
    summary_signature = signature(
        {**options.signature_data(), "slm": app.tiers.slm.name, "llm": app.tiers.llm.name}
    )
    job, paths, resumed = _open_job(jobs, request, summary_signature)
    if resumed:
        jobs.reopen(job.id)
    started = time.perf_counter()
    try:
        todo = _prepare(jobs, job.id, paths, summary_signature)
        documents = jobs.documents(job.id)
        progress.begin(job.id, len(documents), len(documents) - len(todo), resumed=resumed)
        _summarize_all(request, app, jobs, todo, progress, make_tiers)
        synthesis = Synthesis()
        if request.synthesis:
            progress.synthesis()
            synthesis = _synthesize(app, jobs, jobs.documents(job.id), options)
        documents = jobs.documents(job.id)
        all_ok = all(d.status in ("succeeded", "skipped") for d in documents) and synthesis.error is None
        jobs.finish(
            job.id,
            "succeeded" if all_ok else "failed",
            synthesis=synthesis.text,
            synthesis_run_id=synthesis.run_id,
            synthesis_key=synthesis.key,
            error=synthesis.error,
            seconds=time.perf_counter() - started,
        )
    except BaseException:
        jobs.finish(
            job.id,
            "interrupted",
            error=f"the job was interrupted; continue it with: tierflow summarize --resume {job.id}",
            seconds=time.perf_counter() - started,
        )
        raise
    return build_report(jobs, job.id, seconds=time.perf_counter() - started, store=app.store)


class _JobProgress:
    """A job's documents as ``Progress`` reports: the count of finished ones goes on."""

    def __init__(self, on_progress: OnProgress) -> None:
        self._on_progress = on_progress
        self._done = self._total = 0

    def begin(self, job_id: str, total: int, finished: int, *, resumed: bool) -> None:
        self._done, self._total = finished, total
        verb = "continuing" if resumed else "started"
        note = (
            f"job {job_id} {verb}: {total} document(s), {total - finished} to summarize "
            f"(resume with: tierflow summarize --resume {job_id})"
        )
        self._on_progress(Progress("summarizing", finished, total, note=note))

    def finished(self, document: JobDocument) -> None:
        self._done += 1
        detail = (
            f"{document.seconds:.1f} s, {document.chunks} chunk(s)"
            if document.status == "succeeded"
            else document.reason or ""
        )
        name = Path(document.path).name
        self._on_progress(Progress("summarizing", self._done, self._total, document.status, name, detail))

    def note(self, text: str) -> None:
        self._on_progress(Progress("summarizing", self._done, self._total, note=text))

    def synthesis(self) -> None:
        self._on_progress(Progress("report", note="writing the cross-document report …"))


def _open_job(jobs: JobStore, request: JobRequest, summary_signature: str) -> tuple[Job, list[Path], bool]:
    """The job to run, its input files, and whether it is one that stopped before: the one
    ``--resume`` names, an unfinished job of the same inputs and options, or a new one."""
    if request.resume is not None:
        job = jobs.get(request.resume)
        _not_running(jobs.running(job.signature) if job.status == "running" else None)
        return job, [Path(p) for p in job.inputs], True
    paths = find_inputs(request.inputs, follow_links=request.follow_links)
    job_signature = signature(
        {"inputs": [_stored(p) for p in paths], "summary": summary_signature, "synthesis": request.synthesis}
    )
    _not_running(jobs.running(job_signature))
    found = jobs.unfinished(job_signature)
    if found is not None:
        return found, paths, True
    options = {
        **request.options.signature_data(),
        "summary_signature": summary_signature,
        "synthesis": request.synthesis,
    }
    return jobs.create([_stored(p) for p in paths], options, job_signature=job_signature), paths, False


def _not_running(job: Job | None) -> None:
    """Refuse to start a job that another process is running now."""
    if job is not None:
        raise JobBusyError(
            f"job {job.id} is already summarizing these inputs with these options (process {job.owner})",
            hint=f"Wait for it to finish (tierflow jobs show {job.id}), or stop it and run "
            f"tierflow summarize --resume {job.id}.",
        )


_NEVER_READ = ("name_not_utf8:", "link_outside:")


def _refusal(paths: Sequence[Path], path: Path) -> DocumentError | None:
    return paths.refusal(path) if isinstance(paths, Inputs) else None


def _stored(path: Path) -> str:
    """How a job keeps a path: as it is, or, for a name that is not UTF-8 (which no store
    takes), printably; such a document fails alone, with the reason."""
    return str(path) if name_is_utf8(path) else printable_name(path)


def _prepare(jobs: JobStore, job_id: str, paths: Sequence[Path], summary_signature: str) -> list[JobDocument]:
    """Add the job's documents not yet in it; return those left to summarize. A document
    finished before stays finished while its file is unchanged; an unchanged file another
    job already summarized with the same options is skipped with that summary."""
    hashes = {_stored(path): _hash(path) if name_is_utf8(path) else None for path in paths}  # read once
    misnamed = {_stored(path) for path in paths if not name_is_utf8(path)}
    refused = {_stored(path): error for path in paths if (error := _refusal(paths, path)) is not None}
    known = {document.path for document in jobs.documents(job_id)}
    jobs.add_documents(
        job_id,
        [
            NewDocument(position, _stored(path), hashes[_stored(path)], _size(path))
            for position, path in enumerate(paths)
            if _stored(path) not in known
        ],
    )
    todo = []
    for document in jobs.documents(job_id):
        document_id = document.id
        assert document_id is not None
        if document.path in misnamed:
            jobs.update_document(
                document_id,
                status="failed",
                reason=f"name_not_utf8: {document.path} has a name that is not valid UTF-8 "
                "(rename it, e.g. with convmv -f latin1 -t utf-8)",
            )
            continue
        if document.path in refused:
            error = refused[document.path]
            jobs.update_document(document_id, status="failed", reason=f"{error.reason}: {error.message}")
            continue
        if document.status == "failed" and (document.reason or "").startswith(_NEVER_READ):
            continue  # refused before it was read: a resumed job does not read it either
        current = hashes[document.path]
        unchanged = current is not None and current == document.content_hash
        if document.status in ("succeeded", "skipped") and unchanged:
            continue
        if current != document.content_hash:
            document = jobs.update_document(
                document_id, content_hash=current, size=_size(Path(document.path))
            )
        earlier = current and jobs.earlier_summary(current, summary_signature, not_job=job_id)
        if earlier:
            jobs.update_document(
                document_id,
                status="skipped",
                summary=earlier.summary,
                reason=f"unchanged since job {earlier.job_id}",
                reused_from=earlier.job_id,
                run_id=earlier.run_id,
                chunks=earlier.chunks,
            )
            continue
        todo.append(document)
    return todo


def _hash(path: Path) -> str | None:
    try:
        return content_hash(path)
    except (OSError, DocumentError):  # reported when the document is read
        return None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _summarize_all(
    request: JobRequest,
    app: App,
    jobs: JobStore,
    todo: Sequence[JobDocument],
    progress: _JobProgress,
    make_tiers: Callable[[Settings], Tiers] | None,
) -> None:
    def tasks(reader: BoundedReader) -> Iterator[DocumentTask]:
        """Each document read when a worker is free for it, within the reader's deadline (a
        bad one fails alone)."""
        for document in todo:
            assert document.id is not None
            try:
                read = reader.read(Path(document.path))
            except DocumentError as exc:
                progress.finished(
                    jobs.update_document(
                        document.id,
                        status="failed",
                        reason=f"{exc.reason}: {exc.message}",
                        attempts=document.attempts + 1,
                    )
                )
                continue
            if read.encoding not in (None, "utf-8"):  # what it was read in, for the report
                jobs.update_document(document.id, encoding=read.encoding)
            yield DocumentTask(document.id, Path(document.path).name, read.text)

    if not todo:
        return
    backend = _backend(request, app, make_tiers)

    def on_start(task: DocumentTask) -> None:
        jobs.update_document(task.document_id, status="running")

    def on_done(outcome: DocumentOutcome) -> None:
        replay(app.store, outcome.trace)
        progress.finished(
            jobs.update_document(
                outcome.document_id,
                status="succeeded" if outcome.ok else "failed",
                summary=outcome.summary,
                reason=outcome.reason,
                run_id=outcome.run_id,
                chunks=outcome.chunks,
                slm_calls=outcome.slm_calls,
                llm_calls=outcome.llm_calls,
                llm_tokens=outcome.llm_tokens,
                seconds=outcome.seconds,
                slm_seconds=outcome.slm_seconds,
                llm_seconds=outcome.llm_seconds,
                escalations=outcome.escalations,
            )
        )

    recycle = None
    if request.recycle_after > 0:
        recycle = Recycle(
            request.recycle_after, partial(_restart_servers, app, progress, request.recycle_after)
        )
    try:
        with BoundedReader() as reader:
            backend.run(tasks(reader), on_start, on_done, recycle)
    finally:
        backend.close()


def _restart_servers(app: App, progress: _JobProgress, after: int) -> None:
    """Restart the model servers this job runs (``backends.Recycle``), each on its own
    address, so that the worker processes reach them as before."""
    for server in app.running_servers():
        progress.note(f"restarting the {server.role} server after {after} documents (its memory is returned)")
        server.stop()
        server.start()


def _backend(request: JobRequest, app: App, make_tiers: Callable[[Settings], Tiers] | None) -> Backend:
    if request.backend == "local" and request.workers <= 1 and not _slm_recycled(request, app, make_tiers):
        options = request.options

        def summarize(task: DocumentTask) -> DocumentOutcome:
            return summarize_document(task, options, tiers=app.tiers, settings=app.settings, store=app.store)

        return InProcessBackend(summarize)
    config = _worker_config(request, app, make_tiers)
    if request.backend == "ray":
        return RayBackend(config, request.workers, address=request.ray_address)
    return ProcessBackend(config, request.workers)


def _slm_recycled(request: JobRequest, app: App, make_tiers: Callable[[Settings], Tiers] | None) -> bool:
    """Whether a one-worker job runs its documents in a worker process of its own: when it
    restarts its model processes (``recycle_after``) and would load the SLM into this one.
    Only a process's end returns what llama.cpp gains with every call, and the driver's
    process lives as long as the job."""
    return (
        request.recycle_after > 0
        and make_tiers is None
        and app.builds_tiers
        and not request.shared_slm
        and not app.settings.slm_base_url
    )


def _all_local(request: JobRequest) -> bool:
    """Whether every step of the job stays on the SLM (nothing escalates, no LLM is called)."""
    policy = request.options.policy
    return request.options.local_only or (
        policy.default == "slm" and all(tier == "slm" for tier in policy.nodes.values())
    )


def _worker_config(
    request: JobRequest, app: App, make_tiers: Callable[[Settings], Tiers] | None
) -> WorkerConfig:
    """What a worker process builds its tiers from: its share of the cores, the driver's
    embedded LLM server as its endpoint (started here, once, for all workers), and with
    ``shared_slm`` the one SLM server they share. One worker alone on the embedded server
    takes turns with it, as the driver's process would."""
    settings = app.settings
    update: dict[str, object] = {}
    all_local = _all_local(request)
    if request.shared_slm and make_tiers is None and not settings.slm_base_url:
        if request.backend == "ray" and (request.ray_address or os.environ.get("RAY_ADDRESS")):
            raise ConfigError(
                "--shared-slm serves the SLM on this machine's loopback, which a Ray cluster's "
                "other machines cannot reach",
                hint="Run `tierflow serve-slm --host ADDRESS --remote` on a machine the cluster "
                "reaches and set TIERFLOW_SLM=llamacpp:NAME with TIERFLOW_SLM_BASE_URL (and "
                "TIERFLOW_SLM_API_KEY) instead.",
            )
        settings = app.shared_slm_settings(signals=not all_local)
    elif settings.slm_threads is None:
        update["slm_threads"] = max(1, (os.cpu_count() or 2) // max(1, request.workers))
    if settings.llm_base_url is None and not all_local and make_tiers is None:
        from tierflow.agents.server import EmbeddedLLM
        from tierflow.agents.tiers import resolved

        llm = resolved(app.tiers.llm)
        if isinstance(llm, EmbeddedLLM):
            llm.load()
            update.update(
                llm_base_url=llm.server.base_url, llm_model=llm.server.alias, llm_response_format="llamacpp"
            )
    takes_turns = "llm_base_url" in update and request.workers <= 1 and settings.local_models_take_turns
    return WorkerConfig(settings.model_copy(update=update), request.options, make_tiers, takes_turns)


@dataclass(frozen=True)
class Synthesis:
    """The cross-document report, its run, the key of the summaries it read, or why none."""

    text: str | None = None
    run_id: str | None = None
    key: str | None = None
    error: str | None = None


def _synthesize(
    app: App, jobs: JobStore, documents: Sequence[JobDocument], options: SummaryOptions
) -> Synthesis:
    """The cross-document report; one written before from the same summaries is reused."""
    summaries = {
        Path(d.path).name: d.summary for d in documents if d.status in ("succeeded", "skipped") and d.summary
    }
    if len(summaries) < 2:
        return Synthesis()  # nothing to compare
    key = signature({"summaries": summaries, "options": options.signature_data()})
    earlier = jobs.earlier_synthesis(key)
    if earlier is not None:
        return Synthesis(earlier.synthesis, earlier.synthesis_run_id, key)
    result = app.run_graph(
        synthesis_graph(),
        {"groups": _groups(summaries)},
        policy=options.policy,
        local_only=options.local_only,
        name="summarize_synthesis",
        task=f"cross-document report of {len(summaries)} documents",
    )
    if not result.ok:
        return Synthesis(run_id=result.run_id, error=f"the cross-document report failed: {result.error}")
    return Synthesis(str(result.state.get("report") or ""), result.run_id, key)


def _groups(summaries: dict[str, str]) -> list[str]:
    """The summaries in groups of at most ``SYNTHESIS_GROUP_CHARS`` (one report call each)."""
    groups: list[dict[str, str]] = [{}]
    for name, summary in summaries.items():
        if groups[-1] and len(summaries_text({**groups[-1], name: summary})) > SYNTHESIS_GROUP_CHARS:
            groups.append({})
        groups[-1][name] = summary
    return [summaries_text(group) for group in groups]
