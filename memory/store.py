"""The one chromadb store behind tierflow's long-term memory: verified decisions, past
plans and users' documents live in separate collections of one client, persisted in
``settings.resolved_memory_dir()`` (an in-memory client in tests). Collections use cosine
space and the offline MiniLM embeddings; nothing is downloaded at run time."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import chromadb
from chromadb.api import ClientAPI
from chromadb.api.models.Collection import Collection
from chromadb.api.types import Embeddable, EmbeddingFunction
from chromadb.config import Settings
from tierflow.errors import TierflowError
from tierflow.memory.embeddings import OfflineEmbeddings

__all__ = ["MemoryStoreError", "open_client", "cosine_collection"]


class MemoryStoreError(TierflowError):
    """The memory's store cannot be opened or read (corrupt, unreadable)."""


def open_client(directory: Path | None) -> ClientAPI:
    """The store persisted in ``directory`` (created when missing), or one in memory."""
    settings = Settings(anonymized_telemetry=False)
    if directory is None:
        return chromadb.EphemeralClient(settings=settings)
    directory.mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(path=directory, settings=settings)


def cosine_collection(
    client: ClientAPI, name: str, embeddings: OfflineEmbeddings, metadata: dict[str, Any] | None = None
) -> Collection:
    """A cosine-space collection embedded with the offline MiniLM (created when missing)."""
    # chromadb types collections' functions as taking documents or images; this one takes documents
    function = cast("EmbeddingFunction[Embeddable]", embeddings)
    return client.get_or_create_collection(
        name, embedding_function=function, configuration={"hnsw": {"space": "cosine"}}, metadata=metadata
    )
