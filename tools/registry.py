"""An ordered set of tools by name: ``Tool``s, typed functions (described from their
signature, see ``tierflow.tools.base``) and LangChain tools (``tierflow.tools.langchain``)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeGuard

from tierflow.tools.base import Tool

if TYPE_CHECKING:
    from langchain_core.tools import BaseTool

__all__ = ["ToolRegistry"]


class ToolRegistry:
    """An ordered set of tools by name."""

    def __init__(self, tools: Iterable[Tool | BaseTool | Callable[..., Any]] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for tool in tools:
            self.register(tool)

    def register(self, tool: Tool | BaseTool | Callable[..., Any]) -> Tool:
        """Add a tool, a LangChain tool (``langchain_core.tools.BaseTool``, see
        ``tierflow.tools.langchain``), or a plain function described from its signature.
        Usable as a decorator."""
        if isinstance(tool, Tool):
            built = tool
        elif _is_langchain_tool(tool):
            from tierflow.tools.langchain import from_langchain

            built = from_langchain(tool)
        elif callable(tool):
            built = Tool.from_function(tool)
        else:
            raise TypeError(
                f"a {type(tool).__name__} is not a tool: give a Tool, a function or a LangChain tool"
            )
        if built.name in self._tools or built.name == "none":
            raise ValueError(f"a tool named {built.name!r} is already registered or reserved")
        self._tools[built.name] = built
        return built

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def names(self) -> list[str]:
        return list(self._tools)

    def specs(self) -> list[dict[str, Any]]:
        return [tool.spec() for tool in self._tools.values()]

    def subset(self, names: Iterable[str]) -> ToolRegistry:
        return ToolRegistry(self._tools[name] for name in names if name in self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)


def _is_langchain_tool(tool: object) -> TypeGuard[BaseTool]:
    """Whether ``tool`` is a LangChain tool, without importing LangChain: a tool cannot be
    one unless ``langchain_core.tools`` is already imported."""
    langchain_tools = sys.modules.get("langchain_core.tools")
    return langchain_tools is not None and isinstance(tool, langchain_tools.BaseTool)
