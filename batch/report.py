"""A job's report, read back from the database (so a finished, resumed or half-done job
reports the same way): per document its summary, status, reason, tiers and tokens; then
the cross-document report; then the totals. Markdown, or JSON with ``--json``."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tierflow.batch.jobs import JobStore
from tierflow.memory.traces import TraceStore
from tierflow.paths import printable_name
from tierflow.records import slm_share

__all__ = ["DocumentReport", "Totals", "JobReport", "build_report", "markdown_text", "model_text"]

_MARKDOWN = re.compile(r"([\\`*\[\]<>])")  # what starts emphasis, code, links or HTML


_HIDDEN = re.compile(r"[\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff\x00-\x08\x0b-\x1f\x7f]")


def model_text(text: str) -> str:
    """A model's Markdown as the report keeps it: its lines and markup as they are, but
    control, zero-width and bidirectional characters (which could hide or reverse text)
    escaped."""
    return _HIDDEN.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def markdown_text(text: str) -> str:
    """Text from a file name or a reason as Markdown shows it literally: control and
    bidirectional characters escaped, Markdown's markup characters backslashed."""
    return _MARKDOWN.sub(r"\\\1", printable_name(text))


@dataclass(frozen=True)
class DocumentReport:
    position: int
    path: str
    name: str
    status: str
    summary: str | None
    reason: str | None
    chunks: int
    slm_calls: int
    llm_calls: int
    slm_share: float | None
    llm_tokens: int
    seconds: float
    run_id: str | None
    reused_from: str | None
    slm_seconds: float = 0.0  # the SLM's calls
    llm_seconds: float = 0.0  # the LLM's calls
    escalations: dict[str, int] = field(default_factory=dict)  # SLM outputs sent to the LLM, by reason
    encoding: str | None = None  # the text's encoding, when it was not UTF-8


@dataclass(frozen=True)
class Totals:
    documents: int
    succeeded: int
    failed: int
    skipped: int
    pending: int
    slm_calls: int
    llm_calls: int
    slm_share: float | None
    llm_tokens: int
    seconds: float  # the job's wall time, over every invocation (a resumed job's too)
    document_seconds: float  # the documents' summarizing time, over every attempt that finished
    this_run_seconds: float = 0.0  # this invocation's wall time


@dataclass(frozen=True)
class JobReport:
    job_id: str
    status: str
    documents: list[DocumentReport]
    synthesis: str | None
    synthesis_run_id: str | None
    error: str | None
    totals: Totals
    synthesis_requested: bool = True

    @property
    def ok(self) -> bool:
        """Every document summarized (or unchanged since an earlier job)."""
        return self.status == "succeeded"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def to_json_text(self) -> str:
        return json.dumps(self.to_json(), ensure_ascii=False, indent=2)

    def to_markdown(self) -> str:
        t = self.totals
        lines = [
            f"# Summary report (job {self.job_id})",
            "",
            f"{t.documents} documents: {t.succeeded} succeeded, {t.failed} failed, {t.skipped} skipped"
            + (f", {t.pending} not done" if t.pending else "")
            + f". Status: {self.status}.",
            "",
            "## Documents",
        ]
        for d in self.documents:
            lines += ["", f"### {d.position + 1}. {markdown_text(d.name)} ({d.status})", ""]
            if d.summary:
                lines += [model_text(d.summary.strip()), ""]
            if d.reason:
                label = "Why it failed" if d.status == "failed" else "Note"
                lines += [f"**{label}:** {markdown_text(d.reason)}", ""]
            lines.append(f"*{_costs(d)}*")
        lines += ["", "## Cross-document report", ""]
        if self.synthesis:
            lines.append(model_text(self.synthesis.strip()))
        elif self.error:
            lines.append(f"**Not written:** {self.error}")
        elif not self.synthesis_requested:
            lines.append("*(not requested)*")
        else:
            lines.append("*(none: fewer than two documents were summarized)*")
        lines += [
            "",
            "## Totals",
            "",
            "| documents | succeeded | failed | skipped | SLM share | LLM tokens | time |",
            "|---|---|---|---|---|---|---|",
            f"| {t.documents} | {t.succeeded} | {t.failed} | {t.skipped} | {_share(t.slm_share)} | "
            f"{t.llm_tokens:,} | {_duration(t.seconds)}{_this_run(t)} |",
            "",
        ]
        return "\n".join(lines)


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def _this_run(t: Totals) -> str:
    """A resumed job's time in this run, beside its time in all."""
    return f" ({_duration(t.this_run_seconds)} this run)" if t.seconds - t.this_run_seconds > 0.5 else ""


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{seconds:.1f} s"


