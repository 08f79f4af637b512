"""Where a job's documents are summarized: in this process, in local worker processes, or
on a Ray cluster. Each backend keeps at most one document per worker in flight, calls
``on_start`` as a document is handed out and ``on_done`` with its outcome as it finishes
(in the driver's thread, so the driver alone writes the database), and hands a document
whose worker died to another worker, up to ``MAX_ATTEMPTS`` times. With ``Recycle`` they
restart their worker processes, and the driver's model servers, every so many documents."""

from __future__ import annotations

import logging
import multiprocessing
import os
import socket
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Protocol

from tierflow.batch.worker import DocumentOutcome, DocumentTask, Worker, WorkerConfig
from tierflow.errors import TierflowError

__all__ = [
    "Backend",
    "InProcessBackend",
    "ProcessBackend",
    "RayBackend",
    "MAX_ATTEMPTS",
    "Recycle",
    "worker_died",
]

MAX_ATTEMPTS = 3
Started = Callable[[DocumentTask], None]
Done = Callable[[DocumentOutcome], None]


@dataclass(frozen=True)
class Recycle:
    """Every ``every`` documents finished, the backend hands out no more until those in flight
    finish, then starts its worker processes anew and calls ``restart`` (the driver restarts
    the model servers it runs: the embedded LLM's, the shared SLM's). A llama.cpp process gains
    memory with every request, and only its end returns it (``evals/results/issue27/README.md``):
    a long job restarts them so that its memory stays flat."""

    every: int
    restart: Callable[[], None]


class Backend(Protocol):
    workers: int

    def run(
        self, tasks: Iterable[DocumentTask], on_start: Started, on_done: Done, recycle: Recycle | None = None
    ) -> None: ...

    def close(self) -> None: ...


def worker_died(task: DocumentTask, attempts: int, detail: str) -> DocumentOutcome:
    return DocumentOutcome(
        task.document_id,
        ok=False,
        run_id=None,
        reason=f"the worker summarizing it died {attempts} times ({detail}); the document may "
        "need more memory than a worker has",
    )


class InProcessBackend:
    """One worker: this process, with the driver's own tiers and trace store."""

    workers = 1

    def __init__(self, summarize: Callable[[DocumentTask], DocumentOutcome]) -> None:
        self._summarize = summarize

    def run(
        self, tasks: Iterable[DocumentTask], on_start: Started, on_done: Done, recycle: Recycle | None = None
    ) -> None:
        done = 0
        for task in tasks:
            if recycle is not None and done >= recycle.every:
                recycle.restart()  # the tiers stay: a job whose SLM would load here has a worker process
                done = 0
            on_start(task)
            on_done(self._summarize(task))
            done += 1

    def close(self) -> None:
        pass


_worker: Worker | None = None


def _init_process(config: WorkerConfig) -> None:
    global _worker
    _worker = Worker(config)


def _summarize_in_process(task: DocumentTask) -> DocumentOutcome:
    assert _worker is not None
    return _worker.summarize(task)


class ProcessBackend:
    """``workers`` local processes, each with its own SLM (loaded once, on its first document)."""

    def __init__(self, config: WorkerConfig, workers: int) -> None:
        self.config, self.workers = config, workers
        self._pool: ProcessPoolExecutor | None = None

    def _new_pool(self) -> ProcessPoolExecutor:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("spawn"),  # no llama.cpp state copied by fork
            initializer=_init_process,
            initargs=(self.config,),
        )
        return self._pool

    def run(
        self, tasks: Iterable[DocumentTask], on_start: Started, on_done: Done, recycle: Recycle | None = None
    ) -> None:
        queue = _Queue(tasks)
        pool = self._pool or self._new_pool()
        flying: dict[Future[DocumentOutcome], tuple[DocumentTask, int]] = {}
        done = 0
        while queue or flying:
            draining = recycle is not None and done >= recycle.every
            if recycle is not None and draining and not flying:
                self.close()  # the worker processes end, and their memory with them
                recycle.restart()
                pool, done, draining = self._new_pool(), 0, False
            while not draining and len(flying) < self.workers and (nxt := queue.next()) is not None:
                task, attempt = nxt
                on_start(task)
                flying[pool.submit(_summarize_in_process, task)] = (task, attempt)
            if not flying:
                continue
            finished, _ = wait(flying, return_when=FIRST_COMPLETED)
            broken = False
            for future in finished:
                task, attempt = flying.pop(future)
                try:
                    on_done(future.result())
                    done += 1
                except BrokenProcessPool:
                    broken = True
                    _retry(queue, task, attempt, "its process exited", on_done)
            if broken:  # every document in flight is lost with the pool: hand them out again
                for task, attempt in flying.values():
                    _retry(queue, task, attempt, "its process pool broke", on_done)
                flying.clear()
                pool = self._new_pool()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class _Queue:
    """The documents still to hand out: retries first, then the next of ``tasks``, taken
    only when a worker is free (each document is read as late as that, so a slow one holds
    up no other)."""

    def __init__(self, tasks: Iterable[DocumentTask]) -> None:
        self._retries: deque[tuple[DocumentTask, int]] = deque()
        self._pending = iter(tasks)
        self._ahead: tuple[DocumentTask, int] | None = None

    def __bool__(self) -> bool:
        if self._retries or self._ahead is not None:
            return True
        self._ahead = self._take()
        return self._ahead is not None

    def _take(self) -> tuple[DocumentTask, int] | None:
        task = next(self._pending, None)
        return (task, 1) if task is not None else None

    def next(self) -> tuple[DocumentTask, int] | None:
        if self._retries:
            return self._retries.popleft()
        if self._ahead is not None:
            ahead, self._ahead = self._ahead, None
            return ahead
        return self._take()

    def retry(self, task: DocumentTask, attempt: int) -> None:
        self._retries.append((task, attempt))


