"""Tools: typed Python functions the task graph can call, and the built-in set."""

from tierflow.tools.base import Tool, format_result, tool
from tierflow.tools.builtins import builtin_tools, default_registry
from tierflow.tools.calculator import evaluate
from tierflow.tools.limits import ToolLimits
from tierflow.tools.registry import ToolRegistry
from tierflow.tools.workspace import Workspace

__all__ = [
    "Tool",
    "ToolLimits",
    "ToolRegistry",
    "Workspace",
    "builtin_tools",
    "default_registry",
    "evaluate",
    "format_result",
    "tool",
]
