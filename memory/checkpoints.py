"""The LangGraph checkpoints of task runs, with secrets scrubbed before they are written.

A checkpoint holds a run's whole state (the task, tool results, answers), so a key typed
into a task would otherwise land in ``checkpoints.sqlite`` as typed. Every value is passed
through ``tierflow.secrets.scrub_value`` on its way to the serializer.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.sqlite import SqliteSaver
from tierflow.secrets import scrub_value

__all__ = ["ScrubbingSerializer", "open_checkpointer"]


class ScrubbingSerializer(SerializerProtocol):
    """LangGraph's serializer, fed scrubbed values."""

    def __init__(self, inner: SerializerProtocol | None = None) -> None:
        self.inner = inner or JsonPlusSerializer()

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        return self.inner.dumps_typed(scrub_value(obj))

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        return self.inner.loads_typed(data)


def open_checkpointer(path: Path) -> SqliteSaver:
    """The SQLite checkpointer at ``path`` (created with its folder), secrets scrubbed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return SqliteSaver(sqlite3.connect(path, check_same_thread=False), serde=ScrubbingSerializer())
