"""Which process runs a run: ``host:pid:start`` (the process's start time tells a reused pid
from the original). A run left ``running`` by a process that is gone (killed, crashed, the
machine rebooted) is found by this and shown as interrupted."""

from __future__ import annotations

import os
import socket
from functools import cache

__all__ = ["this_process", "is_gone"]


def _stat(pid: int) -> list[str]:
    """The fields of ``/proc/PID/stat`` after the name (Linux; none if unknown): the state first."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            stat = handle.read()
    except OSError:
        return []
    return stat.rsplit(")", 1)[-1].split()  # the name may hold spaces and ')'


def _start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), or None if unknown."""
    fields = _stat(pid)
    return fields[19] if len(fields) > 19 else None


@cache
def _host() -> str:
    return socket.gethostname()


def this_process() -> str:
    pid = os.getpid()
    return f"{_host()}:{pid}:{_start_ticks(pid) or ''}"


def is_gone(owner: str | None) -> bool:
    """Is ``owner`` a process of this machine that no longer runs? (Unknown: not gone.)"""
    if not owner:
        return False
    host, _, rest = owner.partition(":")
    pid_text, _, ticks = rest.partition(":")
    if host != _host() or not pid_text.isdigit():
        return False  # another machine's process: it cannot be checked from here
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # it exists, under another user
    fields = _stat(pid)
    if fields and fields[0] in ("Z", "X"):
        # dead, not yet reaped: a killed job whose parent died too waits for PID 1, and in a
        # container PID 1 may never reap it
        return True
    now = fields[19] if len(fields) > 19 else None
    return bool(ticks and now and now != ticks)  # the pid was reused by a later process
