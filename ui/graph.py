"""The graph of a run as Graphviz DOT, from LangGraph's own structure, each node coloured
by the tier that served it in that run (``both``: the SLM's output escalated to the LLM).
Rendered in the browser (``st.graphviz_chart``): no web service is called."""

from __future__ import annotations

from typing import Any

from tierflow.graphs.task import build_task_graph, build_tool_call_graph
from tierflow.records import RunTrace

__all__ = ["run_graph_dot", "node_tiers", "TIER_COLOURS"]

TIER_COLOURS = {
    "slm": "#2e7d32",
    "llm": "#8e24aa",
    "both": "#ef6c00",
    "tool": "#546e7a",
    "unvisited": "#cfd8dc",
}


def node_tiers(trace: RunTrace) -> dict[str, str]:
    """node -> ``slm``, ``llm``, ``both`` (escalated) or ``tool`` for the nodes the run visited."""
    served: dict[str, set[str]] = {}
    for step in trace.steps:
        tiers = served.setdefault(step.node, set())
        tiers.update(call.tier for call in step.model_calls)
    return {
        node: ("both" if len(tiers) > 1 else next(iter(tiers))) if tiers else "tool"
        for node, tiers in served.items()
    }


def _quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _structure(trace: RunTrace) -> Any:
    """The run's graph: a built-in one, the user's graph when its ``MODULE:ATTR`` imports
    here, or else the path the run took through its nodes."""
    name = trace.graph or "task"
    if name == "task":
        return build_task_graph().get_graph()
    if name == "tool_call":
        return build_tool_call_graph().get_graph()
    if ":" in name:
        from tierflow.errors import GraphError
        from tierflow.graphs.introspect import load_graph

        try:
            return load_graph(name).get_graph()
        except GraphError:
            pass
    return _path_graph([step.node for step in trace.steps])


def _path_graph(path: list[str]) -> Any:
    from langchain_core.runnables.graph import Edge, Graph, Node

    order = ["__start__", *dict.fromkeys(path), "__end__"]
    nodes = {node: Node(node, node, None, None) for node in order}
    hops = list(zip(["__start__", *path], [*path, "__end__"], strict=True))
    edges = [Edge(a, b, None, False) for a, b in dict.fromkeys(hops)]
    return Graph(nodes=nodes, edges=edges)


def run_graph_dot(trace: RunTrace) -> str:
    graph = _structure(trace)
    tiers = node_tiers(trace)
    counts: dict[str, int] = {}
    for step in trace.steps:
        counts[step.node] = counts.get(step.node, 0) + 1
    lines = [
        "digraph run {",
        '  rankdir=TB; bgcolor="transparent";',
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontcolor=white];',
        '  edge [color="#90a4ae", fontname="Helvetica", fontsize=10];',
    ]
    for node_id in graph.nodes:
        if node_id in ("__start__", "__end__"):
            label = "start" if node_id == "__start__" else "end"
            lines.append(f'  {_quote(node_id)} [label={_quote(label)}, shape=circle, fillcolor="#37474f"];')
            continue
        served = tiers.get(node_id, "unvisited")
        label = node_id + (f"\n{served} ×{counts[node_id]}" if node_id in counts else "")
        font = "#37474f" if served == "unvisited" else "white"
        lines.append(
            f"  {_quote(node_id)} [label={_quote(label)}, fillcolor={_quote(TIER_COLOURS[served])}, "
            f"fontcolor={_quote(font)}];"
        )
    for edge in graph.edges:
        style = "dashed" if edge.conditional else "solid"
        lines.append(f"  {_quote(edge.source)} -> {_quote(edge.target)} [style={style}];")
    lines.append("}")
    return "\n".join(lines)
