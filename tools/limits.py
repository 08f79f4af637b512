"""Every tool call runs under limits: time, memory and the size of its result.

A tool is model-driven code: its arguments come from a model, which a prompt injection can
steer, so one call must not be able to pin a core or fill memory. By default a call runs in
a forked child process (the tool's function is inherited, not pickled, so closures and
user tools work unchanged) with an address-space limit; the parent waits up to the time
limit and kills the child past it. The result comes back as text over a pipe, bounded in
size. A call that breaks a limit raises ``ToolError``, so the task graph records it as the
tool's error and the run goes on.

A tool that must run in the caller's process (it changes the caller's objects) is declared
``isolate=False``: its time limit is then enforced by no longer waiting for it; the call
cannot be stopped and is said to be still running in the error.

>>> limits = ToolLimits(timeout_s=5)
>>> run_limited("double", lambda: str(2 * 21), limits)
'42'
"""

from __future__ import annotations

import json
import os
import resource
import select
import signal
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

from tierflow.errors import ToolError

__all__ = ["ToolLimits", "ToolBug", "run_limited", "DEFAULT_LIMITS"]


@dataclass(frozen=True)
class ToolLimits:
    """Limits of one tool call (settings: ``tool_timeout_s``, ``tool_max_result_chars``,
    ``tool_memory_mb``; a tool may set its own with ``@tool(timeout_s=...)``)."""

    timeout_s: float = 10.0
    max_result_chars: int = 200_000
    memory_mb: int = 1024
    isolate: bool = True

    def __post_init__(self) -> None:
        if self.timeout_s <= 0 or self.max_result_chars <= 0 or self.memory_mb <= 0:
            raise ValueError("tool limits must be positive")


DEFAULT_LIMITS = ToolLimits()

_CHILD_FAILED = 70  # the child's exit status when it could not even report


def run_limited(name: str, call: Callable[[], str], limits: ToolLimits = DEFAULT_LIMITS) -> str:
    """Run ``call`` (a tool call that returns its result as text) under ``limits``."""
    if limits.isolate and hasattr(os, "fork"):
        return _in_child(name, call, limits)
    return _in_thread(name, call, limits)


def _too_large(name: str, size: int, limits: ToolLimits) -> ToolError:
    return ToolError(
        f"{name} returned {size:,} characters, over the {limits.max_result_chars:,}-character "
        "limit for a tool result; ask for less (a smaller range, a file part, a filter)"
    )


def _timed_out(name: str, limits: ToolLimits, stopped: bool) -> ToolError:
    what = "was stopped" if stopped else "could not be stopped and is still running (isolate=False)"
    return ToolError(f"{name} ran past its {limits.timeout_s:g} s time limit and {what}")


def _checked(name: str, result: str, limits: ToolLimits) -> str:
    if len(result) > limits.max_result_chars:
        raise _too_large(name, len(result), limits)
    return result


# In a child process ---------------------------------------------------------------------
def _in_child(name: str, call: Callable[[], str], limits: ToolLimits) -> str:
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():  # 3.12+ warns about fork with threads; the child runs no thread
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: run, report, and leave without running the parent's exit code
        os.close(read_end)
        status = 0
        try:
            _child(name, call, limits, write_end)
        except BaseException:  # noqa: BLE001 - nothing may escape a forked child
            status = _CHILD_FAILED
        finally:
            os._exit(status)
    os.close(write_end)
    try:
        data = _receive(name, read_end, pid, limits)
    finally:
        os.close(read_end)
        exit_status = _reap(pid)
    if not data:
        raise ToolError(f"{name} stopped without a result ({_describe_exit(exit_status)})")
    try:
        kind, text = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise ToolError(f"{name} returned a result that could not be read back") from None
    if kind == "ok":
        return str(text)
    raise _error_class(str(kind))(str(text))


def _child(name: str, call: Callable[[], str], limits: ToolLimits, write_end: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C in the parent must not run its handlers here
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _limit_memory(limits.memory_mb)
    try:
        payload = ["ok", _checked(name, call(), limits)]
    except ToolError as exc:
        payload = [type(exc).__name__, str(exc)]
    except MemoryError:
        payload = ["ToolError", f"{name} ran out of memory ({limits.memory_mb} MB per call) and was stopped"]
    except RecursionError:
        payload = ["ToolError", f"{name} recursed too deeply and was stopped"]
    except Exception as exc:  # a tool's own bug: reported like the task graph reports it
        payload = ["ToolBug", f"{type(exc).__name__}: {exc}"]
    data = json.dumps(payload, ensure_ascii=False).encode("utf-8", errors="replace")
    with os.fdopen(write_end, "wb") as pipe:
        pipe.write(data)


def _limit_memory(memory_mb: int) -> None:
    """Cap the child's address space at what it has now plus ``memory_mb``."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            current = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return
    limit = current + memory_mb * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _receive(name: str, read_end: int, pid: int, limits: ToolLimits) -> bytes:
    """The child's report as sent (empty if it died first); ``ToolError`` when it breaks its
    time or size limit (it is killed)."""
    deadline = time.monotonic() + limits.timeout_s
    chunks: list[bytes] = []
    size, most = 0, limits.max_result_chars * 4 + 4096  # UTF-8 and JSON escaping, bounded
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            _kill(pid)
            raise _timed_out(name, limits, stopped=True)
        ready, _, _ = select.select([read_end], [], [], left)
        if not ready:
            continue
        chunk = os.read(read_end, 65536)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if size > most:
            _kill(pid)
            raise _too_large(name, size, limits)
    return b"".join(chunks)


def _error_class(name: str) -> type[ToolError]:
    """The ``ToolError`` subclass (``SandboxError``, ``ToolBug``...) a child raised, by name."""
    classes, found = [ToolError], {}
    while classes:
        cls = classes.pop()
        found[cls.__name__] = cls
        classes += cls.__subclasses__()
    return found.get(name, ToolError)


class ToolBug(ToolError):
    """An isolated tool raised something other than ``ToolError`` (its own bug); the message
    names the original exception's type."""


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _reap(pid: int) -> int | None:
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return None
    return status


def _describe_exit(status: int | None) -> str:
    if status is None:
        return "already reaped"
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        return f"killed by {signal.Signals(number).name}" + (
            ", probably out of memory" if number == signal.SIGKILL else ""
        )
    return f"exit status {os.WEXITSTATUS(status)}"


# In a thread ----------------------------------------------------------------------------
def _in_thread(name: str, call: Callable[[], str], limits: ToolLimits) -> str:
    outcome: list[str | BaseException] = []

    def target() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            outcome.append(exc)

    worker = threading.Thread(target=target, name=f"tool-{name}", daemon=True)
    worker.start()
    worker.join(limits.timeout_s)
    if worker.is_alive():
        raise _timed_out(name, limits, stopped=False)
    (value,) = outcome
    if isinstance(value, BaseException):
        raise value
    return _checked(name, value, limits)
