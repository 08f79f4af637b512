"""The machine's cores, shared by the local models.

The in-process SLM and the embedded LLM server each use every core by default, and two
llama.cpp computations at once on the same cores slow each other many times over (on 2
cores, tenfold). So within one process they take turns (``LOCAL_TURNS``): the chunks of a
parallel map wait for each other's model calls rather than racing them. A tier behind an
endpoint (``TIERFLOW_LLM_BASE_URL``, ``TIERFLOW_SLM_BASE_URL``) computes elsewhere and never
waits. ``TIERFLOW_LOCAL_MODELS_TAKE_TURNS=false`` lets them overlap, for a machine whose
cores are split between them (``TIERFLOW_SLM_THREADS`` and ``TIERFLOW_EMBEDDED_LLM_THREADS``
adding up to at most its cores).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

__all__ = ["LOCAL_TURNS", "turn"]

LOCAL_TURNS = threading.Lock()
"""Held while a local model computes (one per process)."""


def turn(take_turns: bool) -> contextlib.AbstractContextManager[Any]:
    """The context a local model computes in: ``LOCAL_TURNS`` when models take turns."""
    return LOCAL_TURNS if take_turns else contextlib.nullcontext()
