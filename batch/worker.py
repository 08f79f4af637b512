"""What a batch worker does with one document: run its map-reduce graph as a traced run and
report the outcome. The same code runs in the driver's process, in a local worker process
and in a Ray actor; a worker outside the driver returns the run's trace writes with the
outcome, and the driver, which owns the database, stores them."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tierflow.agents.cores import TakingTurns
from tierflow.agents.policy import TierPolicy
from tierflow.agents.tiers import Tiers
from tierflow.graphs.summaries import document_graph
from tierflow.memory.traces import TraceStore
from tierflow.memory.traces.tracelog import TraceLog, TraceWrite
from tierflow.records import ModelCallRecord

if TYPE_CHECKING:
    from tierflow.settings import Settings

__all__ = [
    "SummaryOptions",
    "DocumentTask",
    "DocumentOutcome",
    "WorkerConfig",
    "Worker",
    "summarize_document",
]


@dataclass(frozen=True)
class SummaryOptions:
    """How each document is summarized (part of the job's signature)."""

    policy: TierPolicy = field(default_factory=TierPolicy)
    local_only: bool = False
    chunk_tokens: int = 1500
    max_sentences: int = 6
    watch: bool = True  # stop an SLM summary that copies, loops or runs over while it is written

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> SummaryOptions:
        """The options ``signature_data`` wrote (a stored job's)."""
        defaults = cls()
        return cls(
            policy=TierPolicy.model_validate(data.get("policy") or {}),
            local_only=bool(data.get("local_only", defaults.local_only)),
            chunk_tokens=int(data.get("chunk_tokens", defaults.chunk_tokens)),
            max_sentences=int(data.get("max_sentences", defaults.max_sentences)),
            watch=bool(data.get("watch", defaults.watch)),
        )

    def signature_data(self) -> dict[str, Any]:
        data = {
            "policy": self.policy.model_dump(),
            "local_only": self.local_only,
            "chunk_tokens": self.chunk_tokens,
            "max_sentences": self.max_sentences,
        }
        if not self.watch:  # named only when off: jobs from before the watch keep their signature
            data["watch"] = False
        return data


@dataclass(frozen=True)
class DocumentTask:
    document_id: int
    name: str
    text: str


@dataclass
class DocumentOutcome:
    """How one document ended: its summary, or why it failed; what it cost."""

    document_id: int
    ok: bool
    run_id: str | None
    summary: str | None = None
    reason: str | None = None
    chunks: int = 0
    slm_calls: int = 0
    llm_calls: int = 0
    llm_tokens: int = 0
    seconds: float = 0.0
    slm_seconds: float = 0.0
    llm_seconds: float = 0.0
    escalations: dict[str, int] = field(default_factory=dict)  # why SLM outputs went to the LLM
    trace: list[TraceWrite] = field(default_factory=list)  # for the driver to store


def summarize_document(
    task: DocumentTask,
    options: SummaryOptions,
    *,
    tiers: Tiers,
    settings: Settings,
    store: TraceStore | None,
) -> DocumentOutcome:
    """Summarize one document. ``store``: the driver's trace store when this runs in the
    driver's process; ``None`` in a worker, whose trace comes back in the outcome."""
    from tierflow.graphs.running import run_graph

    log = TraceLog()
    traced = store.with_listener(log) if store is not None else TraceStore.in_memory(listeners=[log])
    started = time.perf_counter()
    run_id: str | None
    try:
        result = run_graph(
            document_graph(max_sentences=options.max_sentences, watch=options.watch),
            {"document": task.name, "text": task.text},
            policy=options.policy,
            local_only=options.local_only,
            tiers=tiers,
            store=traced,
            prices=settings.prices(),
            snapshot=settings.masked(),
            name="summarize_document",
            task=f"summarize {task.name}",
            context={"chunk_tokens": options.chunk_tokens},
        )
        ok, run_id, state = result.ok, result.run_id, result.state
        reason = None if ok else (result.error or result.status)
    except Exception as exc:  # a bug in a node: this document fails, the job goes on
        run_id, ok, state = log.run_id, False, {}
        reason = f"internal error: {type(exc).__name__}: {exc}"
    calls = log.model_calls()
    llm = [call for call in calls if call.tier == "llm"]
    return DocumentOutcome(
        document_id=task.document_id,
        ok=ok,
        run_id=run_id,
        summary=state.get("summary") if ok else None,
        reason=reason,
        chunks=int(state.get("chunks") or 0),
        slm_calls=len(calls) - len(llm),
        llm_calls=len(llm),
        llm_tokens=sum(call.prompt_tokens + call.completion_tokens for call in llm),
        seconds=round(time.perf_counter() - started, 3),
        slm_seconds=round(sum(call.latency_ms for call in calls if call.tier == "slm") / 1000, 3),
        llm_seconds=round(sum(call.latency_ms for call in llm) / 1000, 3),
        escalations=escalation_counts(calls),
        trace=[] if store is not None else log.writes,
    )


@dataclass(frozen=True)
class WorkerConfig:
    """What a worker needs to build its tiers once: the settings (with the LLM endpoint the
    driver serves), and, for tests, a function that makes the tiers instead.
    ``llm_takes_turns``: the LLM endpoint is the driver's embedded server, on this machine's
    cores, and this worker alone calls it, so its calls take turns with the worker's SLM as
    they would in the driver's process (``tierflow.agents.cores``)."""

    settings: Settings
    options: SummaryOptions
    make_tiers: Callable[[Settings], Tiers] | None = None
    llm_takes_turns: bool = False


class Worker:
    """One worker's tiers (the SLM loaded once), summarizing documents one at a time."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self._tiers: Tiers | None = None

    @property
    def tiers(self) -> Tiers:
        if self._tiers is None:
            make = self.config.make_tiers or _build_tiers
            tiers = make(self.config.settings)
            if self.config.llm_takes_turns:
                tiers = Tiers(slm=tiers.slm, llm=TakingTurns(tiers.llm))
            self._tiers = tiers
        return self._tiers

    def summarize(self, task: DocumentTask) -> DocumentOutcome:
        return summarize_document(
            task, self.config.options, tiers=self.tiers, settings=self.config.settings, store=None
        )


def _build_tiers(settings: Settings) -> Tiers:
    from tierflow.app import build_tiers

    return build_tiers(settings)  # a tier the policy never calls is never built


def escalation_counts(calls: list[ModelCallRecord]) -> dict[str, int]:
    """How many SLM outputs went to the LLM, by reason (its code, before the colon)."""
    reasons = Counter(
        (call.escalation_reason or "").split(":")[0]
        for call in calls
        if call.tier == "slm" and call.escalated
    )
    return dict(reasons.most_common())
