"""The task graph: plan → (select_tool → extract_args → act → summarize?)* → answer, and the
one-call graph select_tool → extract_args that decides a single tool call for a request
without running it (what function-calling benchmarks measure).

``build_task_graph`` and ``build_tool_call_graph`` wire every node and edge. Routers are pure functions of
the state. Each node runs inside a traced step, so the trace grows as the run goes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Literal

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from tierflow.graphs import nodes
from tierflow.graphs.context import TaskContext
from tierflow.graphs.state import TaskInput, TaskState

__all__ = [
    "build_task_graph",
    "build_tool_call_graph",
    "tool_call_input",
    "after_plan",
    "after_select_tool",
    "after_extract_args",
    "after_act",
    "after_summarize",
    "after_answer",
    "NODE_FUNCTIONS",
]

END: Literal["__end__"] = "__end__"  # langgraph.graph.END, typed as the literal it is

NodeFunction = Callable[[TaskState, TaskContext], dict[str, Any]]

NODE_FUNCTIONS: dict[str, NodeFunction] = {
    "plan": nodes.plan,
    "select_tool": nodes.select_tool,
    "extract_args": nodes.extract_args,
    "act": nodes.act,
    "summarize": nodes.summarize,
    "answer": nodes.answer,
}


# Routers -----------------------------------------------------------------------------
def _retrying(state: TaskState, node: str) -> bool:
    pending = state.get("escalation")
    return pending is not None and pending["node"] == node


def _next_step(state: TaskState) -> Literal["select_tool", "answer"]:
    return "select_tool" if state.get("step_index", 0) < len(state.get("steps", [])) else "answer"


def after_plan(state: TaskState) -> Literal["plan", "select_tool", "__end__"]:
    if _retrying(state, "plan"):
        return "plan"
    return "select_tool" if state.get("steps") else END


def after_select_tool(state: TaskState) -> Literal["select_tool", "extract_args", "answer"]:
    if _retrying(state, "select_tool"):
        return "select_tool"
    return "extract_args" if state.get("tool") else _next_step(state)


def after_extract_args(state: TaskState) -> Literal["extract_args", "act", "select_tool", "answer"]:
    if _retrying(state, "extract_args"):
        return "extract_args"
    return "act" if state.get("arguments") is not None else _next_step(state)


def after_act(state: TaskState) -> Literal["extract_args", "summarize", "select_tool", "answer"]:
    if _retrying(state, "extract_args"):
        return "extract_args"
    return "summarize" if state.get("pending_summary") else _next_step(state)


def after_summarize(state: TaskState) -> Literal["summarize", "select_tool", "answer"]:
    return "summarize" if _retrying(state, "summarize") else _next_step(state)


def after_select_only(state: TaskState) -> Literal["select_tool", "extract_args", "__end__"]:
    if _retrying(state, "select_tool"):
        return "select_tool"
    return "extract_args" if state.get("tool") else END


def after_extract_only(state: TaskState) -> Literal["extract_args", "__end__"]:
    return "extract_args" if _retrying(state, "extract_args") else END


def after_answer(state: TaskState) -> Literal["answer", "__end__"]:
    return "answer" if _retrying(state, "answer") else END


# Tracing -----------------------------------------------------------------------------
def _describe(node: str, update: dict[str, Any]) -> str:
    if (pending := update.get("escalation")) is not None:
        return f"escalating {pending['node']} to the LLM: {pending['reason']}"
    if node == "plan":
        steps = update.get("steps") or []
        return f"{len(steps)} step(s): " + " | ".join(steps) if steps else "answered directly"
    if node == "select_tool":
        return update["tool"] if update.get("tool") else "no tool"
    if node == "extract_args":
        args = update.get("arguments")
        return json.dumps(args, ensure_ascii=False) if args is not None else "no usable arguments"
    if node in ("act", "summarize"):
        obs = (update.get("observations") or [{}])[-1]
        return str(obs.get("error") or obs.get("result") or "")[:300]
    return str(update.get("answer") or "")[:300]


def _traced(node: str, function: NodeFunction) -> Callable[..., dict[str, Any]]:
    def run_node(state: TaskState, runtime: Runtime[TaskContext]) -> dict[str, Any]:
        ctx = runtime.context
        with ctx.recorder.step(node) as step:
            update = function(state, ctx)
            step.summary = _describe(node, update)
        return update

    run_node.__name__ = node
    return run_node


def build_task_graph(
    checkpointer: BaseCheckpointSaver[Any] | None = None,
) -> CompiledStateGraph[TaskState, TaskContext, TaskInput, TaskState]:
    """Compile the task graph; run it with ``context=TaskContext(...)``."""
    graph = StateGraph(TaskState, context_schema=TaskContext, input_schema=TaskInput)
    for name, function in NODE_FUNCTIONS.items():
        graph.add_node(name, _traced(name, function))
    graph.add_edge(START, "plan")
    graph.add_conditional_edges("plan", after_plan)
    graph.add_conditional_edges("select_tool", after_select_tool)
    graph.add_conditional_edges("extract_args", after_extract_args)
    graph.add_conditional_edges("act", after_act)
    graph.add_conditional_edges("summarize", after_summarize)
    graph.add_conditional_edges("answer", after_answer)
    return graph.compile(checkpointer=checkpointer)


def tool_call_input(request: str) -> TaskState:
    """The state a tool-call graph starts from: the request is its only step."""
    return {"task": request, "steps": [request], "step_index": 0, "observations": []}


def build_tool_call_graph() -> CompiledStateGraph[TaskState, TaskContext, TaskState, TaskState]:
    """select_tool → extract_args, with the task graph's nodes, tracing and escalation.

    Start it from ``tool_call_input(request)``. The final state has ``tool`` and
    ``arguments`` set when a call was decided; otherwise the last observation says why not.
    """
    graph = StateGraph(TaskState, context_schema=TaskContext)
    for name in ("select_tool", "extract_args"):
        graph.add_node(name, _traced(name, NODE_FUNCTIONS[name]))
    graph.add_edge(START, "select_tool")
    graph.add_conditional_edges("select_tool", after_select_only)
    graph.add_conditional_edges("extract_args", after_extract_only)
    return graph.compile()
