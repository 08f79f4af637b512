"""The trace database's schema, evolved by small named migrations (applied once, in order)."""

from __future__ import annotations

import fcntl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, inspect, text
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel
from tierflow.memory.traces import tables

__all__ = ["migrate", "MIGRATIONS"]


def _m001_initial(connection: Connection) -> None:
    SQLModel.metadata.create_all(
        connection,
        tables=[SQLModel.metadata.tables[name] for name in ("runs", "steps", "model_calls", "tool_calls")],
    )


def _add_column(connection: Connection, table: str, column: str, sql_type: str) -> None:
    columns = {column["name"] for column in inspect(connection).get_columns(table)}
    if column not in columns:  # a database created by m001 of a later release already has it
        connection.execute(text(f"ALTER TABLE {table} ADD COLUMN {column} {sql_type}"))


def _m002_model_call_confidence(connection: Connection) -> None:
    _add_column(connection, "model_calls", "confidence", "FLOAT")


def _m003_model_call_max_tokens(connection: Connection) -> None:
    _add_column(connection, "model_calls", "max_tokens", "INTEGER")


def _m004_privacy(connection: Connection) -> None:
    _add_column(connection, "model_calls", "escalation_refused", "VARCHAR")
    _add_column(connection, "model_calls", "redacted", "JSON")


def _m005_model_call_signals(connection: Connection) -> None:
    _add_column(connection, "model_calls", "signals", "JSON")


def _m006_run_owner(connection: Connection) -> None:
    _add_column(connection, "runs", "owner", "VARCHAR")


def _m007_jobs(connection: Connection) -> None:
    SQLModel.metadata.create_all(
        connection, tables=[SQLModel.metadata.tables[name] for name in ("jobs", "job_documents")]
    )


def _m008_step_evidence(connection: Connection) -> None:
    _add_column(connection, "steps", "evidence", "JSON")


def _m009_one_word_for_success(connection: Connection) -> None:
    """Steps and job documents say ``succeeded`` and ``failed``, as runs and jobs do (they said
    ``ok``/``error`` and ``done``)."""
    connection.execute(text("UPDATE steps SET status = 'succeeded' WHERE status = 'ok'"))
    connection.execute(text("UPDATE steps SET status = 'failed' WHERE status = 'error'"))
    connection.execute(text("UPDATE job_documents SET status = 'succeeded' WHERE status = 'done'"))


def _m010_labels(connection: Connection) -> None:
    """Right-or-wrong labels of SLM outputs, for ``tierflow calibrate``."""
    SQLModel.metadata.create_all(connection, tables=[SQLModel.metadata.tables["labels"]])


def _m011_document_costs(connection: Connection) -> None:
    """Where a job document's time went (SLM and LLM seconds, escalations by reason), and the
    encoding its text was read in."""
    _add_column(connection, "job_documents", "slm_seconds", "FLOAT DEFAULT 0")
    _add_column(connection, "job_documents", "llm_seconds", "FLOAT DEFAULT 0")
    _add_column(connection, "job_documents", "escalations", "JSON")
    _add_column(connection, "job_documents", "encoding", "VARCHAR")


MIGRATIONS: list[tuple[str, Callable[[Connection], None]]] = [
    ("m001_initial", _m001_initial),
    ("m002_model_call_confidence", _m002_model_call_confidence),
    ("m003_model_call_max_tokens", _m003_model_call_max_tokens),
    ("m004_privacy", _m004_privacy),
    ("m005_model_call_signals", _m005_model_call_signals),
    ("m006_run_owner", _m006_run_owner),
    ("m007_jobs", _m007_jobs),
    ("m008_step_evidence", _m008_step_evidence),
    ("m009_one_word_for_success", _m009_one_word_for_success),
    ("m010_labels", _m010_labels),
    ("m011_document_costs", _m011_document_costs),
]


_ADVISORY_LOCK = 7_421_913  # PostgreSQL: one migrator at a time, across processes


@contextmanager
def _one_migrator(engine: Engine) -> Iterator[None]:
    """Processes that start together on an empty database take turns: without this, two of
    them read "nothing applied" and both create the tables ("table ... already exists")."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    lock_path = Path(database).expanduser().with_name(Path(database).name + ".migrate-lock")
    with open(lock_path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def migrate(engine: Engine) -> list[str]:
    """Apply the migrations not yet applied, one process at a time; return their names."""
    applied_now: list[str] = []
    with _one_migrator(engine), engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK})
        connection.execute(
            text(
                "CREATE TABLE IF NOT EXISTS schema_migrations (name VARCHAR PRIMARY KEY, applied_at VARCHAR)"
            )
        )
        done = {row[0] for row in connection.execute(text("SELECT name FROM schema_migrations"))}
        for name, step in MIGRATIONS:
            if name in done:
                continue
            step(connection)
            connection.execute(
                text("INSERT INTO schema_migrations (name, applied_at) VALUES (:n, :t)"),
                {"n": name, "t": tables.utcnow().isoformat()},
            )
            applied_now.append(name)
    return applied_now
