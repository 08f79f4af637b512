"""``tierflow summarize`` (batch report summarization) and ``tierflow jobs``."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from tierflow.cli.support import (
    JsonOption,
    PolicyOption,
    emit_json,
    err,
    out,
    parse_tiers,
    settings,
)
from tierflow.errors import TaskInputError, TierflowError
from tierflow.optional import require

if TYPE_CHECKING:
    from tierflow.batch.job import JobRequest
    from tierflow.batch.report import JobReport

__all__ = ["summarize", "jobs_app"]

jobs_app = typer.Typer(no_args_is_help=True, help="Batch summarization jobs.")


def summarize(
    inputs: Annotated[
        list[str] | None,
        typer.Argument(help="Report files, folders (read recursively) or globs.", show_default=False),
    ] = None,
    out_path: Annotated[
        Path | None, typer.Option("--out", help="Write the report here (default: print it).")
    ] = None,
    as_json: JsonOption = False,
    workers: Annotated[int, typer.Option(min=1, help="Documents summarized at once (one SLM each).")] = 1,
    backend: Annotated[str, typer.Option(help="local | ray")] = "local",
    ray_address: Annotated[
        str | None, typer.Option(help="An existing Ray cluster (default: RAY_ADDRESS, else a local one).")
    ] = None,
    resume: Annotated[
        str | None, typer.Option(help="Continue this job (any unique prefix of its id).")
    ] = None,
    policy: PolicyOption = "settings",
    tier: Annotated[list[str], typer.Option(help="Override one node: NODE=slm|llm|tiered.")] = [],  # noqa: B006
    local_only: Annotated[bool, typer.Option(help="Keep every document on this machine (SLM only).")] = False,
    chunk_tokens: Annotated[int, typer.Option(min=64, help="Tokens of text per chunk, at most.")] = 1500,
    max_sentences: Annotated[int, typer.Option(min=1, help="Sentences per document summary.")] = 6,
    synthesis: Annotated[bool, typer.Option(help="Write the cross-document report.")] = True,
    follow_links: Annotated[
        bool, typer.Option("--follow-links", help="Read links in the folders that lead out of them.")
    ] = False,
    shared_slm: Annotated[
        bool,
        typer.Option(
            "--shared-slm",
            help="Workers share one SLM server on this machine instead of loading a copy each "
            "(or set TIERFLOW_SLM to a server of your own).",
        ),
    ] = False,
    recycle_after: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Restart the worker processes and the model servers the job runs after this "
            "many documents (default 200), so that a long job's memory stays flat; 0: never.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Summarize folders of reports (.txt .md .html .pdf .docx): each document on the SLM by
    map-reduce, then a cross-document report on the LLM. Resumable: each finished document
    is stored at once, and the same command (or --resume JOB_ID) continues a stopped job.
    Exit status 0 only when every document was summarized."""
    require("pypdf", "docx", "bs4", purpose="batch summarization")
    from tierflow.batch.job import JobRequest
    from tierflow.batch.worker import SummaryOptions

    if backend not in ("local", "ray"):
        raise TaskInputError(f"unknown backend {backend!r}", hint="Use --backend local or --backend ray.")
    if not inputs and resume is None:
        raise TaskInputError("nothing to summarize", hint="Give files, folders or globs, or --resume JOB_ID.")
    request = JobRequest(
        inputs=inputs or [],
        options=SummaryOptions(
            policy=parse_tiers(policy, tier),
            local_only=local_only,
            chunk_tokens=chunk_tokens,
            max_sentences=max_sentences,
        ),
        workers=workers,
        backend="ray" if backend == "ray" else "local",
        ray_address=ray_address,
        resume=resume,
        synthesis=synthesis,
        follow_links=follow_links,
        shared_slm=shared_slm,
        **({} if recycle_after is None else {"recycle_after": recycle_after}),
    )
    report = _run_job(request)  # inputs that match nothing: a usage error (TaskInputError)
    _print_report(report, out_path, as_json)
    raise typer.Exit(0 if report.ok else 1)


