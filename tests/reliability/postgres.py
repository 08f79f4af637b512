"""A real, throwaway PostgreSQL server for the database tests (Debian's package; `make
postgres` installs it), or the one ``TIERFLOW_TEST_POSTGRES_URL`` names."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from tierflow.agents.server import free_port

__all__ = ["postgres_server", "fresh_database"]


def _run(command: list[str], as_postgres: bool) -> None:
    prefix = ["runuser", "-u", "postgres", "--"] if as_postgres else []
    done = subprocess.run(prefix + command, capture_output=True, text=True, check=False, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr or done.stdout}")


@contextmanager
def postgres_server() -> Iterator[str]:
    """The URL (SQLAlchemy, psycopg driver) of a server with a database ``postgres``."""
    given = os.environ.get("TIERFLOW_TEST_POSTGRES_URL")
    if given:
        yield given
        return
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.fail("PostgreSQL is not installed: run `make postgres` (apt-get install postgresql)")
    bindir = os.path.dirname(found[-1])
    as_postgres = os.geteuid() == 0  # the server refuses to run as root
    home = tempfile.mkdtemp(prefix="tierflow-pg-")
    if as_postgres:
        shutil.chown(home, "postgres", "postgres")
    data, port = os.path.join(home, "data"), free_port()
    _run([f"{bindir}/initdb", "-D", data, "-U", "tierflow", "--auth=trust", "-E", "UTF8"], as_postgres)
    options = f"-p {port} -k {home} -c listen_addresses=127.0.0.1 -c fsync=off"
    _run([f"{bindir}/pg_ctl", "-D", data, "-o", options, "-w", "-l", f"{home}/log", "start"], as_postgres)
    try:
        yield f"postgresql+psycopg://tierflow@127.0.0.1:{port}/postgres"
    finally:
        _run([f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"], as_postgres)
        shutil.rmtree(home, ignore_errors=True)


def fresh_database(server_url: str) -> str:
    """A new, empty database on the server; its URL."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    plain = server_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return server_url.rsplit("/", 1)[0] + f"/{name}"
