"""The database a trace store writes to: SQLite (a file, or in memory) or any SQLAlchemy URL
such as PostgreSQL's, with a clear error for a URL that cannot be opened."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.pool import StaticPool
from sqlmodel import create_engine
from tierflow.errors import ConfigError

__all__ = ["open_engine"]


def open_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite files get WAL mode so readers (the console) never block."""
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise ConfigError(
            f"database URL {url!r} is not valid: {exc}",
            hint="Set TIERFLOW_DATABASE_URL to e.g. sqlite:///path/to/tierflow.db",
        ) from None
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            folder = Path(database).expanduser().parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(
                    f"cannot create the database's folder {folder}: {exc.strerror or exc}",
                    hint="Set TIERFLOW_DATA_DIR (or TIERFLOW_DATABASE_URL) to a place you can write.",
                ) from None
        # one in-memory database is one connection, shared by the threads of parallel steps
        pool = {"poolclass": StaticPool} if database in (None, "", ":memory:") else {}
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **pool)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")  # safe with WAL; a commit waits for no fsync
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    try:
        return create_engine(url, pool_pre_ping=True)
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"the database URL needs the {exc.name} driver, which is not installed",
            hint="Install it (PostgreSQL: pip install 'psycopg[binary]'), or use SQLite.",
        ) from None
