"""Run traces (sqlmodel) and checkpoints."""

from tierflow.memory.traces import RunSummary, TraceStore, open_engine

__all__ = ["TraceStore", "RunSummary", "open_engine"]
