"""Where tierflow keeps its files by default (computed on demand, never created at import)."""

from __future__ import annotations

from pathlib import Path

from platformdirs import user_cache_path, user_config_path, user_data_path

__all__ = ["data_dir", "cache_dir", "config_file", "checkout_results_dir"]

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
