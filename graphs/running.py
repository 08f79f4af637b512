"""``run_graph``: run any compiled LangGraph graph with tierflow's tiers, policy, budget,
privacy and tracing, stored as a run like the built-in ones (console, ``runs list/show``,
replay).

The run row is created before the first node and closed in ``finally``: a finished run is
``succeeded``; a failure of a tier, a step or the configuration is ``failed`` with its
message; a run stopped by its budget is ``budget_exceeded``; Ctrl-C leaves it
``interrupted``. Every finished step stays in the trace, and the state reached so far is
returned whatever the outcome.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from pydantic_core import to_jsonable_python
from tierflow.agents.budget import Budget, BudgetMeter, Prices
from tierflow.agents.policy import TierPolicy
from tierflow.agents.redaction import REDACTION_KINDS, Redactor
from tierflow.agents.tiers import Tiers, resolved
from tierflow.errors import BudgetExceededError, RunCancelledError, TierflowError
from tierflow.graphs.context import TierContext
from tierflow.graphs.introspect import check_graph, check_input, check_policy
from tierflow.memory.traces import TraceStore
from tierflow.memory.traces.recorder import RunRecorder
from tierflow.records import Event, RunFinished, RunStarted, RunStatus

__all__ = ["run_graph", "GraphResult", "RunSpec", "execute"]


@dataclass(frozen=True)
class GraphResult:
    """What a run ended with: its id and status, the state reached, and why it stopped."""

    run_id: str
    status: RunStatus
    state: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    hint: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "status": self.status,
            "state": to_jsonable_python(self.state, fallback=str),
            "error": self.error,
            "hint": self.hint,
        }


START_LLM_SERVER = "start_llm_server"


def _start_servers(recorder: RunRecorder, tiers: Tiers, policy: TierPolicy, local_only: bool) -> None:
    """Build the models of the tiers the run uses (a missing model fails it here, before
    any step), then start an embedded LLM server as a step of its own, so that its start
    shows in the trace and the timeline rather than inside the first LLM step."""
    used = {"slm"} if local_only else policy.tiers_used()
    for tier in ("slm", "llm"):
        if tier in used:
            resolved(tiers.model(tier))
    llm = tiers.llm
    if "llm" not in used or not getattr(llm, "needs_start", False):
        return
    with recorder.step(START_LLM_SERVER) as handle:
        started = time.perf_counter()
        tiers.load("llm")
        seconds = time.perf_counter() - started
        handle.summary = f"started the embedded LLM server ({llm.name}) in {seconds:.1f} s"


def _answer_text(state: Mapping[str, Any]) -> str:
    answer = state.get("answer")
    if isinstance(answer, str):
        return answer
    return json.dumps(to_jsonable_python(dict(state), fallback=str), ensure_ascii=False, indent=1)


def redactor_for(redact: bool | Iterable[str]) -> Redactor | None:
    if redact is False:
        return None
    return Redactor(REDACTION_KINDS if redact is True else redact)


def run_graph(
    graph: Any,
    input: Mapping[str, Any],
    *,
    tiers: Tiers,
    store: TraceStore,
    policy: TierPolicy | str | None = None,
    budget: Budget | None = None,
    prices: Prices | None = None,
    local_only: bool = False,
    redact: bool | Iterable[str] = False,
    name: str | None = None,
    task: str | None = None,
    context: Mapping[str, Any] | None = None,
    config: RunnableConfig | None = None,
    on_event: Callable[[Event], None] | None = None,
    resume: str | None = None,
    cancel: threading.Event | None = None,
    snapshot: Mapping[str, Any] | None = None,
) -> GraphResult:
    """Run compiled ``graph`` on ``input`` as a traced tierflow run, on the given ``tiers``
    and ``store`` (``tierflow.run_graph`` is the same with both built from the settings).

    ``policy``: a ``TierPolicy`` or a preset name (default: ``tiered``). ``budget`` caps LLM
    tokens or cost (at ``prices``); ``local_only`` keeps every step on the SLM; ``redact``
    (True, or kinds such as ``["email", "name"]``) replaces personal values before any LLM
    call. ``context``: values for fields of the graph's context class (``TierContext`` or a
    subclass: ``documents``, ``relevance``, your own). ``name`` and ``task`` label the run in
    the trace, ``snapshot`` is the settings it records. ``resume``: the id of a stopped run
    of this graph (compiled with a checkpointer) to continue from its last checkpoint;
    ``input`` is then ignored and finished steps are not run again. ``cancel``: an event
    that, once set (from another thread), stops the run before its next step, as
    ``interrupted`` with its finished steps stored.
    """
    check_graph(graph)
    if resume is None:
        check_input(graph, input)
    chosen = TierPolicy.preset(policy) if isinstance(policy, str) else policy or TierPolicy()
    check_policy(graph, chosen)
    spec = RunSpec(
        policy=chosen,
        meter=BudgetMeter(budget, prices or Prices()),
        local_only=local_only,
        redactor=redactor_for(redact),
        name=name or _graph_name(graph),
        task=task,
        context=context or {},
        config=config,
        on_event=on_event,
        snapshot=snapshot or {},
        resume=resume,
        cancel=cancel,
    )
    return execute(graph, dict(input), spec, tiers=tiers, store=store)


def _check_resumable(graph: Any, run_id: str) -> None:
    """A run can continue when its graph keeps checkpoints, one exists, and work is left."""
    from tierflow.errors import RunNotResumableError

    if getattr(graph, "checkpointer", None) is None:
        raise RunNotResumableError(
            f"run {run_id} cannot be resumed: its graph keeps no checkpoints",
            hint="Compile the graph with a checkpointer (graph.compile(checkpointer=...)), or run it again.",
        )
    saved = graph.get_state({"configurable": {"thread_id": run_id}})
    if not saved.values and not saved.next:
        raise RunNotResumableError(
            f"run {run_id} has no checkpoint to continue from (it stopped before its first step ended)",
            hint="Run the task again.",
        )
    # A task that finished but whose step's checkpoint was never written leaves its result as a
    # pending write: the run goes on from there, though ``next`` lists no step to run.
    if not saved.next and not any(task.result is not None for task in saved.tasks):
        raise RunNotResumableError(
            f"run {run_id} has no step left to run", hint="`tierflow runs show` has its result."
        )


def _graph_name(graph: Any) -> str:
    """The graph's own name (``compile(name=...)``), or ``graph`` for LangGraph's default."""
    named = getattr(graph, "name", None)
    return str(named) if named and named != "LangGraph" else "graph"


def _context_class(graph: Any) -> type[TierContext]:
    schema = getattr(graph, "context_schema", None)
    return schema if isinstance(schema, type) and issubclass(schema, TierContext) else TierContext


@dataclass(frozen=True, kw_only=True)
class RunSpec:
    """How one run goes and how it is labelled: everything ``execute`` needs besides the
    graph, its input, the tiers and the store (``run_graph``'s options, resolved)."""

    policy: TierPolicy = field(default_factory=TierPolicy)
    meter: BudgetMeter = field(default_factory=BudgetMeter)
    local_only: bool = False
    redactor: Redactor | None = None
    name: str = "graph"
    task: str | None = None  # the run's label in the trace (default: its input as JSON)
    context: Mapping[str, Any] = field(default_factory=dict)  # fields of the graph's context class
    config: RunnableConfig | None = None
    on_event: Callable[[Event], None] | None = None
    snapshot: Mapping[str, Any] = field(default_factory=dict)  # the settings the trace records
    resume: str | None = None  # a stopped run to continue from its last checkpoint
    cancel: threading.Event | None = None


def execute(
    graph: Any,
    input: dict[str, Any],
    spec: RunSpec,
    *,
    tiers: Tiers,
    store: TraceStore,
    raise_bugs: bool = True,
) -> GraphResult:
    """Run ``graph`` as a stored run; ``raise_bugs=False`` returns an error in a node's own
    code as a failed result instead of raising it. With ``spec.resume`` the stopped run goes
    on from its last checkpoint and ``input`` is ignored."""
    run_id, first_seq, text = _open_run(graph, input, spec, tiers, store)
    recorder = RunRecorder(store, run_id, on_event=spec.on_event, first_seq=first_seq, cancel=spec.cancel)
    run_config: RunnableConfig = {**(spec.config or {})}
    run_config["configurable"] = {"thread_id": run_id, **(run_config.get("configurable") or {})}
    state: dict[str, Any] = dict(input)
    result = GraphResult(run_id, "interrupted", state, error="the run was interrupted")
    recorder.emit(RunStarted(run_id, text))
    try:
        _start_servers(recorder, tiers, spec.policy, spec.local_only)
        stream_input = None if spec.resume is not None else input
        ctx = _run_context(graph, spec, tiers, recorder)
        # "sync": a step's checkpoint is on disk before the next step starts, so a killed
        # process never leaves a finished tool call unrecorded (to be repeated on resume).
        # LangGraph fails on a durability without a checkpointer: such a graph gets none.
        saves = isinstance(getattr(graph, "checkpointer", None), BaseCheckpointSaver)
        durability = "sync" if saves else None
        steps = graph.stream(
            stream_input, run_config, context=ctx, stream_mode="values", durability=durability
        )
        for values in steps:
            if isinstance(values, dict):
                state = values
        result = GraphResult(run_id, "succeeded", state)
    except Exception as exc:
        result = _outcome(run_id, state, exc)
        if raise_bugs and not isinstance(exc, TierflowError):  # a bug in a node: the trace is kept
            raise
    finally:
        answer = _answer_text(result.state) if result.status == "succeeded" else None
        store.finish_run(run_id, result.status, answer=answer, error=result.error)
        recorder.emit(RunFinished(run_id, result.status, answer, result.error))
    return result


def _open_run(
    graph: Any, input: dict[str, Any], spec: RunSpec, tiers: Tiers, store: TraceStore
) -> tuple[str, int, str]:
    """Start the run's row (or reopen a stopped run's): its id, its next step's number, and
    its task text."""
    text = spec.task
    if text is None:
        text = json.dumps(to_jsonable_python(input, fallback=str), ensure_ascii=False)
    if spec.resume is not None:
        run_id = store.resolve_id(spec.resume)
        _check_resumable(graph, run_id)
        return run_id, store.reopen_run(run_id), text
    budget = {k: v for k, v in spec.meter.budget.model_dump().items() if v is not None}
    options = {"local_only": spec.local_only, "redact": bool(spec.redactor), "budget": budget}
    run_id = store.start_run(
        text,
        graph=spec.name,
        policy=spec.policy.model_dump(),
        slm_model=tiers.slm.name,
        llm_model=tiers.llm.name,
        settings={**spec.snapshot, "run": options},
    )
    return run_id, 1, text


def _run_context(graph: Any, spec: RunSpec, tiers: Tiers, recorder: RunRecorder) -> TierContext:
    """The graph's context class (``TierContext`` or its own subclass), filled for this run."""
    cls = _context_class(graph)
    known = {f.name for f in fields(cls)}
    return cls(
        tiers=tiers,
        recorder=recorder,
        policy=spec.policy,
        local_only=spec.local_only,
        redactor=spec.redactor,
        meter=spec.meter,
        graph=spec.name,
        **{k: v for k, v in spec.context.items() if k in known and k != "graph"},
    )


def _outcome(run_id: str, state: dict[str, Any], exc: Exception) -> GraphResult:
    """How a run that raised ``exc`` ended: stopped by its budget, cancelled, failed, or
    failed by a bug of a node's own code (an internal error)."""
    if not isinstance(exc, TierflowError):
        return GraphResult(run_id, "failed", state, error=f"internal error: {type(exc).__name__}: {exc}")
    status: RunStatus = "failed"
    if isinstance(exc, BudgetExceededError):
        status = "budget_exceeded"
    elif isinstance(exc, RunCancelledError):
        status = "interrupted"
    return GraphResult(run_id, status, state, error=exc.message, hint=exc.hint or None)
