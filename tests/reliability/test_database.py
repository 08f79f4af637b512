"""The trace database under concurrent use, on SQLite (WAL) and on a real PostgreSQL server:
processes that start together on an empty database, and concurrent writers, lose and
duplicate no row; a killed run's process is found and the run shown as interrupted."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tierflow.memory import TraceStore
from tierflow.records import ModelCallRecord, StepHandle, ToolCallRecord

from tests.reliability.postgres import fresh_database, postgres_server

PROCESSES = 8
RUNS_EACH = 5
THREADS, RUNS_PER_THREAD = 8, 25


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fresh' / 'tierflow.db'}"
    return fresh_database(request.getfixturevalue("postgres"))


def _first_use(url: str, barrier: multiprocessing.synchronize.Barrier, index: int) -> None:
    barrier.wait()  # every process opens the empty database at the same moment
    store = TraceStore.from_url(url)
    for number in range(RUNS_EACH):
        run_id = store.start_run(f"task {index}-{number}")
        store.finish_run(run_id, "succeeded", answer=str(number))


def test_processes_starting_together_on_an_empty_database(database: str, tally: Any) -> None:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(PROCESSES)
    workers = [context.Process(target=_first_use, args=(database, barrier, i)) for i in range(PROCESSES)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [worker.exitcode for worker in workers] == [0] * PROCESSES
    runs = TraceStore.from_url(database).list_runs(limit=1000)
    tasks = {run.task for run in runs}
    tally(rows_lost=PROCESSES * RUNS_EACH - len(tasks) + (len(runs) - len(tasks)))
    assert len(runs) == PROCESSES * RUNS_EACH
    assert len({run.task for run in runs}) == PROCESSES * RUNS_EACH
    assert {run.status for run in runs} == {"succeeded"}


def test_concurrent_writers_lose_and_duplicate_nothing(database: str, tally: Any) -> None:
    store = TraceStore.from_url(database)
    errors: list[BaseException] = []

    def writer(index: int) -> None:
        try:
            for number in range(RUNS_PER_THREAD):
                run_id = store.start_run(f"writer {index} run {number}")
                step = StepHandle(1, "act")
                step.model_call(ModelCallRecord(node="act", tier="slm", model="m", messages=[]))
                step.tools.append(ToolCallRecord("calculator", {"expression": "1+1"}, "2", None, 1.0))
                store.write_step(run_id, step)
                store.finish_run(run_id, "succeeded", answer=f"{index}-{number}")
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    runs = store.list_runs(limit=10_000)
    tasks = {run.task for run in runs}
    tally(rows_lost=THREADS * RUNS_PER_THREAD - len(tasks) + (len(runs) - len(tasks)))
    assert len(runs) == THREADS * RUNS_PER_THREAD
    assert sorted(run.task for run in runs) == sorted(
        f"writer {i} run {n}" for i in range(THREADS) for n in range(RUNS_PER_THREAD)
    )
    sample = store.get_run(runs[0].id)
    assert len(sample.steps) == 1 and len(sample.steps[0].tool_calls) == 1
    assert all(run.model_calls == 1 for run in runs)


def test_a_run_of_a_dead_process_reads_as_interrupted(database: str) -> None:
    store = TraceStore.from_url(database)
    mine = store.start_run("mine")
    theirs = store.start_run("theirs")
    from sqlmodel import Session
    from tierflow.memory.traces.tables import Run

    with Session(store.engine) as session:  # as a process that has since died left it
        row = session.get(Run, theirs)
        assert row is not None
        row.owner = (row.owner or "").split(":")[0] + ":999999999:1"
        session.commit()
    statuses = {run.id: run.status for run in store.list_runs()}
    assert statuses == {mine: "running", theirs: "interrupted"}


def test_a_run_of_a_killed_process_not_yet_reaped_reads_as_interrupted(database: str) -> None:
    """A killed job whose parent died too stays a zombie until PID 1 reaps it, and in a
    container PID 1 may never do so: the pid still answers, with its own start time."""
    import subprocess
    import time

    from sqlmodel import Session
    from tierflow.memory.traces.owner import _stat, this_process
    from tierflow.memory.traces.tables import Run

    store = TraceStore.from_url(database)
    theirs = store.start_run("theirs")
    child = subprocess.Popen(["true"])  # exits at once; not waited for, so a zombie
    try:
        deadline = time.monotonic() + 10
        while (_stat(child.pid) or ["?"])[0] != "Z" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _stat(child.pid)[0] == "Z"
        host = this_process().split(":")[0]
        with Session(store.engine) as session:
            row = session.get(Run, theirs)
            assert row is not None
            row.owner = f"{host}:{child.pid}:{_stat(child.pid)[19]}"
            session.commit()
        assert {run.id: run.status for run in store.list_runs()} == {theirs: "interrupted"}
    finally:
        child.wait()
