"""A memory of verified tool-call decisions, in chromadb, for the SLM to learn from.

Each decision is stored once (its id is a hash of the request, the tools offered and the
call), embedded by its request, with scalar metadata only (lists and dicts as JSON). A store
that cannot be opened or read raises ``MemoryStoreError``; a failed write raises
``MemoryWriteError``, which callers catch to keep the run going without learning from it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, cast, get_args

from chromadb.api import ClientAPI
from chromadb.api.models.Collection import Collection
from tierflow.errors import TierflowError
from tierflow.memory.embeddings import OfflineEmbeddings, Relevance
from tierflow.memory.store import MemoryStoreError, cosine_collection, open_client

__all__ = [
    "COLLECTION",
    "Provenance",
    "VerifiedDecision",
    "Match",
    "DecisionMemory",
    "MemoryStoreError",
    "MemoryWriteError",
    "PlanMemory",
    "PastPlan",
    "OutputMemory",
    "PastOutput",
]

COLLECTION = "tierflow_decisions"
Provenance = Literal["llm", "llm_corrected", "slm_confirmed"]
"""``llm``: the LLM made it; ``llm_corrected``: the LLM replaced an SLM decision;
``slm_confirmed``: an SLM decision that a check confirmed."""


class MemoryWriteError(TierflowError):
    """A decision could not be stored; the run goes on without learning from it."""


@dataclass(frozen=True)
class VerifiedDecision:
    """A tool call (or "no tool fits": ``tool=None``) known to be right for ``request``."""

    request: str
    tools: tuple[str, ...]  # the tool names offered
    tool: str | None
    arguments: dict[str, Any] | None
    provenance: Provenance
    run_id: str | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        object.__setattr__(self, "tools", tuple(self.tools))
        if self.provenance not in get_args(Provenance):
            raise ValueError(f"provenance must be one of {get_args(Provenance)}, not {self.provenance!r}")
        if self.tool is not None and self.tool not in self.tools:
            raise ValueError(f"tool {self.tool!r} is not among the tools offered {self.tools}")
        if self.tool is None and self.arguments is not None:
            raise ValueError("a decision with no tool has no arguments")

    @property
    def id(self) -> str:
        """The same request, tools offered (in any order) and call give the same id."""
        key = [self.request, sorted(set(self.tools)), self.tool, self.arguments]
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]

    def metadata(self) -> dict[str, str]:
        return {
            "tools": json.dumps(list(self.tools)),
            "tool": self.tool or "",
            "arguments": json.dumps(self.arguments, sort_keys=True),
            "provenance": self.provenance,
            "run_id": self.run_id or "",
            "created_at": self.created_at.isoformat(),
        }

    @classmethod
    def from_stored(cls, request: str, metadata: dict[str, Any]) -> VerifiedDecision:
        return cls(
            request=request,
            tools=tuple(json.loads(metadata["tools"])),
            tool=metadata["tool"] or None,
            arguments=json.loads(metadata["arguments"]),
            provenance=metadata["provenance"],
            run_id=metadata["run_id"] or None,
            created_at=datetime.fromisoformat(metadata["created_at"]),
        )


@dataclass(frozen=True)
class Match:
    """A past decision near a request. ``shared_tools``: the decision's tools that are also
    offered now (empty when no tools were given to ``similar``)."""

    decision: VerifiedDecision
    similarity: float  # cosine, 1.0 = same direction
    shared_tools: frozenset[str] = frozenset()

    @property
    def tool_offered(self) -> bool:
        """Whether the past call could be made again now: no tool, or its tool is offered."""
        return self.decision.tool is None or self.decision.tool in self.shared_tools


class DecisionMemory:
    """Verified decisions in a chromadb collection (cosine space), embedded by request."""

    def __init__(
        self,
        client: ClientAPI,
        embeddings: OfflineEmbeddings,
        *,
        collection: str = COLLECTION,
        location: Path | None = None,  # the store's folder, named in messages
    ) -> None:
        self._client = client
        self.embeddings = embeddings
        self._name = collection
        self.location = str(location) if location else "the chromadb client given"
        self.fix = _fix(location)
        self.relevance = Relevance(embeddings)
        self._collection = self.open_collection(collection)

    @classmethod
    def open(
        cls, directory: Path, embeddings: OfflineEmbeddings, *, collection: str = COLLECTION
    ) -> DecisionMemory:
        """The memory persisted in ``directory`` (created when missing)."""
        try:
            client = open_client(directory)
        except Exception as exc:  # noqa: BLE001 - see __init__
            raise _store_error(str(directory), _fix(directory), "cannot be opened", exc) from exc
        return cls(client, embeddings, collection=collection, location=directory)

    def open_collection(self, name: str) -> Collection:
        """A cosine-space collection of this store, embedded like the decisions (the plans
        live in one too); ``MemoryStoreError`` if it cannot be opened."""
        try:
            return cosine_collection(self._client, name, self.embeddings)
        except Exception as exc:  # noqa: BLE001 - chromadb raises many kinds; all mean "unusable"
            raise _store_error(self.location, self.fix, "cannot be opened", exc) from exc

    def add(self, decision: VerifiedDecision) -> str:
        """Store ``decision`` unless it is there already (the first copy stays); return its id."""
        vector = self.embeddings.embed([decision.request])
        try:
            if not self._collection.get(ids=[decision.id], include=[])["ids"]:
                self._collection.add(
                    ids=[decision.id],
                    documents=[decision.request],
                    embeddings=vector,
                    metadatas=[decision.metadata()],
                )
        except Exception as exc:  # noqa: BLE001 - any storage failure means "not learned"
            raise self.write_error("a decision", exc) from exc
        return decision.id

    def similar(self, request: str, k: int = 3, tools: Sequence[str] | None = None) -> list[Match]:
        """The ``k`` stored decisions whose requests are nearest to ``request``, nearest first.

        With ``tools``, each match says which of its tools are offered now; filtering is the
        caller's choice.
        """
        vector = self.embeddings.embed([request])
        try:
            size = self._collection.count()
            if size == 0 or k < 1:
                return []
            found = self._collection.query(
                query_embeddings=vector,
                n_results=min(k, size),
                include=["documents", "metadatas", "distances"],
            )
        except Exception as exc:  # noqa: BLE001 - see __init__
            raise _store_error(self.location, self.fix, "cannot be read", exc) from exc
        offered = frozenset(tools or ())
        documents, metadatas, distances = found["documents"], found["metadatas"], found["distances"]
        assert documents is not None and metadatas is not None and distances is not None
        matches = []
        for request_text, metadata, distance in zip(documents[0], metadatas[0], distances[0], strict=True):
            decision = VerifiedDecision.from_stored(request_text, cast(dict[str, Any], metadata))
            shared = offered.intersection(decision.tools)
            matches.append(Match(decision, 1.0 - float(distance), shared))
        return matches

    def count(self) -> int:
        try:
            return self._collection.count()
        except Exception as exc:  # noqa: BLE001 - see __init__
            raise _store_error(self.location, self.fix, "cannot be read", exc) from exc

    def clear(self) -> None:
        """Forget every decision."""
        try:
            self._client.delete_collection(self._name)
            self._collection = self.open_collection(self._name)
        except Exception as exc:  # noqa: BLE001 - see add
            raise MemoryWriteError(
                f"could not clear the memory at {self.location} ({type(exc).__name__}: {exc})",
                hint=self.fix,
            ) from exc

    def write_error(self, what: str, exc: Exception) -> MemoryWriteError:
        """Storing ``what`` failed: the run goes on without learning it."""
        return MemoryWriteError(
            f"could not store {what} in the memory at {self.location} ({type(exc).__name__}: {exc})",
            hint=f"The run goes on without learning it; check that {self.location} is writable "
            "and has free space.",
        )

    def shortlist(self, request: str, tools: Sequence[tuple[str, str]], k: int) -> list[str]:
        """The names of the ``k`` tools whose ``name: description`` is nearest to ``request``."""
        if not tools or k < 1:
            return []
        scores = self.relevance(request, [f"{name}: {description}" for name, description in tools])
        ranked = sorted(range(len(tools)), key=lambda i: -scores[i])  # stable: ties keep order
        return [tools[i][0] for i in ranked[:k]]


def _fix(location: Path | None) -> str:
    if location is None:
        return ""
    return (
        f"Run `tierflow memory rebuild --fresh`: it moves {location} aside and refills a new memory "
        "from the stored runs."
    )


def _store_error(location: str, fix: str, what: str, exc: Exception) -> MemoryStoreError:
    return MemoryStoreError(
        f"the decision memory at {location} {what} ({type(exc).__name__}: {exc})", hint=fix
    )


PLAN_COLLECTION = "tierflow_plans"


@dataclass(frozen=True)
class PastPlan:
    """A successful run's plan, near a new task."""

    task: str
    steps: list[str]
    run_id: str | None
    similarity: float


