"""The trace database's schema, evolved by small named migrations (applied once, in order)."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection, inspect, text
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel
from tierflow.memory import tables

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


MIGRATIONS: list[tuple[str, Callable[[Connection], None]]] = [
    ("m001_initial", _m001_initial),
    ("m002_model_call_confidence", _m002_model_call_confidence),
    ("m003_model_call_max_tokens", _m003_model_call_max_tokens),
    ("m004_privacy", _m004_privacy),
    ("m005_model_call_signals", _m005_model_call_signals),
]


def migrate(engine: Engine) -> list[str]:
    """Apply the migrations not yet applied; return their names."""
    applied_now: list[str] = []
    with engine.begin() as connection:
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
