"""Users' documents in the long-term memory: files read by the batch job's readers, cut by
the same token-aware splitter into chunks the embedding model reads whole, and stored in
chromadb with their source, position and content hash. A search ranks chunks by cosine
similarity plus word matches (BM25, see ``memory.lexical``).

Each named collection (``default`` unless told) is a chromadb collection of its own;
one made ``local_only`` keeps that flag, and its chunks never go to the LLM tier. Adding a
file whose content is unchanged does nothing; a changed file replaces its chunks.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, cast

from chromadb.api import ClientAPI
from chromadb.api.models.Collection import Collection
from chromadb.api.types import Embeddable, EmbeddingFunction
from chromadb.errors import NotFoundError
from tierflow.errors import TierflowError
from tierflow.memory.chunks import CHUNK_TOKENS, EmbeddingTokens, chunks_of
from tierflow.memory.embeddings import OfflineEmbeddings, cosine_similarities
from tierflow.memory.lexical import LEXICAL_WEIGHT, Bm25
from tierflow.memory.store import MemoryStoreError, cosine_collection, open_client
from tierflow.records import OnProgress, Progress
from tierflow.tools.readers import (
    DocumentError,
    Inputs,
    ReadDocument,
    name_is_utf8,
    printable_name,
    read_document,
)

__all__ = [
    "CHUNK_TOKENS",
    "DEFAULT_COLLECTION",
    "Chunk",
    "Hit",
    "Added",
    "Source",
    "DocumentMemory",
    "CollectionNameError",
]

CANDIDATES = 20
"""Chunks drawn from each collection by each half of the hybrid search before ranking."""
DEFAULT_COLLECTION = "default"
PREFIX = "documents_"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


class CollectionNameError(TierflowError):
    pass


@dataclass(frozen=True)
class Chunk:
    id: str
    source: str  # the file's absolute path
    position: int  # 0-based, in the file's order
    start: int  # character offset of the chunk's first word in the file's text
    text: str
    content_hash: str  # of the whole file
    collection: str
    local_only: bool


@dataclass(frozen=True)
class Hit:
    chunk: Chunk
    similarity: float  # cosine, 1.0 = same direction
    ranking: float  # what hits are sorted by: similarity plus the weighted, scaled BM25 score


@dataclass(frozen=True)
class Added:
    """What adding one file did."""

    source: str
    status: Literal["added", "replaced", "unchanged", "failed"]
    chunks: int = 0
    reason: str | None = None


@dataclass(frozen=True)
class Source:
    source: str
    collection: str
    chunks: int
    content_hash: str
    local_only: bool
    added_at: str


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise CollectionNameError(
            f"{name!r} is not a collection name",
            hint="Use 1-40 lower-case letters, digits, '-' or '_', starting with a letter or digit.",
        )
    return name


class DocumentMemory:
    """Users' documents in chromadb collections (see the module)."""

    def __init__(
        self, client: ClientAPI, embeddings: OfflineEmbeddings, *, location: Path | None = None
    ) -> None:
        self._client = client
        self.embeddings = embeddings
        self.location = str(location) if location else "the chromadb client given"
        self._counter: EmbeddingTokens | None = None
        self._lexical: dict[str, tuple[str, Bm25]] = {}

    @classmethod
    def open(cls, directory: Path | None, embeddings: OfflineEmbeddings) -> DocumentMemory:
        """The documents persisted in ``directory`` (``None``: in memory, for tests)."""
        try:
            client = open_client(directory)
        except Exception as exc:  # noqa: BLE001 - chromadb raises many kinds; all mean "unusable"
            raise MemoryStoreError(
                f"the memory at {directory} cannot be opened ({type(exc).__name__}: {exc})",
                hint="Check that the folder is readable and writable (TIERFLOW_MEMORY_DIR).",
            ) from exc
        return cls(client, embeddings, location=directory)

    # Collections ------------------------------------------------------------------------
    def _collection(self, name: str, *, create: bool = False, local_only: bool | None = None) -> Collection:
        """The collection ``name`` (``create``: made when missing, local-only if said so);
        given ``local_only``, an existing one must have the same flag."""
        check_name(name)
        function = cast("EmbeddingFunction[Embeddable]", self.embeddings)
        try:
            collection = self._client.get_collection(PREFIX + name, embedding_function=function)
        except NotFoundError:
            if not create:
                raise CollectionNameError(
                    f"there is no collection {name!r}",
                    hint="`tierflow memory list` shows the collections; `tierflow memory add` makes one.",
                ) from None
            collection = cosine_collection(
                self._client, PREFIX + name, self.embeddings, metadata={"local_only": bool(local_only)}
            )
        stored = _local_only(collection)
        if local_only is not None and stored != local_only:
            state = "local-only" if stored else "not local-only"
            raise CollectionNameError(
                f"the collection {name!r} is {state}",
                hint="Add to it with the same --local-only choice, or choose another --collection.",
            )
        return collection

    def collections(self) -> list[str]:
        names = [collection.name for collection in self._client.list_collections()]
        return sorted(name.removeprefix(PREFIX) for name in names if name.startswith(PREFIX))

    def is_local_only(self, name: str) -> bool:
        return _local_only(self._collection(name))

    # Adding -----------------------------------------------------------------------------
    def chunks_of(self, text: str) -> list[tuple[int, str]]:
        """``text`` cut into chunks of at most ``CHUNK_TOKENS``: (character offset, chunk)."""
        if self._counter is None:
            self._counter = EmbeddingTokens(self.embeddings)
        return chunks_of(self._counter, text)

    def add(
        self,
        path: Path,
        *,
        collection: str = DEFAULT_COLLECTION,
        local_only: bool | None = None,
        read: Callable[[Path], ReadDocument] = read_document,
    ) -> Added:
        """Store ``path``'s chunks: nothing when its content is unchanged, its chunks
        replaced when it changed; a file that cannot be read is ``failed`` with the reason.
        ``local_only``: a new collection's flag (an existing one must match; ``None``: as it is).
        ``read``: how the file is read (``BoundedReader().read`` puts a deadline on it)."""
        source = str(Path(path).absolute())
        if not name_is_utf8(source):  # no store takes it: the file fails alone
            shown = printable_name(source)
            return Added(shown, "failed", reason=f"name_not_utf8: {shown} has a name that is not valid UTF-8")
        store = self._collection(collection, create=True, local_only=local_only)
        try:
            document = read(Path(path))
        except DocumentError as exc:
            return Added(source, "failed", reason=f"{exc.reason}: {exc.message}")
        existing = store.get(where={"source": source}, include=["metadatas"])
        hashes = {str(m.get("content_hash")) for m in existing["metadatas"] or []}
        if hashes == {document.content_hash}:
            return Added(source, "unchanged", chunks=len(existing["ids"]))
        chunks = self.chunks_of(document.text)
        added_at = datetime.now(UTC).isoformat(timespec="seconds")
        ids = [_chunk_id(collection, source, position) for position in range(len(chunks))]
        metadatas: list[dict[str, str | int | bool]] = [
            {
                "source": source,
                "position": position,
                "start": start,
                "content_hash": document.content_hash,
                "chunk_hash": hashlib.sha256(piece.encode()).hexdigest()[:16],
                "added_at": added_at,
                "kind": document.kind,
            }
            for position, (start, piece) in enumerate(chunks)
        ]
        try:
            if existing["ids"]:
                store.delete(ids=existing["ids"])
            if chunks:
                vectors = self.embeddings.embed([piece for _, piece in chunks])
                store.add(
                    ids=ids,
                    documents=[piece for _, piece in chunks],
                    embeddings=vectors,
                    metadatas=cast(Any, metadatas),
                )
            self._changed(store)
        except Exception as exc:  # noqa: BLE001 - any storage failure
            raise MemoryStoreError(
                f"could not store {source} in the memory at {self.location} ({type(exc).__name__}: {exc})",
                hint="Check that the memory folder is writable and has free space, then add it again.",
            ) from exc
        return Added(source, "replaced" if existing["ids"] else "added", chunks=len(chunks))

    def add_all(
        self,
        paths: Iterable[Path],
        *,
        collection: str = DEFAULT_COLLECTION,
        local_only: bool | None = None,
        on_progress: OnProgress | None = None,
        read: Callable[[Path], ReadDocument] = read_document,
    ) -> list[Added]:
        """``add`` for each of ``paths``; ``on_progress`` hears of each file as it is done
        (stage ``adding``, outcome ``added``, ``replaced``, ``unchanged`` or ``failed``)."""
        files = list(paths)
        results = []
        for path in files:
            refused = paths.refusal(path) if isinstance(paths, Inputs) else None
            if refused is not None:  # a link out of the folder it was found in: not read
                source = printable_name(Path(path).absolute())
                result = Added(source, "failed", reason=f"{refused.reason}: {refused.message}")
            else:
                result = self.add(path, collection=collection, local_only=local_only, read=read)
            results.append(result)
            if on_progress is not None:
                detail = result.reason or "" if result.status == "failed" else f"{result.chunks} chunk(s)"
                done = len(results)
                on_progress(Progress("adding", done, len(files), result.status, result.source, detail))
        return results

    # Reading ----------------------------------------------------------------------------
    def search(self, query: str, *, k: int = 5, collections: Sequence[str] | None = None) -> list[Hit]:
        """The ``k`` chunks that best match ``query`` over ``collections`` (default: all):
        ranked by cosine similarity plus the scaled BM25 score (see ``memory.lexical``)."""
        names = list(collections) if collections is not None else self.collections()
        if k < 1:
            return []
        vector = self.embeddings.embed([query])
        pool = max(k, CANDIDATES)
        found: list[tuple[Chunk, float, float]] = []
        for name in names:
            store = self._collection(name)
            if size := store.count():
                found.extend(self._candidates(store, name, size, query, vector, pool))
        best = max((lexical for _, _, lexical in found), default=0.0) or 1.0
        hits = [
            Hit(chunk, cosine, cosine + LEXICAL_WEIGHT * lexical / best) for chunk, cosine, lexical in found
        ]
        hits.sort(key=lambda hit: -hit.ranking)
        return hits[:k]

    def _candidates(
        self, store: Collection, name: str, size: int, query: str, vector: Any, pool: int
    ) -> list[tuple[Chunk, float, float]]:
        """One collection's ``pool`` nearest chunks and ``pool`` best BM25 matches, each with
        its cosine similarity and its BM25 score."""
        local_only = _local_only(store)
        lexical = self._lexical_index(store).top(query, pool)
        scores = dict(lexical)
        near = store.query(
            query_embeddings=vector,
            n_results=min(pool, size),
            include=["documents", "metadatas", "distances"],
        )
        documents, metadatas, distances = near["documents"], near["metadatas"], near["distances"]
        assert documents is not None and metadatas is not None and distances is not None
        ids, similarities = near["ids"][0], [1.0 - float(distance) for distance in distances[0]]
        texts, metas = list(documents[0]), list(metadatas[0])
        nearest = set(ids)
        missing = [i for i, _ in lexical if i not in nearest]
        if missing:  # word matches beyond the nearest: their cosine from the stored vectors
            rows = store.get(ids=missing, include=["documents", "metadatas", "embeddings"])
            assert rows["documents"] is not None and rows["metadatas"] is not None
            assert rows["embeddings"] is not None
            ids = [*ids, *rows["ids"]]
            similarities += [float(s) for s in cosine_similarities(vector[0], rows["embeddings"])]
            texts += rows["documents"]
            metas += rows["metadatas"]
        return [
            (_chunk(i, text, dict(meta), name, local_only), similarity, scores.get(i, 0.0))
            for i, text, meta, similarity in zip(ids, texts, metas, similarities, strict=True)
        ]

    def _lexical_index(self, store: Collection) -> Bm25:
        """The collection's BM25 index, built again when the collection has changed."""
        revision = str((store.metadata or {}).get("revision"))
        cached = self._lexical.get(store.name)
        if cached is None or cached[0] != revision:
            rows = store.get(include=["documents"])
            cached = (revision, Bm25(rows["ids"], rows["documents"] or []))
            self._lexical[store.name] = cached
        return cached[1]

    def _changed(self, store: Collection) -> None:
        """Mark ``store`` changed, so every process's BM25 index of it is rebuilt."""
        store.modify(metadata={**(store.metadata or {}), "revision": uuid.uuid4().hex})

    def sources(self) -> list[Source]:
        """Every stored file, per collection."""
        found: list[Source] = []
        for name in self.collections():
            store = self._collection(name)
            local_only = _local_only(store)
            by_source: dict[str, list[dict[str, Any]]] = {}
            for metadata in store.get(include=["metadatas"])["metadatas"] or []:
                by_source.setdefault(str(metadata["source"]), []).append(dict(metadata))
            for source, rows in sorted(by_source.items()):
                found.append(
                    Source(
                        source,
                        name,
                        len(rows),
                        str(rows[0]["content_hash"]),
                        local_only,
                        str(rows[0]["added_at"]),
                    )
                )
        return found

    def forget(self, source: str) -> int:
        """Remove every chunk of ``source`` (a path, made absolute) from every collection."""
        target = str(Path(source).absolute())
        removed = 0
        for name in self.collections():
            store = self._collection(name)
            ids = store.get(where={"source": target}, include=[])["ids"]
            if ids:
                store.delete(ids=ids)
                self._changed(store)
                removed += len(ids)
        return removed

    def forget_all(self) -> int:
        removed = 0
        for name in self.collections():
            removed += self._collection(name).count()
            self._client.delete_collection(PREFIX + name)
        return removed


def _local_only(collection: Collection) -> bool:
    return bool((collection.metadata or {}).get("local_only", False))


def _chunk_id(collection: str, source: str, position: int) -> str:
    return f"{collection}:{hashlib.sha256(source.encode()).hexdigest()[:16]}:{position}"


def _chunk(chunk_id: str, text: str, metadata: dict[str, Any], collection: str, local_only: bool) -> Chunk:
    return Chunk(
        id=chunk_id,
        source=str(metadata["source"]),
        position=int(metadata["position"]),
        start=int(metadata["start"]),
        text=text,
        content_hash=str(metadata["content_hash"]),
        collection=collection,
        local_only=local_only,
    )