class PlanMemory:
    """The plans of successful task runs, embedded by task, in the decision memory's store."""

    def __init__(self, memory: DecisionMemory) -> None:
        self._memory = memory
        self._collection = memory.open_collection(PLAN_COLLECTION)

    def add(self, task: str, steps: Sequence[str], run_id: str | None) -> None:
        """Store a plan (once per task and steps); ``MemoryWriteError`` if it cannot be."""
        key = hashlib.sha256(json.dumps([task, list(steps)]).encode()).hexdigest()[:32]
        vector = self._memory.embeddings.embed([task])
        try:
            if not self._collection.get(ids=[key], include=[])["ids"]:
                metadata = {"steps": json.dumps(list(steps)), "run_id": run_id or ""}
                self._collection.add(ids=[key], documents=[task], embeddings=vector, metadatas=[metadata])
        except Exception as exc:  # noqa: BLE001 - see DecisionMemory.add
            raise self._memory.write_error("a plan", exc) from exc

    def nearest(self, task: str) -> PastPlan | None:
        vector = self._memory.embeddings.embed([task])
        try:
            if self._collection.count() == 0:
                return None
            found = self._collection.query(
                query_embeddings=vector, n_results=1, include=["documents", "metadatas", "distances"]
            )
        except Exception as exc:  # noqa: BLE001 - see DecisionMemory.similar
            raise _store_error(self._memory.location, self._memory.fix, "cannot be read", exc) from exc
        hit = _nearest_hit(found)
        if hit is None:
            return None
        text, metadata, similarity = hit
        steps = json.loads(str(metadata["steps"]))
        return PastPlan(text, steps, str(metadata["run_id"]) or None, similarity)


