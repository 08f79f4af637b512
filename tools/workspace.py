"""A directory the file tools are confined to.

Paths are relative to the workspace root. Absolute paths, ``~``, ``..`` components and
symbolic links that lead outside the root are refused with a ``SandboxError``.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath, PureWindowsPath

from tierflow.errors import SandboxError

__all__ = ["Workspace"]


class Workspace:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def contains(self, path: Path) -> bool:
        """Is ``path``, links followed, inside the root? (A link loop or a name the system
        refuses is not.)"""
        try:
            real = path.resolve()
        except (OSError, RuntimeError, ValueError):  # a link loop, a name too long, bad text
            return False
        return real == self.root or self.root in real.parents

    def resolve(self, relative: str) -> Path:
        """The real path for ``relative``, guaranteed inside the workspace."""
        text = relative.strip() or "."
        if "\x00" in text:
            raise SandboxError("the path contains a NUL byte")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise SandboxError("the path is not valid text") from None
        if any(len(part.encode()) > 255 for part in PurePosixPath(text).parts):
            raise SandboxError("a name in the path is longer than 255 bytes")
        if text.startswith("~") or PurePosixPath(text).is_absolute() or PureWindowsPath(text).is_absolute():
            raise SandboxError(f"{relative!r} is an absolute path; give a path relative to the workspace")
        if ".." in PurePosixPath(text.replace("\\", "/")).parts:
            raise SandboxError(f"{relative!r} leaves the workspace ('..' is not allowed)")
        candidate = self.root / text
        if not self.contains(candidate):
            raise SandboxError(f"{relative!r} is a link that leads outside the workspace, or a link loop")
        return candidate.resolve()

    def relative(self, path: Path) -> str:
        """``path`` (under the resolved root) as the model sees it: a link keeps its own name."""
        return path.relative_to(self.root).as_posix() or "."
