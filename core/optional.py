"""The optional parts of tierflow and the extras that install them.

The base package runs graphs and tasks on remote OpenAI-compatible endpoints; the local
SLM tier, the console, batch jobs and the long-term memory each come with an extra
(``pip install 'tierflow[local]'``). ``require`` turns a missing one into a clear error
at the entry point that needs it, instead of an ``ImportError`` deep in a run.
"""

from __future__ import annotations

import importlib.util

from tierflow.errors import ConfigError

__all__ = ["EXTRAS", "installed", "require"]

EXTRAS = {
    "llama_cpp": "local",
    "huggingface_hub": "local",
    "chromadb": "memory",
    "onnxruntime": "memory",
    "tokenizers": "memory",
    "streamlit": "ui",
    "pandas": "ui",
    "altair": "ui",
    "pypdf": "batch",
    "docx": "batch",
    "bs4": "batch",
    "ray": "ray",
    "sklearn": "eval",
    "torch": "train",
    "transformers": "train",
    "peft": "train",
    "gguf": "train",
    "safetensors": "train",
}
"""The module each extra provides, by the name it is imported as."""


def installed(*modules: str) -> bool:
    return all(importlib.util.find_spec(module) is not None for module in modules)


def require(*modules: str, purpose: str) -> None:
    """Raise a ``ConfigError`` naming the extra to install when a module is missing."""
    missing = [module for module in modules if importlib.util.find_spec(module) is None]
    if missing:
        extras = ",".join(sorted({EXTRAS.get(module, module) for module in missing}))
        raise ConfigError(
            f"{purpose} needs {', '.join(missing)}, which is not installed",
            hint=f"Install it with: pip install 'tierflow[{extras}]'",
        )
