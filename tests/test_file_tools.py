"""The file tools stay inside their workspace: no '..', no absolute paths, no links out."""

from pathlib import Path

import pytest
from tierflow.errors import SandboxError, ToolError
from tierflow.tools import default_registry


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    (root / "notes").mkdir(parents=True)
    (root / "notes" / "todo.txt").write_text("buy milk\nwrite tests\n")
    (root / "report.md").write_text("one two three four\n")
    (root / "blob.bin").write_bytes(b"\x00\x01\x02binary")
    secret = tmp_path / "outside"
    secret.mkdir()
    (secret / "secret.txt").write_text("top secret")
    (root / "escape.txt").symlink_to(secret / "secret.txt")
    (root / "escape_dir").symlink_to(secret, target_is_directory=True)
    (root / "inside_link.txt").symlink_to(root / "report.md")
    return root


def call(workspace: Path, tool: str, **arguments: object) -> str:
    found = default_registry(workspace).get(tool)
    assert found is not None
    return found.call(arguments)


def test_reads_and_lists_inside_the_workspace(workspace: Path) -> None:
    assert call(workspace, "read_file", path="notes/todo.txt") == "buy milk\nwrite tests\n"
    assert call(workspace, "read_file", path="./inside_link.txt") == "one two three four\n"
    listing = call(workspace, "list_files").splitlines()
    assert "report.md" in listing and "notes/" in listing
    assert "escape.txt" not in listing and "escape_dir/" not in listing
    recursive = call(workspace, "list_files", pattern="*.txt", recursive=True).splitlines()
    assert recursive == ["inside_link.txt", "notes/todo.txt"]


@pytest.mark.parametrize(
    "path",
    [
        "../outside/secret.txt",
        "notes/../../outside/secret.txt",
        "/etc/passwd",
        "~/.bashrc",
        "escape.txt",
        "escape_dir/secret.txt",
        "notes\\..\\..\\outside",
        "a\x00b",
    ],
)
def test_refuses_paths_that_leave_the_workspace(workspace: Path, path: str) -> None:
    with pytest.raises(SandboxError):
        call(workspace, "read_file", path=path)


@pytest.mark.parametrize("directory", ["..", "/", "escape_dir"])
def test_list_files_refuses_directories_outside(workspace: Path, directory: str) -> None:
    with pytest.raises(SandboxError):
        call(workspace, "list_files", directory=directory)


def test_missing_binary_and_long_files_are_explained(workspace: Path) -> None:
    with pytest.raises(ToolError, match="does not exist"):
        call(workspace, "read_file", path="nope.txt")
    with pytest.raises(ToolError, match="binary"):
        call(workspace, "read_file", path="blob.bin")
    with pytest.raises(ToolError, match="not a file"):
        call(workspace, "read_file", path="notes")
    (workspace / "long.txt").write_text("x" * 5000)
    assert call(workspace, "read_file", path="long.txt", max_chars=100).endswith(
        "[... truncated at 100 characters]"
    )


def test_word_count_of_text_or_file(workspace: Path) -> None:
    assert call(workspace, "word_count", text="a b  c\nd") == '{"words": 4, "lines": 2, "characters": 8}'
    assert '"words": 4' in call(workspace, "word_count", path="report.md")
    with pytest.raises(SandboxError):
        call(workspace, "word_count", path="escape.txt")
    with pytest.raises(ToolError, match="either text or path"):
        call(workspace, "word_count")
