"""LangGraph definitions: the tiering kit (``tierflow.graphs.tiering``), the task graph and
its runner, and ``run_graph`` for any graph."""

from tierflow.graphs.runner import RunResult, TaskRunner
from tierflow.graphs.running import GraphResult, run_graph
from tierflow.graphs.task import build_task_graph

__all__ = ["TaskRunner", "RunResult", "build_task_graph", "run_graph", "GraphResult"]
