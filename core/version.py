"""tierflow's version (the package's own, as ``pyproject.toml`` gives it)."""

__version__ = "0.1.0"
