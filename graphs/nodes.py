"""The task graph's nodes: ``(state, scope) -> partial update``, at most one model call each
(two when the SLM's output is rejected and the step escalates to the LLM).

A node whose model output is rejected by every tier it may use degrades gracefully and
records why; model-caused problems never crash a run. Failures of the tiers themselves
(an unreachable endpoint) propagate and fail the run with their message.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from pydantic import BaseModel, Field, field_validator, model_validator
from tierflow.agents.escalation import Rejected, parse_json, parse_model, parse_text
from tierflow.agents.fitting import fit_and_summarize
from tierflow.agents.judging import StepView
from tierflow.agents.prompting import render_messages
from tierflow.agents.protocol import Completion, Message
from tierflow.agents.scoring import EscalationScorer, default_scorer
from tierflow.errors import GraphError, StepOutputError, ToolError
from tierflow.graphs.context import Answer, TierContext, calibrated, escalate, escalate_earlier
from tierflow.graphs.grounding import answer_problem, asks_about_documents, searches_documents
from tierflow.graphs.judging import judge_arguments, select_judge
from tierflow.graphs.state import Observation, TaskState
from tierflow.graphs.steps import StepScope
from tierflow.records import CallRef, ModelCallRecord, ToolCallRecord
from tierflow.tools.base import Tool
from tierflow.tools.limits import DEFAULT_LIMITS, ToolLimits
from tierflow.tools.registry import ToolRegistry

SEARCH_MEMORY = "search_memory"  # the document memory's tool (tierflow.graphs.citing)

if TYPE_CHECKING:
    from tierflow.graphs.recall import Example, Recall
    from tierflow.memory.decisions import Provenance

__all__ = [
    "TaskContext",
    "plan",
    "select_tool",
    "extract_args",
    "act",
    "summarize",
    "answer",
    "result_lines",
]

Update = dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class TaskContext(TierContext):
    """The run context of the task graph: the tiering kit's, plus the tools and limits."""

    tools: ToolRegistry
    max_steps: int = 6
    summarize_over_chars: int = 1200
    tool_limits: ToolLimits = DEFAULT_LIMITS  # each tool call's time, memory and result size
    scorer: EscalationScorer | None = None  # the escalation score; the shipped one by default
    recall: Recall | None = None  # the memory of verified decisions: examples, shortlist, learning

    def escalation_scorer(self) -> EscalationScorer:
        return self.scorer or default_scorer()

    def escalation_relevance(self) -> Callable[[str, Sequence[str]], list[float]]:
        """The request-to-tool similarity the score reads (never zeros: the score was trained
        with real similarities, so a run without one fails with what to pass)."""
        if self.relevance is None:
            raise GraphError(
                "the escalation score needs the request's similarity to the tools, and this run has none",
                hint="Build the runner with relevance= (App(settings).relevance uses the offline "
                "embedding model), or run it through tierflow's App.",
            )
        return self.relevance


def _ctx(scope: StepScope) -> TaskContext:
    return cast(TaskContext, scope.ctx)


class PlanOutput(BaseModel):
    steps: list[str] = Field(default_factory=list)
    answer: str = ""

    @field_validator("steps")
    @classmethod
    def _clean(cls, steps: list[str]) -> list[str]:
        return [step.strip() for step in steps if step.strip()]

    @model_validator(mode="after")
    def _something(self) -> PlanOutput:
        if not self.steps and not self.answer.strip():
            raise ValueError("the plan has neither steps nor an answer")
        return self


class ToolChoice(BaseModel):
    tool: str


PLAN_SCHEMA = {
    "type": "object",
    "properties": {"steps": {"type": "array", "items": {"type": "string"}}, "answer": {"type": "string"}},
    "required": ["steps", "answer"],
}


def _advance(state: TaskState, observation: Observation) -> Update:
    """Close the current step with ``observation`` and move to the next."""
    return {
        "observations": [*state.get("observations", []), observation],
        "step_index": state.get("step_index", 0) + 1,
        "tool": None,
        "arguments": None,
        "args_tier": None,
        "args_call": None,
        "escalation": None,
        "choice_features": None,
        "choice_call": None,
        "call_on_llm": False,
    }


