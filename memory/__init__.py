"""Run traces (sqlmodel) and checkpoints."""

from tierflow.memory.traces import RunSummary, TraceStore, open_engine
from tierflow.records import RunStats, RunTrace, StepTrace, StoredModelCall

__all__ = ["TraceStore", "RunSummary", "RunTrace", "RunStats", "StepTrace", "StoredModelCall", "open_engine"]
