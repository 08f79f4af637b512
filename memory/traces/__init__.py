"""The trace store: every run, step, model call and tool call, written as it happens
(sqlmodel, SQLite or PostgreSQL), and the listeners that see each write (the OpenTelemetry
export is one)."""

from tierflow.memory.traces.engine import open_engine
from tierflow.memory.traces.rows import RunSummary
from tierflow.memory.traces.store import TraceStore

__all__ = ["TraceStore", "RunSummary", "open_engine"]
