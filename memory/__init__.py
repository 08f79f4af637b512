"""Run traces (sqlmodel) and checkpoints."""

from tierflow.memory.records import RunStats, RunTrace, StepTrace, StoredModelCall
from tierflow.memory.traces import RunSummary, TraceStore, open_engine

__all__ = ["TraceStore", "RunSummary", "RunTrace", "RunStats", "StepTrace", "StoredModelCall", "open_engine"]
