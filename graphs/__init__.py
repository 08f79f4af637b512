"""LangGraph definitions: the task graph and its runner."""

from tierflow.graphs.context import TaskContext
from tierflow.graphs.runner import RunResult, TaskRunner
from tierflow.graphs.task import build_task_graph

__all__ = ["TaskContext", "TaskRunner", "RunResult", "build_task_graph"]