def _run_job(request: JobRequest) -> JobReport:
    """The job, with its progress on stderr."""
    from tierflow.app import App
    from tierflow.batch.job import run_job
    from tierflow.cli.render import ProgressDisplay

    # a damaged PDF is reported in the document's reason; pypdf's own log lines would only
    # break the progress display
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    with ProgressDisplay(err) as display, App(settings(), on_progress=display) as tierflow_app:
        return run_job(request, tierflow_app, on_progress=display)


def _print_report(report: JobReport, out_path: Path | None, as_json: bool) -> None:
    """The report to ``--out`` or stdout (Markdown, or JSON with --json), then the totals on stderr."""
    text = report.to_json_text() if as_json else report.to_markdown()
    if out_path is not None:
        _write_atomically(out_path, text)
        err.print(f"report written to {escape(str(out_path))}")
    elif as_json:
        emit_json(report.to_json())
    else:
        out.print(text, markup=False, highlight=False)
    t = report.totals
    share = "n/a" if t.slm_share is None else f"{t.slm_share:.0%}"
    err.print(
        f"{t.succeeded} succeeded, {t.failed} failed, {t.skipped} skipped of {t.documents}"
        f" · SLM share {share} · {t.llm_tokens:,} LLM tokens · job {report.job_id}",
        highlight=False,
    )


def _write_atomically(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all (a crash never leaves half a report)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            "w", dir=path.parent, delete=False, encoding="utf-8", suffix=".tmp"
        ) as handle:
            handle.write(text)
        os.replace(handle.name, path)
    except OSError as exc:
        raise TierflowError(
            f"cannot write the report to {path}: {exc.strerror or exc}", hint="Choose another --out path."
        ) from None


@jobs_app.command("list")
def jobs_list(as_json: JsonOption = False) -> None:
    """The batch jobs, newest first."""
    from rich.table import Table
    from tierflow.app import App
    from tierflow.batch.jobs import JobStore

    with App(settings()) as tierflow_app:
        jobs = JobStore(tierflow_app.store)
        rows = [(job, jobs.documents(job.id)) for job in jobs.list_jobs()]
    if as_json:
        emit_json(
            [
                {
                    "id": job.id,
                    "status": job.status,
                    "created_at": job.created_at.isoformat(),
                    "documents": len(documents),
                    "succeeded": sum(d.status == "succeeded" for d in documents),
                    "failed": sum(d.status == "failed" for d in documents),
                    "skipped": sum(d.status == "skipped" for d in documents),
                }
                for job, documents in rows
            ]
        )
        return
    if not rows:
        err.print("no batch jobs yet: start one with tierflow summarize REPORTS/ --out report.md")
        return
    table = Table("job", "status", "created", "documents", "succeeded", "failed", "skipped")
    for job, documents in rows:
        count = {s: sum(d.status == s for d in documents) for s in ("succeeded", "failed", "skipped")}
        table.add_row(
            job.id,
            job.status,
            f"{job.created_at:%Y-%m-%d %H:%M}",
            str(len(documents)),
            str(count["succeeded"]),
            str(count["failed"]),
            str(count["skipped"]),
        )
    out.print(table)


@jobs_app.command("show")
def jobs_show(
    job_id: Annotated[str, typer.Argument(help="The job (any unique prefix of its id).")],
    as_json: JsonOption = False,
) -> None:
    """A job's report, as far as it got."""
    from tierflow.app import App
    from tierflow.batch.jobs import JobStore
    from tierflow.batch.report import build_report

    with App(settings()) as tierflow_app:
        jobs = JobStore(tierflow_app.store)
        jobs.reconcile()
        report = build_report(jobs, job_id, seconds=0.0, store=tierflow_app.store)
    if as_json:
        emit_json(report.to_json())
    else:
        out.print(report.to_markdown(), markup=False, highlight=False)
