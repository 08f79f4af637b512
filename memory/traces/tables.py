"""The trace schema: runs, their steps, and each step's model and tool calls; batch jobs
and their documents."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, Text
from sqlmodel import Field, SQLModel

__all__ = ["Run", "Step", "ModelCall", "ToolCall", "Label", "Job", "JobDocument", "utcnow"]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Run(SQLModel, table=True):
    __tablename__ = "runs"

    id: str = Field(primary_key=True)
    task: str = Field(sa_column=Column(Text, nullable=False))
    status: str = Field(default="running", index=True)  # running|succeeded|failed|interrupted|budget_exceeded
    answer: str | None = Field(default=None, sa_column=Column(Text))
    error: str | None = Field(default=None, sa_column=Column(Text))
    graph: str = "task"
    policy: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    slm_model: str = ""
    llm_model: str = ""
    settings: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    parent_run_id: str | None = Field(default=None, index=True)
    created_at: datetime = Field(default_factory=utcnow, index=True)
    finished_at: datetime | None = None
    owner: str | None = None  # host:pid:start of the process running it (memory/traces/owner.py)


class Step(SQLModel, table=True):
    __tablename__ = "steps"

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="runs.id", index=True)
    seq: int
    node: str
    status: str = "running"  # running|succeeded|failed
    summary: str | None = Field(default=None, sa_column=Column(Text))
    error: str | None = Field(default=None, sa_column=Column(Text))
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
    # the document chunks a step retrieved or cited (tierflow.graphs.citing)
    evidence: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))


class ModelCall(SQLModel, table=True):
    __tablename__ = "model_calls"

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="runs.id", index=True)
    step_id: int | None = Field(default=None, foreign_key="steps.id", index=True)
    node: str
    tier: str
    model: str
    messages: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON))
    output_schema: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    raw_output: str | None = Field(default=None, sa_column=Column(Text))
    parsed: Any | None = Field(default=None, sa_column=Column(JSON))
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    finish_reason: str | None = None
    confidence: float | None = None
    max_tokens: int | None = None
    escalated: bool = False
    escalation_reason: str | None = Field(default=None, sa_column=Column(Text))
    escalation_refused: str | None = None
    redacted: list[str] | None = Field(default=None, sa_column=Column(JSON))
    signals: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    error: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(default_factory=utcnow)


class ToolCall(SQLModel, table=True):
    __tablename__ = "tool_calls"

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="runs.id", index=True)
    step_id: int | None = Field(default=None, foreign_key="steps.id", index=True)
    tool: str
    arguments: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    result: str | None = Field(default=None, sa_column=Column(Text))
    error: str | None = Field(default=None, sa_column=Column(Text))
    latency_ms: float = 0.0
    created_at: datetime = Field(default_factory=utcnow)


class Label(SQLModel, table=True):
    """Whether an SLM output was right: from its LLM shadow (``shadow``), a gold value
    (``gold``), or both tiers run side by side (``calibrate``). The scorers are fitted on these."""

    __tablename__ = "labels"

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="runs.id", index=True)
    model_call_id: int = Field(foreign_key="model_calls.id", index=True)
    graph: str = Field(index=True)
    node: str = Field(index=True)
    kind: str
    slm_model: str
    llm_model: str
    slm_right: bool
    llm_right: bool = True
    source: str = "shadow"
    features: dict[str, float] = Field(default_factory=dict, sa_column=Column(JSON))
    detail: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(default_factory=utcnow, index=True)


class Job(SQLModel, table=True):
    """A batch summarization job: its inputs and options, and how it ended."""

    __tablename__ = "jobs"

    id: str = Field(primary_key=True)
    kind: str = "summarize"
    status: str = Field(default="running", index=True)  # running|succeeded|failed|interrupted
    inputs: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    options: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    signature: str = Field(default="", index=True)  # the inputs and options, hashed
    synthesis: str | None = Field(default=None, sa_column=Column(Text))
    synthesis_run_id: str | None = None
    error: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(default_factory=utcnow, index=True)
    finished_at: datetime | None = None
    owner: str | None = None


class JobDocument(SQLModel, table=True):
    """One input document of a job, committed as soon as it finishes."""

    __tablename__ = "job_documents"

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(foreign_key="jobs.id", index=True)
    position: int = 0
    path: str
    content_hash: str | None = Field(default=None, index=True)
    size: int = 0
    status: str = Field(default="pending", index=True)  # pending|running|succeeded|failed|skipped
    reason: str | None = Field(default=None, sa_column=Column(Text))
    summary: str | None = Field(default=None, sa_column=Column(Text))
    run_id: str | None = None
    chunks: int = 0
    slm_calls: int = 0
    llm_calls: int = 0
    llm_tokens: int = 0
    seconds: float = 0.0
    slm_seconds: float = 0.0  # of seconds: the SLM's calls
    llm_seconds: float = 0.0  # of seconds: the LLM's calls
    escalations: dict[str, int] | None = Field(default=None, sa_column=Column(JSON))  # reason: count
    encoding: str | None = None  # a text file's encoding when it was not UTF-8 (detected)
    reused_from: str | None = None  # the job whose summary a skipped document reuses
    attempts: int = 0
    finished_at: datetime | None = None