def _current_step(state: TaskState) -> str:
    return state["steps"][state.get("step_index", 0)]


def result_lines(state: TaskState) -> list[str]:
    lines = []
    for number, obs in enumerate(state.get("observations", []), start=1):
        if obs["tool"] is None:
            outcome = f"(no tool used{': ' + obs['error'] if obs['error'] else ''})"
        else:
            call = f"{obs['tool']}({json.dumps(obs['arguments'], ensure_ascii=False)})"
            outcome = f"{call} -> " + (f"error: {obs['error']}" if obs["error"] else str(obs["result"]))
        lines.append(f"{number}. {obs['step']}: {outcome}")
    return lines


def plan(state: TaskState, scope: StepScope) -> Update:
    ctx = _ctx(scope)
    past = ctx.recall.reusable_plan(state["task"]) if ctx.recall else None
    if past is not None:  # a successful plan for a task this close: no model call
        scope.summarize_as(
            f"reused the plan of run {past.run_id} (similarity {past.similarity:.2f}): "
            + " | ".join(past.steps)
        )
        return {
            "steps": past.steps[: ctx.max_steps],
            "step_index": 0,
            "observations": [],
            "plan_reused": True,
        }
    messages = render_messages(
        "plan",
        tools=list(ctx.tools),
        task=state["task"],
        max_steps=ctx.max_steps,
        documents=SEARCH_MEMORY in ctx.tools,
    )
    got = scope.ask(messages, parse_model(PlanOutput), max_tokens=512, schema=PLAN_SCHEMA, prefer="llm")
    if got.value is None:  # no usable plan even from the last tier: treat the task as one step
        return {"steps": [state["task"]], "step_index": 0, "observations": []}
    steps = got.value.steps
    if SEARCH_MEMORY in ctx.tools and asks_about_documents(state["task"]) and not searches_documents(steps):
        # the answer is in the user's documents: search them first, whatever the planner wrote
        steps = [f"Search the documents for: {state['task']}", *steps][: ctx.max_steps]
        scope.summarize_as(
            "the task asks about the user's documents: the plan searches them first | " + " | ".join(steps)
        )
    if not steps:
        return {"steps": [], "answer": got.value.answer.strip()}
    return {"steps": steps[: ctx.max_steps], "step_index": 0, "observations": []}


def select_tool(state: TaskState, scope: StepScope) -> Update:
    ctx = _ctx(scope)
    step, recall = _current_step(state), ctx.recall
    offered = recall.shortlist(step, list(ctx.tools)) if recall else list(ctx.tools)
    names = [tool.name for tool in offered]
    schema = {
        "type": "object",
        "properties": {"tool": {"type": "string", "enum": [*names, "none"]}},
        "required": ["tool"],
    }

    def parse(completion: Completion) -> ToolChoice:
        choice = parse_model(ToolChoice)(completion)
        if choice.tool != "none" and choice.tool not in names:
            raise Rejected("unknown_tool", f"{choice.tool!r} is not one of: {', '.join(names)}")
        return choice

    examples = recall.for_choice(step, offered) if recall else []
    messages = render_messages("select_tool", tools=offered, task=state["task"], step=step, examples=examples)
    retry = "llm" if _retrying(state, "select_tool") else None  # the call it led to was judged wrong
    features: list[list[float]] = []
    judge = None
    if retry is None and ctx.policy.for_node("select_tool") == "tiered":
        judge = select_judge(ctx, ctx.escalation_scorer(), step, offered, features, ctx.escalation_relevance)
    view = StepView("choose", step, (*names, "none"), "tool")  # a kit choose: its signals are traced
    got = scope.ask(
        messages,
        parse,
        max_tokens=32,
        schema=schema,
        tier=retry,
        judge=judge,
        local_only=_private(state),
        view=view,
    )
    if recall is not None:
        got.record.recall = _recall_note(examples, len(offered), len(ctx.tools))
    if got.value is None or got.value.tool == "none":
        if got.value is not None and got.tier == "llm":
            _learn(scope, got, state, None, None, _provenance(bool(retry) or got.escalated))
        error = None if got.value else f"no tool could be chosen ({got.reason})"
        return _advance(state, Observation(step=step, tool=None, arguments=None, result=None, error=error))
    on_slm = got.tier == "slm"
    return {
        "tool": got.value.tool,
        "arguments": None,
        "escalation": None,
        "choice_features": features[0] if on_slm and features else None,
        "choice_call": str(got.ref) if on_slm else None,
        "call_on_llm": retry is not None or got.escalated,
    }