def _costs(d: DocumentReport) -> str:
    if d.status == "skipped":
        return f"unchanged: summary of job {d.reused_from}"
    if d.run_id is None:
        return "no model call"
    escalated = ", ".join(f"{reason} ×{count}" for reason, count in d.escalations.items())
    return (
        f"{d.chunks} chunk(s) · {d.slm_calls} SLM / {d.llm_calls} LLM calls (SLM share "
        f"{_share(d.slm_share)}) · {d.llm_tokens:,} LLM tokens · {d.seconds:.1f} s "
        f"(SLM {d.slm_seconds:.1f} s, LLM {d.llm_seconds:.1f} s)"
        + (f" · escalated: {escalated}" if escalated else "")
        + (f" · read as {d.encoding}" if d.encoding else "")
        + f" · run {d.run_id}"
    )


def build_report(jobs: JobStore, job_id: str, *, seconds: float, store: TraceStore) -> JobReport:
    job = jobs.get(job_id)
    rows = jobs.documents(job.id)
    documents = [
        DocumentReport(
            position=row.position,
            path=row.path,
            name=printable_name(Path(row.path).name),
            status=row.status,
            summary=row.summary,
            reason=row.reason,
            chunks=row.chunks,
            slm_calls=row.slm_calls,
            llm_calls=row.llm_calls,
            slm_share=slm_share(row.slm_calls, row.slm_calls + row.llm_calls),
            llm_tokens=row.llm_tokens,
            seconds=row.seconds,
            run_id=row.run_id,
            reused_from=row.reused_from,
            slm_seconds=row.slm_seconds or 0.0,
            llm_seconds=row.llm_seconds or 0.0,
            escalations=dict(row.escalations or {}),
            encoding=row.encoding,
        )
        for row in rows
    ]
    counted = [d for d in documents if d.status != "skipped"]
    slm = sum(d.slm_calls for d in counted)
    llm = sum(d.llm_calls for d in counted)
    tokens = sum(d.llm_tokens for d in counted)
    if job.synthesis_run_id:
        stats = store.get_run(job.synthesis_run_id).stats
        slm, llm = slm + stats.slm_calls, llm + stats.llm_calls
        tokens += stats.llm_prompt_tokens + stats.llm_completion_tokens
    status_count = {
        status: sum(d.status == status for d in documents) for status in ("succeeded", "failed", "skipped")
    }
    totals = Totals(
        documents=len(documents),
        succeeded=status_count["succeeded"],
        failed=status_count["failed"],
        skipped=status_count["skipped"],
        pending=len(documents) - sum(status_count.values()),
        slm_calls=slm,
        llm_calls=llm,
        slm_share=slm_share(slm, slm + llm),
        llm_tokens=tokens,
        seconds=round(float((job.options or {}).get("wall_seconds", seconds)), 3),
        document_seconds=round(sum(d.seconds for d in counted), 3),
        this_run_seconds=round(seconds, 3),
    )
    requested = bool((job.options or {}).get("synthesis", True))
    return JobReport(
        job.id, job.status, documents, job.synthesis, job.synthesis_run_id, job.error, totals, requested
    )