def _retry(queue: _Queue, task: DocumentTask, attempt: int, detail: str, on_done: Done) -> None:
    if attempt >= MAX_ATTEMPTS:
        on_done(worker_died(task, attempt, detail))
    else:
        queue.retry(task, attempt + 1)


def _unreachable(address: str, timeout: float = 5.0) -> str | None:
    """Why nothing answers at a cluster address of the form ``[ray://]HOST:PORT`` (None when
    something does, or when the address is another form, such as ``auto``)."""
    host, colon, port = address.removeprefix("ray://").rpartition(":")
    if not colon or not port.isdigit():
        return None
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            return None
    except OSError as exc:
        return f"nothing answers at {host}:{port} ({exc.strerror or exc})"


class RayBackend:
    """``workers`` Ray actors, each a worker process with its own SLM, on the cluster at
    ``address`` (``RAY_ADDRESS``; none: a local cluster of ``workers`` CPUs started here)."""

    def __init__(self, config: WorkerConfig, workers: int, *, address: str | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise TierflowError(
                "the Ray backend needs Ray, which is not installed",
                hint="Install the extra: pip install 'tierflow[ray]' (or use --backend local).",
            ) from None
        self._ray = ray
        self.config, self.workers = config, workers
        self._started_here = not ray.is_initialized()
        if not self._started_here and address:
            logging.getLogger("tierflow").warning(
                "Ray is already initialized in this process: the job runs on that cluster, not on %s "
                "(ray.shutdown() first to use the address)",
                address,
            )
        if self._started_here:
            address = address or os.environ.get("RAY_ADDRESS") or None
            options: dict[str, Any] = {"address": address, "include_dashboard": False}
            if address is None:
                options["num_cpus"] = workers
            why = _unreachable(address) if address else None
            try:
                if why is not None:  # ray.init would wait for minutes before it gave up
                    raise ConnectionError(why)
                ray.init(**options, log_to_driver=False, configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise TierflowError(
                    f"cannot reach the Ray cluster at {address}: {exc}",
                    hint="Check --ray-address / RAY_ADDRESS (e.g. ray://head:10001 or auto), "
                    "or leave it unset to start a local cluster. A cluster with token "
                    "authentication also needs RAY_AUTH_MODE=token here, and its token "
                    "(~/.ray/auth_token).",
                ) from None
        self._actor_class = ray.remote(num_cpus=1, max_restarts=0)(Worker)
        self._actors: list[Any] = []

    def _actor(self) -> Any:
        return self._actor_class.remote(self.config)

    def run(
        self, tasks: Iterable[DocumentTask], on_start: Started, on_done: Done, recycle: Recycle | None = None
    ) -> None:
        ray = self._ray
        queue = _Queue(tasks)
        idle = deque(self._actors or [self._actor() for _ in range(self.workers)])
        self._actors = list(idle)
        flying: dict[Any, tuple[DocumentTask, int, Any]] = {}
        done = 0
        while queue or flying:
            draining = recycle is not None and done >= recycle.every
            if recycle is not None and draining and not flying:
                for actor in self._actors:  # new worker processes, with new memory
                    ray.kill(actor)
                recycle.restart()
                idle = deque(self._actor() for _ in range(self.workers))
                self._actors, done, draining = list(idle), 0, False
            while not draining and idle and (nxt := queue.next()) is not None:
                task, attempt = nxt
                actor = idle.popleft()
                on_start(task)
                flying[actor.summarize.remote(task)] = (task, attempt, actor)
            if not flying:
                continue
            ready, _ = ray.wait(list(flying), num_returns=1)
            for ref in ready:
                task, attempt, actor = flying.pop(ref)
                try:
                    outcome = ray.get(ref)
                except ray.exceptions.RayActorError as exc:  # the worker died: replace it
                    self._actors.remove(actor)
                    replacement = self._actor()
                    self._actors.append(replacement)
                    idle.append(replacement)
                    _retry(queue, task, attempt, f"Ray actor died: {type(exc).__name__}", on_done)
                    continue
                idle.append(actor)
                on_done(outcome)
                done += 1

    def close(self) -> None:
        for actor in self._actors:
            self._ray.kill(actor)
        self._actors = []
        if self._started_here:
            self._ray.shutdown()
