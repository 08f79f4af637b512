"""The trace database under concurrent use: processes that start together on an empty data
directory, and concurrent writers, lose and duplicate no row."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from tierflow.memory import TraceStore

PROCESSES = 8
RUNS_EACH = 5


def _first_use(url: str, barrier: multiprocessing.synchronize.Barrier, index: int) -> None:
    barrier.wait()  # every process opens the empty database at the same moment
    store = TraceStore.from_url(url)
    for number in range(RUNS_EACH):
        run_id = store.start_run(f"task {index}-{number}")
        store.finish_run(run_id, "succeeded", answer=str(number))


def test_processes_starting_together_on_an_empty_data_dir(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh' / 'tierflow.db'}"
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(PROCESSES)
    workers = [context.Process(target=_first_use, args=(url, barrier, i)) for i in range(PROCESSES)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [worker.exitcode for worker in workers] == [0] * PROCESSES
    runs = TraceStore.from_url(url).list_runs(limit=1000)
    assert len(runs) == PROCESSES * RUNS_EACH
    assert len({run.task for run in runs}) == PROCESSES * RUNS_EACH
    assert {run.status for run in runs} == {"succeeded"}
