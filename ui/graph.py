"""The task graph of a run as Graphviz DOT, from LangGraph's own structure, each node
coloured by the tier that served it in that run. Rendered in the browser
(``st.graphviz_chart``): no web service is called."""

from __future__ import annotations

from typing import Any

from tierflow.graphs.task import build_task_graph, build_tool_call_graph

__all__ = ["run_graph_dot", "node_tiers", "TIER_COLOURS"]

TIER_COLOURS = {
    "slm": "#2e7d32",
    "llm": "#8e24aa",
    "both": "#ef6c00",
    "tool": "#546e7a",
    "unvisited": "#cfd8dc",
}


def node_tiers(trace: dict[str, Any]) -> dict[str, str]:
    """node -> ``slm``, ``llm``, ``both`` (escalated) or ``tool`` for the nodes the run visited."""
    served: dict[str, set[str]] = {}
    for step in trace["steps"]:
        tiers = served.setdefault(step["node"], set())
        tiers.update(call["tier"] for call in step["model_calls"])
    return {
        node: ("both" if len(tiers) > 1 else next(iter(tiers))) if tiers else "tool"
        for node, tiers in served.items()
    }


def _quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def run_graph_dot(trace: dict[str, Any]) -> str:
    graph = (build_tool_call_graph() if trace.get("graph") == "tool_call" else build_task_graph()).get_graph()
    tiers = node_tiers(trace)
    counts: dict[str, int] = {}
    for step in trace["steps"]:
        counts[step["node"]] = counts.get(step["node"], 0) + 1
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
        extra = ', label="retry on LLM"' if edge.source == edge.target else ""
        lines.append(f"  {_quote(edge.source)} -> {_quote(edge.target)} [style={style}{extra}];")
    lines.append("}")
    return "\n".join(lines)
