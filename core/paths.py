"""Where tierflow keeps its files by default (computed on demand, never created at import), and how a
file name is shown safely."""

from __future__ import annotations

import os
from pathlib import Path

from platformdirs import user_cache_path, user_config_path, user_data_path

__all__ = ["data_dir", "cache_dir", "config_file", "checkout_results_dir", "name_is_utf8", "printable_name"]

APP = "tierflow"


def data_dir() -> Path:
    """Run database, checkpoints and server logs: ``~/.local/share/tierflow`` on Linux."""
    return user_data_path(APP)


def cache_dir() -> Path:
    """Downloaded models: ``~/.cache/tierflow`` on Linux."""
    return user_cache_path(APP)


def config_file() -> Path:
    """The optional TOML config file: ``~/.config/tierflow/config.toml`` on Linux."""
    return user_config_path(APP) / "config.toml"


def checkout_results_dir() -> Path | None:
    """``evals/results/`` of the repository when tierflow runs from a checkout (an editable
    install), where evaluation results are committed; ``None`` for an installed package."""
    root = Path(__file__).resolve().parents[1]
    results = root / "evals" / "results"
    return results if (root / "pyproject.toml").is_file() and results.is_dir() else None


def name_is_utf8(path: Path | str) -> bool:
    """Whether a path's name is valid UTF-8 (the OS hands other bytes over as surrogates,
    which no store, hash or report can take)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable_name(path: Path | str) -> str:
    """A path as text that prints, stores and renders safely: bytes that are not UTF-8 as
    ``\\xNN``, control and bidirectional-control characters (a newline, U+202E) as
    ``\\uNNNN``; nothing else changes."""
    text = os.fsencode(path).decode("utf-8", "backslashreplace")
    return "".join(char if char.isprintable() else f"\\u{ord(char):04x}" for char in text)
