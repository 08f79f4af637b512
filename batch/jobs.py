"""A batch job's state in the trace database: the job, and one row per input document,
committed as each document finishes so that a killed job loses nothing finished.

A job is found again by its id (``--resume JOB_ID``) or by its signature, the hash of its
inputs and options (running the same command again). A document whose file is unchanged
since another job summarized it with the same options (same content hash and summary
signature) is ``skipped`` and reuses that summary.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlmodel import Session, col, select
from tierflow.errors import TierflowError
from tierflow.memory.traces import TraceStore
from tierflow.memory.traces.owner import is_gone, this_process
from tierflow.memory.traces.tables import Job, JobDocument, utcnow

__all__ = [
    "DocumentStatus",
    "JobStatus",
    "JobNotFoundError",
    "JobBusyError",
    "NewDocument",
    "JobStore",
    "signature",
]

DocumentStatus = Literal["pending", "running", "succeeded", "failed", "skipped"]
JobStatus = Literal["running", "succeeded", "failed", "interrupted"]
FINISHED: tuple[str, ...] = ("succeeded", "failed", "skipped")


class JobBusyError(TierflowError):
    """The same job is running in another process: running it twice would pay twice."""


class JobNotFoundError(TierflowError):
    """An id that names no job (or more than one): a usage error."""

    exit_code = 2


def signature(value: Any) -> str:
    """A short, stable hash of a JSON-able value."""
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class NewDocument:
    position: int
    path: str
    content_hash: str | None
    size: int


class JobStore:
    """Jobs and their documents, in the same database as the runs' traces."""

    def __init__(self, store: TraceStore) -> None:
        self.store = store
        self.engine = store.engine

    # Jobs ---------------------------------------------------------------------------------
    def create(self, inputs: Sequence[str], options: dict[str, Any], *, job_signature: str) -> Job:
        job = Job(
            id=uuid.uuid4().hex[:12],
            inputs=list(inputs),
            options=self.store.scrub(options),
            signature=job_signature,
            owner=this_process(),
        )
        with Session(self.engine, expire_on_commit=False) as session:
            session.add(job)
            session.commit()
        return job

    def get(self, job_id: str) -> Job:
        """The job with this id or unique id prefix."""
        with Session(self.engine, expire_on_commit=False) as session:
            matches = session.exec(select(Job).where(col(Job.id).startswith(job_id)).limit(2)).all()
        if len(matches) != 1:
            problem = "no job" if not matches else "more than one job"
            raise JobNotFoundError(
                f"{problem} matches {job_id!r}", hint="`tierflow jobs list` shows the jobs and their ids."
            )
        return matches[0]

    def running(self, job_signature: str) -> Job | None:
        """A job with this signature that another live process is running now."""
        self.reconcile()  # jobs of processes that are gone are interrupted, not running
        with Session(self.engine, expire_on_commit=False) as session:
            return session.exec(
                select(Job).where(Job.signature == job_signature, Job.status == "running").limit(1)
            ).first()

    def unfinished(self, job_signature: str) -> Job | None:
        """The latest job with this signature that did not finish, to be continued."""
        self.reconcile()
        with Session(self.engine, expire_on_commit=False) as session:
            return session.exec(
                select(Job)
                .where(Job.signature == job_signature, Job.status == "interrupted")
                .order_by(col(Job.created_at).desc())
                .limit(1)
            ).first()

    def reopen(self, job_id: str) -> None:
        with Session(self.engine) as session:
            job = session.get(Job, job_id)
            assert job is not None
            job.status, job.error, job.finished_at, job.owner = "running", None, None, this_process()
            session.add(job)
            session.commit()

    def finish(
        self,
        job_id: str,
        status: JobStatus,
        *,
        synthesis: str | None = None,
        synthesis_run_id: str | None = None,
        synthesis_key: str | None = None,
        error: str | None = None,
        seconds: float = 0.0,
    ) -> None:
        """Close this invocation of the job; ``seconds``, its wall time, adds to the job's
        (``options["wall_seconds"]``: every invocation, the resumed ones too)."""
        with Session(self.engine) as session:
            job = session.get(Job, job_id)
            assert job is not None
            job.status, job.finished_at = status, utcnow()
            wall = float((job.options or {}).get("wall_seconds", 0.0)) + seconds
            job.options = {**(job.options or {}), "wall_seconds": round(wall, 3)}
            if synthesis_key is not None:
                job.options = {**(job.options or {}), "synthesis_key": synthesis_key}
            job.synthesis = self.store.scrub(synthesis)
            job.synthesis_run_id = synthesis_run_id
            job.error = self.store.scrub(error)
            session.add(job)
            for document in session.exec(
                select(JobDocument).where(JobDocument.job_id == job_id, JobDocument.status == "running")
            ):
                document.status = "pending"  # stopped mid-way: to be done again
                session.add(document)
            session.commit()

    def reconcile(self) -> int:
        """Jobs left ``running`` by a process of this machine that is gone become
        ``interrupted`` (their unfinished documents ``pending``); returns how many."""
        with Session(self.engine) as session:
            running = session.exec(select(Job).where(Job.status == "running")).all()
            gone = [job.id for job in running if is_gone(job.owner)]
        for job_id in gone:
            self.finish(
                job_id,
                "interrupted",
                error="the process running it stopped before it finished (killed or crashed); "
                f"continue it with: tierflow summarize --resume {job_id}",
            )
        return len(gone)

    def earlier_synthesis(self, synthesis_key: str) -> Job | None:
        """A job whose cross-document report was written from the same summaries."""
        with Session(self.engine, expire_on_commit=False) as session:
            jobs = session.exec(
                select(Job)
                .where(col(Job.synthesis).is_not(None))
                .order_by(col(Job.created_at).desc())
                .limit(200)
            ).all()
        return next((job for job in jobs if (job.options or {}).get("synthesis_key") == synthesis_key), None)

    def list_jobs(self, *, limit: int = 50) -> list[Job]:
        self.reconcile()
        with Session(self.engine, expire_on_commit=False) as session:
            return list(session.exec(select(Job).order_by(col(Job.created_at).desc()).limit(limit)).all())

    # Documents ----------------------------------------------------------------------------
    def documents(self, job_id: str) -> list[JobDocument]:
        with Session(self.engine, expire_on_commit=False) as session:
            return list(
                session.exec(
                    select(JobDocument)
                    .where(JobDocument.job_id == job_id)
                    .order_by(col(JobDocument.position), col(JobDocument.id))
                ).all()
            )

    def add_documents(self, job_id: str, documents: Sequence[NewDocument]) -> None:
        with Session(self.engine) as session:
            for new in documents:
                session.add(
                    JobDocument(
                        job_id=job_id,
                        position=new.position,
                        path=new.path,
                        content_hash=new.content_hash,
                        size=new.size,
                    )
                )
            session.commit()

    def update_document(self, document_id: int, **fields: Any) -> JobDocument:
        """Change a document's row and commit at once."""
        with Session(self.engine, expire_on_commit=False) as session:
            document = session.get(JobDocument, document_id)
            assert document is not None
            for name, value in fields.items():
                setattr(document, name, self.store.scrub(value) if isinstance(value, str) else value)
            if fields.get("status") in FINISHED:
                document.finished_at = utcnow()
            session.add(document)
            session.commit()
            return document

    def earlier_summary(
        self, content_hash: str, summary_signature: str, *, not_job: str
    ) -> JobDocument | None:
        """A summary another job made of the same content with the same summary options."""
        with Session(self.engine, expire_on_commit=False) as session:
            rows = session.exec(
                select(JobDocument, Job)
                .join(Job, col(Job.id) == col(JobDocument.job_id))
                .where(
                    JobDocument.content_hash == content_hash,
                    JobDocument.status == "succeeded",
                    JobDocument.job_id != not_job,
                )
                .order_by(col(JobDocument.finished_at).desc())
            ).all()
        for document, job in rows:
            if (job.options or {}).get("summary_signature") == summary_signature:
                return document
        return None
