"""The built-in tools. File tools are bound to a ``Workspace``; the clock can be injected."""

from __future__ import annotations

import codecs
import fnmatch
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tierflow.errors import ToolError
from tierflow.tools.base import Tool
from tierflow.tools.calculator import calculator
from tierflow.tools.registry import ToolRegistry
from tierflow.tools.units import prepare_units, unit_convert
from tierflow.tools.workspace import Workspace

__all__ = ["builtin_tools", "default_registry"]

_MAX_LISTED = 200
_MAX_READ = 100_000
_COUNT_BLOCK = 1 << 20
_LINE_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")  # what str.splitlines splits on


def _current_datetime(clock: Callable[[], datetime]) -> Callable[..., str]:
    def current_datetime(timezone: str = "UTC") -> str:
        """The current date, time and weekday in a time zone.

        Args:
            timezone: an IANA time zone name such as UTC, Europe/Paris or America/New_York
        """
        try:
            zone = ZoneInfo(timezone.strip() or "UTC")
        except (ZoneInfoNotFoundError, ValueError):
            raise ToolError(f"unknown time zone {timezone!r}; use a name like Europe/Paris") from None
        now = clock().astimezone(zone)
        return f"{now.isoformat(timespec='seconds')} ({now:%A}, {zone.key})"

    return current_datetime


def _text_file(workspace: Workspace, path: str) -> Path:
    target = workspace.resolve(path)
    if not target.exists():
        raise ToolError(f"{path!r} does not exist in the workspace")
    if not target.is_file():
        raise ToolError(f"{path!r} is not a file")
    return target


def _read_text(workspace: Workspace, path: str, limit: int) -> tuple[str, bool]:
    target = _text_file(workspace, path)
    with target.open("rb") as handle:
        data = handle.read(limit * 4 + 1)
    if b"\x00" in data[:8192]:
        raise ToolError(f"{path!r} is a binary file")
    text = data.decode("utf-8", errors="replace")
    return text[:limit], len(text) > limit or target.stat().st_size > len(data)


def _count_file(workspace: Workspace, path: str) -> dict[str, int]:
    """Words, lines and characters of a whole file, read in blocks (any size, bounded memory),
    counted as ``str.split`` and ``str.splitlines`` count them on the whole text."""
    target = _text_file(workspace, path)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    words = breaks = characters = 0
    in_word = ends_with_break = after_cr = False
    with target.open("rb") as handle:
        first = True
        while True:
            block = handle.read(_COUNT_BLOCK)
            if first and b"\x00" in block[:8192]:
                raise ToolError(f"{path!r} is a binary file")
            first = False
            text = decoder.decode(block, final=not block)
            if text:
                words += len(text.split()) - (in_word and not text[0].isspace())
                pieces = text.splitlines(keepends=True)
                breaks += sum(piece[-1] in _LINE_BREAKS for piece in pieces)
                breaks -= after_cr and text[0] == "\n"  # a \r\n split across two blocks
                characters += len(text)
                in_word, ends_with_break = not text[-1].isspace(), text[-1] in _LINE_BREAKS
                after_cr = text[-1] == "\r"
            if not block:
                break
    lines = breaks + (characters > 0 and not ends_with_break)
    return {"words": words, "lines": lines, "characters": characters}


def _file_tools(workspace: Workspace) -> list[Callable[..., object]]:
    def read_file(path: str, max_chars: int = 20_000) -> str:
        """Read a text file from the workspace.

        Args:
            path: the file's path relative to the workspace, e.g. notes/todo.txt
            max_chars: read at most this many characters
        """
        limit = max(1, min(max_chars, _MAX_READ))
        text, cut = _read_text(workspace, path, limit)
        return text + (f"\n[... truncated at {limit} characters]" if cut else "")

    def list_files(directory: str = ".", pattern: str = "*", recursive: bool = False) -> str:
        """List files in a workspace directory, one relative path per line.

        Args:
            directory: the directory relative to the workspace; . is the workspace itself
            pattern: a shell pattern the file names must match, e.g. *.txt
            recursive: also list files in subdirectories
        """
        base = workspace.resolve(directory)
        if not base.is_dir():
            raise ToolError(f"{directory!r} is not a directory in the workspace")
        found: list[str] = []
        for root, dirs, files in os.walk(base, followlinks=False):
            subdirs = sorted(d + "/" for d in dirs)
            dirs[:] = sorted(d for d in dirs if recursive and workspace.contains(Path(root, d)))
            for name in sorted(files) + ([] if recursive else subdirs):
                path = Path(root, name.rstrip("/"))
                if fnmatch.fnmatch(name.rstrip("/"), pattern) and workspace.contains(path):
                    found.append(workspace.relative(path) + ("/" if name.endswith("/") else ""))
            if not recursive:
                break
        if not found:
            return f"no files matching {pattern!r} in {directory!r}"
        more = len(found) - _MAX_LISTED
        return "\n".join(found[:_MAX_LISTED]) + (f"\n[... {more} more]" if more > 0 else "")

    def word_count(text: str = "", path: str = "") -> dict[str, int]:
        """Count the words, lines and characters of a text or of a workspace file.

        Args:
            text: the text to count (leave empty when giving path)
            path: a workspace file to count instead of text
        """
        if path:
            return _count_file(workspace, path)
        if not text:
            raise ToolError("give either text or path")
        return {"words": len(text.split()), "lines": len(text.splitlines()), "characters": len(text)}

    return [read_file, list_files, word_count]


def builtin_tools(workspace: Workspace, *, clock: Callable[[], datetime] | None = None) -> list[Tool]:
    """calculator, unit_convert, current_datetime, read_file, list_files, word_count."""
    return [
        Tool.from_function(calculator),
        Tool.from_function(unit_convert, prepare=prepare_units),
        Tool.from_function(_current_datetime(clock or (lambda: datetime.now(UTC)))),
        *(Tool.from_function(function) for function in _file_tools(workspace)),
    ]


def default_registry(workspace: Path, *, clock: Callable[[], datetime] | None = None) -> ToolRegistry:
    return ToolRegistry(builtin_tools(Workspace(workspace), clock=clock))