def _recall_note(examples: list[Example], offered: int, tools: int) -> dict[str, Any]:
    """What the memory gave a step's prompt, for its trace."""
    note: dict[str, Any] = {"examples": len(examples)}
    if examples:
        note["nearest"] = examples[0].similarity
    if offered < tools:
        note["shortlist"] = f"{offered} of {tools} tools"
    return note


def _provenance(corrected: bool) -> Provenance:
    return "llm_corrected" if corrected else "llm"


def _learn(
    scope: StepScope,
    got: Answer[Any] | None,
    state: TaskState,
    tool: str | None,
    arguments: dict[str, Any] | None,
    provenance: Provenance,
) -> None:
    """Remember a verified decision; a memory that cannot be written is noted, never raised."""
    ctx = _ctx(scope)
    if ctx.recall is None:
        return
    problem = ctx.recall.remember(
        _current_step(state), ctx.tools.names(), tool, arguments, provenance, ctx.recorder.run_id
    )
    if problem is not None and got is not None:
        _note_skipped(got.record, problem)
    elif problem is not None:
        scope.summarize_as(f"{tool} ran; learning skipped: {problem}")


def _parse_arguments(tool: Tool) -> Any:
    def parse(completion: Completion) -> dict[str, Any]:
        data = parse_json(completion)
        if not isinstance(data, dict):
            raise Rejected("schema_validation", "the arguments must be a JSON object")
        try:
            return tool.arguments(data)
        except ToolError as exc:
            raise Rejected("schema_validation", str(exc)) from None

    return parse


def _private(state: TaskState) -> bool:
    """Whether a tool result of this run holds local-only data (it must not reach the LLM)."""
    return bool(state.get("local_only_data"))


def _retrying(state: TaskState, node: str) -> bool:
    pending = state.get("escalation")
    return pending is not None and pending["node"] == node


def extract_args(state: TaskState, scope: StepScope) -> Update:
    step, tool = _current_step(state), _ctx(scope).tools.get(state["tool"] or "")
    assert tool is not None, "select_tool only routes here with a registered tool"
    recall = _ctx(scope).recall
    examples = recall.for_call(step, tool) if recall else []
    messages = render_messages(
        "extract_args",
        tool=tool,
        task=state["task"],
        step=step,
        results=result_lines(state),
        examples=examples,
    )
    # The tool refused the SLM's arguments, or the LLM chose the tool: the LLM writes the call.
    retry = "llm" if _retrying(state, "extract_args") or state.get("call_on_llm") else None
    got = scope.ask(
        messages,
        _parse_arguments(tool),
        max_tokens=256,
        schema=tool.parameters,
        tier=retry,
        local_only=_private(state),
        tool=tool.spec(),
        view=StepView("extract", "\n".join([state["task"], step, *result_lines(state)]), into="arguments"),
    )
    if recall is not None:
        got.record.recall = _recall_note(examples, 1, 1)
    if got.value is None:
        error = f"no usable arguments ({got.reason})"
        observation = Observation(step=step, tool=tool.name, arguments=None, result=None, error=error)
        return _advance(state, observation)
    if got.tier == "slm" and retry is None and _escalate_call(state, scope, tool, got):
        reason = got.record.escalation_reason or ""
        return {"tool": None, "arguments": None, "escalation": {"node": "select_tool", "reason": reason}}
    if got.tier == "llm":
        _learn(scope, got, state, tool.name, got.value, _provenance(bool(retry) or got.escalated))
    return {"arguments": got.value, "args_tier": got.tier, "args_call": str(got.ref), "escalation": None}


