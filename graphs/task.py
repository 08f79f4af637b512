"""The task graph, built on the tiering kit:
plan → (select_tool → extract_args → act → summarize?)* → answer, and the one-call
graph select_tool → extract_args that decides a single tool call for a request without
running it (what function-calling benchmarks measure).

``build_task_graph`` and ``build_tool_call_graph`` wire every node and edge. Routers are pure
functions of the state. Each node is a ``tiered_node``: a traced step whose model calls
escalate within the step, so the trace grows as the run goes. The one escalation that
crosses nodes, a tool refusing the SLM's arguments, goes back to extract_args on the LLM.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Literal

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from tierflow.graphs import nodes
from tierflow.graphs.nodes import TaskContext
from tierflow.graphs.state import TaskInput, TaskState
from tierflow.graphs.steps import StepScope, tiered_node

__all__ = [
    "build_task_graph",
    "build_tool_call_graph",
    "tool_call_input",
    "after_plan",
    "after_select_tool",
    "after_extract_args",
    "after_act",
    "after_summarize",
    "NODE_FUNCTIONS",
]

END: Literal["__end__"] = "__end__"  # langgraph.graph.END, typed as the literal it is

NodeFunction = Callable[[TaskState, StepScope], dict[str, Any]]

NODE_FUNCTIONS: dict[str, NodeFunction] = {
    "plan": nodes.plan,
    "select_tool": nodes.select_tool,
    "extract_args": nodes.extract_args,
    "act": nodes.act,
    "summarize": nodes.summarize,
    "answer": nodes.answer,
}


# Routers -----------------------------------------------------------------------------
def _next_step(state: TaskState) -> Literal["select_tool", "answer"]:
    return "select_tool" if state.get("step_index", 0) < len(state.get("steps", [])) else "answer"


def after_plan(state: TaskState) -> Literal["select_tool", "__end__"]:
    return "select_tool" if state.get("steps") else END


def after_select_tool(state: TaskState) -> Literal["extract_args", "select_tool", "answer"]:
    return "extract_args" if state.get("tool") else _next_step(state)


def after_extract_args(state: TaskState) -> Literal["act", "select_tool", "answer"]:
    pending = state.get("escalation")
    if pending is not None and pending["node"] == "select_tool":  # the SLM's call was judged wrong
        return "select_tool"
    return "act" if state.get("arguments") is not None else _next_step(state)


def after_act(state: TaskState) -> Literal["extract_args", "summarize", "select_tool", "answer"]:
    pending = state.get("escalation")
    if pending is not None and pending["node"] == "extract_args":  # the tool refused the SLM's arguments
        return "extract_args"
    return "summarize" if state.get("pending_summary") else _next_step(state)


def after_summarize(state: TaskState) -> Literal["select_tool", "answer"]:
    return _next_step(state)


def after_select_only(state: TaskState) -> Literal["extract_args", "__end__"]:
    return "extract_args" if state.get("tool") else END


def after_extract_args_only(state: TaskState) -> Literal["select_tool", "__end__"]:
    pending = state.get("escalation")
    return "select_tool" if pending is not None and pending["node"] == "select_tool" else END


# Tracing -----------------------------------------------------------------------------
def _describer(node: str) -> Callable[[dict[str, Any]], str]:
    def describe(update: dict[str, Any]) -> str:
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
            return str(obs.get("error") or obs.get("result") or "")
        return str(update.get("answer") or "")

    return describe


def _node(name: str) -> Callable[..., dict[str, Any]]:
    return tiered_node(NODE_FUNCTIONS[name], describe=_describer(name))


def build_task_graph(
    checkpointer: BaseCheckpointSaver[Any] | None = None,
) -> CompiledStateGraph[TaskState, TaskContext, TaskInput, TaskState]:
    """Compile the task graph; run it with ``context=TaskContext(...)``."""
    graph = StateGraph(TaskState, context_schema=TaskContext, input_schema=TaskInput)
    for name in NODE_FUNCTIONS:
        graph.add_node(name, _node(name))
    graph.add_edge(START, "plan")
    graph.add_conditional_edges("plan", after_plan)
    graph.add_conditional_edges("select_tool", after_select_tool)
    graph.add_conditional_edges("extract_args", after_extract_args)
    graph.add_conditional_edges("act", after_act)
    graph.add_conditional_edges("summarize", after_summarize)
    graph.add_edge("answer", END)
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
        graph.add_node(name, _node(name))
    graph.add_edge(START, "select_tool")
    graph.add_conditional_edges("select_tool", after_select_only)
    graph.add_conditional_edges("extract_args", after_extract_args_only)
    return graph.compile()