def _nearest_hit(found: Any) -> tuple[str, dict[str, Any], float] | None:
    """The first result of a one-query chromadb ``query``: its document, metadata and cosine
    similarity (None when nothing came back)."""
    documents, metadatas, distances = found["documents"], found["metadatas"], found["distances"]
    assert documents is not None and metadatas is not None and distances is not None
    if not documents[0]:
        return None
    return documents[0][0], cast(dict[str, Any], metadatas[0][0]), 1.0 - float(distances[0][0])


OUTPUT_COLLECTION = "tierflow_outputs"


@dataclass(frozen=True)
class PastOutput:
    """A verified output of a node, for an input this similar to the one at hand."""

    source: str
    output: Any
    verified_by: str
    similarity: float


class OutputMemory:
    """Verified outputs of kit steps (an LLM's output, or an SLM output the LLM agreed with),
    per graph and node, embedded by the text the output rests on, in the decision memory's
    store. A step's SLM output is compared with the nearest one of its node (a signal)."""

    def __init__(self, memory: DecisionMemory) -> None:
        self._memory = memory
        self._collection = memory.open_collection(OUTPUT_COLLECTION)

    @staticmethod
    def _where(graph: str, node: str) -> dict[str, Any]:
        return {"$and": [{"graph": graph}, {"node": node}]}

    def add(self, graph: str, node: str, source: str, output: Any, verified_by: str) -> None:
        """Store an output (once per node, input and output); ``MemoryWriteError`` if it cannot be."""
        value = json.dumps(output, ensure_ascii=False, sort_keys=True, default=str)
        key = hashlib.sha256(json.dumps([graph, node, source, value]).encode()).hexdigest()[:32]
        try:
            if self._collection.get(ids=[key], include=[])["ids"]:
                return
            vector = self._memory.embeddings.embed([source])
            metadata = {"graph": graph, "node": node, "output": value, "verified_by": verified_by}
            self._collection.add(ids=[key], documents=[source], embeddings=vector, metadatas=[metadata])
        except Exception as exc:  # noqa: BLE001 - see DecisionMemory.add
            raise self._memory.write_error("a verified output", exc) from exc

    def keys(self, graph: str) -> set[str]:
        """The keys of the graph's stored outputs (to ``forget`` all stored after them)."""
        try:
            return set(self._collection.get(where={"graph": graph}, include=[])["ids"])
        except Exception as exc:  # noqa: BLE001 - see DecisionMemory.similar
            raise _store_error(self._memory.location, self._memory.fix, "cannot be read", exc) from exc

    def forget(self, graph: str, *, keep: set[str]) -> int:
        """Drop the graph's stored outputs whose keys are not in ``keep``; how many went."""
        drop = sorted(self.keys(graph) - keep)
        try:
            if drop:
                self._collection.delete(ids=drop)
        except Exception as exc:  # noqa: BLE001 - see DecisionMemory.add
            raise self._memory.write_error("a verified output", exc) from exc
        return len(drop)

    def nearest(self, graph: str, node: str, source: str) -> PastOutput | None:
        """The node's verified output whose input is nearest to ``source`` (none stored: None;
        the embedding model is not asked then)."""
        where = self._where(graph, node)
        try:
            if not self._collection.get(where=where, limit=1, include=[])["ids"]:
                return None
            found = self._collection.query(
                query_embeddings=self._memory.embeddings.embed([source]),
                n_results=1,
                where=where,
                include=["documents", "metadatas", "distances"],
            )
        except Exception as exc:  # noqa: BLE001 - see DecisionMemory.similar
            raise _store_error(self._memory.location, self._memory.fix, "cannot be read", exc) from exc
        hit = _nearest_hit(found)
        if hit is None:
            return None
        text, metadata, similarity = hit
        return PastOutput(text, json.loads(str(metadata["output"])), str(metadata["verified_by"]), similarity)