def _escalate_call(state: TaskState, scope: StepScope, tool: Tool, got: Answer[dict[str, Any]]) -> bool:
    """Judge the call the SLM wrote; True when the LLM is to decide it again, tool and all
    (the SLM's choice and arguments are then marked escalated). Local-only runs keep it."""
    ctx = _ctx(scope)
    if ctx.policy.for_node("extract_args") != "tiered" or ctx.policy.for_node("select_tool") == "slm":
        return False
    if calibrated(ctx, "extract_args", "extract"):  # its own scorer judged the arguments already
        return False
    choice = state.get("choice_features")
    judgement = judge_arguments(
        ctx, ctx.escalation_scorer(), _current_step(state), tool, got.value or {}, got.completion, choice
    )
    if judgement is None:
        return False
    got.record.p_wrong = judgement.p_wrong
    if not judgement.escalate:
        return False
    reason = judgement.rejection().reason
    if not escalate(got.record, reason, local=ctx.local_only or _private(state)):
        return False
    chosen_by = state.get("choice_call")
    chooser = CallRef.parse(chosen_by) if chosen_by else None
    return escalate_earlier(ctx, chooser, f"its call was judged wrong: {reason}", local=False)


def act(state: TaskState, scope: StepScope) -> Update:
    ctx = _ctx(scope)
    step, name, arguments = _current_step(state), state["tool"] or "", state["arguments"] or {}
    tool = ctx.tools.get(name)
    assert tool is not None
    started = time.perf_counter()
    result, error = None, None
    try:
        result = tool.call(arguments, ctx.tool_limits)
    except ToolError as exc:
        error = str(exc)
    except Exception as exc:  # a tool's own bug is recorded and shown, not raised
        error = f"{type(exc).__name__}: {exc}"
    latency_ms = (time.perf_counter() - started) * 1000
    scope.tool_call(ToolCallRecord(name, arguments, result, error, latency_ms))
    if error is None and state.get("args_tier") == "slm" and not state.get("call_on_llm"):
        _learn(scope, None, state, name, arguments, "slm_confirmed")  # the tool accepted the SLM's call
    retry = (
        error is not None
        and state.get("args_tier") == "slm"
        and ctx.policy.for_node("extract_args") == "tiered"
    )
    if retry:
        reason = f"tool_rejected_arguments: {error}"
        written_by = state.get("args_call")
        ref = CallRef.parse(written_by) if written_by else None
        if escalate_earlier(ctx, ref, reason, local=ctx.local_only or _private(state)):
            return {"escalation": {"node": "extract_args", "reason": reason}}
    update = _advance(
        state, Observation(step=step, tool=name, arguments=arguments, result=result, error=error)
    )
    update["pending_summary"] = (
        result is not None and len(result) > ctx.summarize_over_chars and name != SEARCH_MEMORY
    )
    if result is not None and tool.holds_local_only is not None and tool.holds_local_only(result):
        update["local_only_data"] = True
    return update


def summarize(state: TaskState, scope: StepScope) -> Update:
    ctx = _ctx(scope)
    observations = list(state["observations"])
    last = observations[-1]
    output = last["result"] or ""

    def prompt(text: str) -> list[Message]:
        return render_messages(
            "summarize", task=state["task"], tool=last["tool"], output=text, max_sentences=5
        )

    def once(piece: str) -> str:
        got = scope.ask(prompt(piece), parse_text, max_tokens=256, local_only=_private(state))
        return got.value or piece[: ctx.summarize_over_chars] + " [...]"

    # an output longer than the SLM's context is summarized in pieces that fit
    short = fit_and_summarize(ctx.tiers.slm, output, once, overhead=prompt(""), max_tokens=256)
    observations[-1] = Observation(**{**last, "result": short})
    return {"observations": observations, "pending_summary": False}


_NOT_AN_ANSWER = ("empty_output", "no_tool_result", "plan_as_answer")


