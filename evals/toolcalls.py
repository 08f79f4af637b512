"""Running tool-call cases through tierflow's own graph, and what a policy scored.

Every case is one run of ``build_tool_call_graph`` (the task graph's select_tool and
extract_args nodes, with their escalation) on the case's functions, traced to a
``TraceStore`` like any other run. Nothing here prompts a model directly.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from tierflow.agents.budget import BudgetMeter
from tierflow.agents.policy import TierPolicy
from tierflow.agents.tiers import Tiers
from tierflow.evals.bfcl import Case, check, registry_for, request_text
from tierflow.graphs.running import GraphResult, RunSpec, execute
from tierflow.graphs.task import build_tool_call_graph, tool_call_input
from tierflow.memory.traces import TraceStore
from tierflow.records import OnProgress, Progress, slm_share
from tierflow.tools.registry import ToolRegistry

if TYPE_CHECKING:
    from tierflow.graphs.recall import Recall

__all__ = ["decide_call", "CallRecord", "ItemResult", "run_cases", "summarize_items", "percentile"]


@dataclass
class CallRecord:
    node: str
    tier: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    escalated: bool
    reason: str | None
    confidence: float | None


@dataclass
class ItemResult:
    id: str
    category: str
    correct: bool
    valid: bool  # a call whose arguments passed the tool's schema, or a deliberate "no tool"
    output: list[dict[str, Any]]
    error_type: str | None
    detail: str
    latency_ms: float
    run_id: str
    calls: list[CallRecord] = field(default_factory=list)
    select_confidence: float | None = None  # the SLM's confidence in its tool choice, if it chose

    @property
    def escalated(self) -> bool:
        return any(call.escalated for call in self.calls)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide_call(
    request: str,
    tools: ToolRegistry,
    tiers: Tiers,
    store: TraceStore,
    policy: TierPolicy,
    *,
    graph: Any = None,
    local_only: bool = False,
    context: dict[str, Any] | None = None,
    snapshot: dict[str, Any] | None = None,
    raise_bugs: bool = True,
) -> GraphResult:
    """One stored run of the tool-call graph: the call ``policy`` decides for ``request``
    (``context`` adds to the run context, e.g. a ``recall`` or a ``scorer``)."""
    spec = RunSpec(
        policy=policy,
        meter=BudgetMeter(),
        local_only=local_only,
        redactor=None,
        name="tool_call",
        task=request,
        context={"tools": tools, **(context or {})},
        config=None,
        on_event=None,
        snapshot=snapshot or {},
    )
    return execute(
        graph or build_tool_call_graph(),
        dict(tool_call_input(request)),
        spec,
        tiers=tiers,
        store=store,
        raise_bugs=raise_bugs,
    )


def run_case(
    case: Case,
    tiers: Tiers,
    policy: TierPolicy,
    store: TraceStore,
    graph: Any,
    recall: Recall | None = None,
    relevance: Callable[[str, Sequence[str]], list[float]] | None = None,
) -> ItemResult:
    request = request_text(case)
    started = time.perf_counter()
    result = decide_call(
        request,
        registry_for(case),
        tiers,
        store,
        policy,
        graph=graph,
        context={"recall": recall, "relevance": relevance},
        snapshot={"eval_case": case.id},
        raise_bugs=False,  # a bug of ours on one case is counted and shown; the eval goes on
    )
    run_id, final, error = result.run_id, result.state, result.error
    output: list[dict[str, Any]] = []
    latency_ms = (time.perf_counter() - started) * 1000
    tool, arguments = final.get("tool"), final.get("arguments")
    if tool and arguments is not None:
        output = [{tool: arguments}]
    observations = final.get("observations") or []
    deliberate_none = (
        bool(observations) and observations[-1]["tool"] is None and not observations[-1]["error"]
    )
    verdict = check(case, output)
    stored = [c for step in store.get_run(run_id).steps for c in step.model_calls]
    calls = [
        CallRecord(
            node=c.node,
            tier=c.tier,
            prompt_tokens=c.prompt_tokens,
            completion_tokens=c.completion_tokens,
            latency_ms=c.latency_ms,
            escalated=c.escalated,
            reason=c.escalation_reason or c.error,
            confidence=c.confidence,
        )
        for c in stored
    ]
    first_select = next((c for c in calls if c.node == "select_tool" and c.tier == "slm"), None)
    return ItemResult(
        id=case.id,
        category=case.category,
        correct=verdict.correct,
        valid=bool(output) or deliberate_none,
        output=output,
        error_type=verdict.error_type if error is None else _error_kind(error),
        detail=verdict.detail if error is None else error,
        latency_ms=latency_ms,
        run_id=run_id,
        calls=calls,
        select_confidence=first_select.confidence if first_select else None,
    )


def _error_kind(error: str) -> str:
    return "internal_error" if error.startswith("internal error:") else "tier_error"


def run_cases(
    cases: Sequence[Case],
    tiers: Tiers,
    policy: TierPolicy,
    store: TraceStore,
    *,
    stage: str = "cases",
    on_progress: OnProgress | None = None,
    recall: Recall | None = None,
    relevance: Callable[[str, Sequence[str]], list[float]] | None = None,
) -> list[ItemResult]:
    """Run each case in order; with ``recall`` (learning on), later cases see the decisions
    the earlier ones verified. ``on_progress`` hears of each case as ``stage``, ``correct``
    or ``wrong``."""
    graph = build_tool_call_graph()
    results = []
    for case in cases:
        result = run_case(case, tiers, policy, store, graph, recall, relevance)
        results.append(result)
        if on_progress is not None:
            outcome = "correct" if result.correct else "wrong"
            on_progress(Progress(stage, len(results), len(cases), outcome, case.id))
    return results


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0–1) by linear interpolation; ``None`` for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def summarize_items(items: Sequence[ItemResult]) -> dict[str, Any]:
    """The metrics of one policy on a set of items: ``slm_share`` is the share of model
    calls the SLM served (``tierflow.records.slm_share``), ``kept_local`` the share of items
    that never reached the LLM."""
    calls = [call for item in items for call in item.calls]
    llm = [call for call in calls if call.tier == "llm"]
    latencies = [item.latency_ms for item in items]
    reasons = Counter((call.reason or "").split(":")[0] for call in calls if call.escalated)
    return {
        "items": len(items),
        "accuracy": _rate(sum(item.correct for item in items), len(items)),
        "valid_call_rate": _rate(sum(item.valid for item in items), len(items)),
        "escalation_rate": _rate(sum(item.escalated for item in items), len(items)),
        "slm_share": slm_share(len(calls) - len(llm), len(calls)),
        "kept_local": _rate(
            sum(all(call.tier == "slm" for call in item.calls) for item in items), len(items)
        ),
        "model_calls": len(calls),
        "llm_calls": len(llm),
        "llm_prompt_tokens": sum(call.prompt_tokens for call in llm),
        "llm_completion_tokens": sum(call.completion_tokens for call in llm),
        "latency_ms_p50": percentile(latencies, 0.5),
        "latency_ms_p95": percentile(latencies, 0.95),
        "latency_ms_mean": statistics.fmean(latencies) if latencies else None,
        "error_types": dict(Counter(item.error_type for item in items if item.error_type).most_common()),
        "escalation_reasons": dict(reasons.most_common()),
    }