def answer(state: TaskState, scope: StepScope) -> Update:
    """The final answer from the tool results. The SLM's is judged on whether it answers at
    all, rests on a result that succeeded, and states only numbers and units the task or a
    result holds; one that fails escalates under ``tiered``, and where it cannot, the run
    fails rather than pass it as a success. The LLM's answer is refused only when empty: it
    may answer from what it knows when the tools failed (the trace keeps what the checks
    found)."""
    passages = retrieved_passages(state)
    messages = render_messages("answer", task=state["task"], results=result_lines(state), cite=bool(passages))
    tried = [obs for obs in state.get("observations") or [] if obs["tool"]]
    results = [str(obs["result"]) for obs in tried if not obs["error"] and obs["result"] is not None]
    errors = [str(obs["error"]) for obs in tried if obs["error"]]
    steps = state.get("steps") or []

    unchecked: list[str] = []  # an answer kept although its checks failed

    def parse(completion: Completion) -> str:
        text = parse_text(completion)
        problem = answer_problem(state["task"], results, errors, steps, text)
        if problem is not None and (completion.tier == "slm" or problem.code == "empty_output"):
            raise problem
        if problem is not None:
            unchecked.append(problem.reason)
            scope.summarize_as(f"{text} (checks: {problem.reason})")
        return text

    view = StepView("text", "\n".join([state["task"], *results]), into="answer")
    got = scope.ask(messages, parse, max_tokens=384, local_only=_private(state), view=view)
    if got.value is None and got.rejection is not None and got.rejection.code in _NOT_AN_ANSWER:
        raise StepOutputError(
            f"the {got.tier.upper()}'s answer does not hold: {got.reason}",
            hint="The trace shows each tool call and its error (tierflow runs show RUN_ID); "
            "the run may succeed on the LLM (--policy tiered or llm).",
        )
    text = got.value or got.completion.text.strip() or "\n".join(result_lines(state))
    if passages:
        cited = [p for p in passages if f"[{p['source']}]" in text]
        scope.handle.evidence = {"retrieved": passages, "cited": [p["source"] for p in cited]}
    if got.value is not None and not unchecked:  # only a plan whose answer held its checks
        _remember_plan(state, scope, got.record)
    return {"answer": text}


def passages_in(result: str) -> list[dict[str, Any]]:
    """The document passages of a ``search_memory`` result (JSON, each with its ``source``)."""
    try:
        found = json.loads(result)
    except json.JSONDecodeError:
        return []
    return [p for p in found if isinstance(p, dict) and "source" in p] if isinstance(found, list) else []


def retrieved_passages(state: TaskState) -> list[dict[str, Any]]:
    """The document passages the run's ``search_memory`` calls returned, in order."""
    return [
        passage
        for obs in state.get("observations") or []
        if obs["tool"] == SEARCH_MEMORY and obs["result"]
        for passage in passages_in(obs["result"])
    ]


_OUTSIDE = re.compile(r"(?:^|[\s'\"(=])(?:/(?=[\w.])|~[\w-]*/|[A-Za-z]:\\)|\.\.[/\\]")
"""A path that is absolute, in a home folder or up a level: never in a plan worth keeping."""


def _remember_plan(state: TaskState, scope: StepScope, record: ModelCallRecord) -> None:
    """A plan is kept for similar tasks only when every step used a tool without error, the
    answer held its checks, and no step names a path outside the workspace (a plan written
    by a compromised or misled model is never offered again)."""
    ctx = _ctx(scope)
    observations = state.get("observations") or []
    worked = bool(observations) and all(obs["tool"] and not obs["error"] for obs in observations)
    steps = state.get("steps") or []
    if ctx.recall is None or state.get("plan_reused") or not worked:
        return
    if any(_OUTSIDE.search(step) for step in steps):
        _note_skipped(record, "a step names a path outside the workspace")
        return
    problem = ctx.recall.remember_plan(state["task"], state.get("steps") or [], ctx.recorder.run_id)
    if problem is not None:
        _note_skipped(record, problem)


def _note_skipped(record: ModelCallRecord, problem: str) -> None:
    """The memory could not learn from this step: say so in the call's trace."""
    record.recall = {**(record.recall or {}), "learning_skipped": problem}
