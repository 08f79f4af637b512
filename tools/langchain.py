"""LangChain tools as tierflow tools: anything built on ``langchain_core.tools.BaseTool``
(``@tool`` functions, ``StructuredTool``, langchain-community's and partner packages' tools).

``from_langchain`` describes the tool to the model with LangChain's own tool-call schema
(injected arguments left out), flattened as tierflow's schemas are (no ``$ref``, no titles,
``Optional[X]`` as ``X``), and calls ``tool.invoke`` with a tool call under the run's
limits, like any tierflow tool. What comes back is text for the model:

* a ``ToolException``, a LangChain validation error, or an error the tool handled itself
  (``handle_tool_error``: a ``ToolMessage`` with ``status="error"``) is a ``ToolError``;
* content blocks become their text (other blocks are named, not sent); an artifact
  (``response_format="content_and_artifact"``) is for the application and is dropped;
* an async-only tool (a ``coroutine`` and no ``func``) runs with ``asyncio.run``;
* ``InjectedToolCallId`` gets the call's id; other injected arguments (``InjectedToolArg``)
  take their values from ``inject``;
* ``return_direct`` has no counterpart in tierflow: the result goes to the answer step like
  any tool's.

Requires ``langchain-core``; ``ToolRegistry.register`` imports this module only when it is
given a LangChain tool.

>>> from langchain_core.tools import tool as langchain_tool
>>> @langchain_tool
... def shout(text: str) -> str:
...     '''Repeat a text in capitals.'''
...     return text.upper()
>>> shouted = from_langchain(shout, isolate=False)
>>> shouted.parameters
{'properties': {'text': {'type': 'string'}}, 'required': ['text'], 'type': 'object'}
>>> shouted.call({"text": "hello"})
'HELLO'
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from langchain_core.messages.tool import ToolMessage, ToolOutputMixin
from langchain_core.tools import BaseTool, InjectedToolCallId, ToolException
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, ValidationError
from pydantic.v1 import ValidationError as ValidationErrorV1
from tierflow.errors import ToolError, describe_validation_error
from tierflow.tools.base import Tool, checked_limits, format_result
from tierflow.tools.schema import flat_schema

__all__ = ["from_langchain", "langchain_name"]

_INVALID_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")
_MEDIA_BLOCKS = frozenset({"image", "image_url", "audio", "video", "file"})


def from_langchain(
    tool: BaseTool,
    *,
    name: str | None = None,
    inject: Mapping[str, Any] | None = None,
    **limits: Any,
) -> Tool:
    """A tierflow ``Tool`` that calls a LangChain tool.

    ``name`` replaces the tool's name (LangChain's is made to fit tierflow's name pattern);
    ``inject`` gives the values of arguments the model is not shown (``InjectedToolArg``);
    ``limits`` are the tool's own (``timeout_s``, ``max_result_chars``, ``memory_mb``,
    ``isolate``), as for ``@tool``."""
    if not isinstance(tool, BaseTool):
        raise TypeError(f"from_langchain takes a langchain_core.tools.BaseTool, not {type(tool).__name__}")
    tool_name = name or langchain_name(tool.name)
    parameters = _parameters(tool)
    injected = dict(inject or {})
    _check_injected(tool, tool_name, parameters, injected)

    def call_langchain_tool(**arguments: Any) -> str:
        return _invoke(tool, tool_name, {**arguments, **injected})

    described = inspect.cleandoc(tool.description or "") or tool_name
    built = Tool.from_schema(tool_name, described, parameters, call_langchain_tool)
    return replace(built, limit_overrides=checked_limits(limits))


def langchain_name(name: str) -> str:
    """A LangChain tool's name made to fit tierflow's tool names: other characters become
    ``_``, a name starting with a digit, ``.`` or ``-`` gets a leading ``_``, 64 at most.

    >>> langchain_name("Wikipedia search")
    'Wikipedia_search'
    """
    cleaned = _INVALID_NAME_CHARS.sub("_", name.strip()) or "langchain_tool"
    if not re.match(r"[A-Za-z_]", cleaned):
        cleaned = "_" + cleaned
    return cleaned[:64]


def _parameters(tool: BaseTool) -> dict[str, Any]:
    """The arguments' JSON schema LangChain gives a model for ``tool`` (injected arguments
    left out: ``tool.tool_call_schema``), flat and without titles, as ``Tool.parameters``."""
    return flat_schema(convert_to_openai_tool(tool)["function"].get("parameters") or {})


def _check_injected(
    tool: BaseTool, tool_name: str, parameters: Mapping[str, Any], injected: Mapping[str, Any]
) -> None:
    """Every required argument the model is not shown has a value, and ``inject`` hides
    only such arguments."""
    shown = set(parameters["properties"])
    overlap = sorted(shown & set(injected))
    if overlap:
        raise ValueError(
            f"tool {tool_name}: inject gives {overlap}, which the model is shown and fills in; "
            "inject only arguments annotated InjectedToolArg"
        )
    schema = tool.args_schema
    if not (isinstance(schema, type) and issubclass(schema, BaseModel)):
        return
    missing = [
        field.alias or key
        for key, field in schema.model_fields.items()
        if field.is_required()
        and (field.alias or key) not in shown
        and (field.alias or key) not in injected
        and not _is_call_id(field.metadata)
    ]
    if missing:
        values = ", ".join(f"{key!r}: ..." for key in missing)
        raise ValueError(
            f"tool {tool_name} needs injected arguments {missing}, which the model is not shown; "
            f"give their values: from_langchain(tool, inject={{{values}}})"
        )


def _is_call_id(metadata: list[Any]) -> bool:
    return any(m is InjectedToolCallId or isinstance(m, InjectedToolCallId) for m in metadata)


def _invoke(tool: BaseTool, name: str, arguments: dict[str, Any]) -> str:
    """Invoke ``tool`` with a tool call (so that it answers with a ``ToolMessage``)."""
    call = {
        "type": "tool_call",
        "id": f"tierflow-{uuid.uuid4().hex[:12]}",
        "name": tool.name,
        "args": arguments,
    }
    try:
        if getattr(tool, "func", True) is None and getattr(tool, "coroutine", None) is not None:
            output = asyncio.run(tool.ainvoke(call))  # async-only: no event loop runs in a tool call
        else:
            output = tool.invoke(call)
    except ToolException as exc:
        raise ToolError(str(exc) or f"{name} failed without saying why") from None
    except ValidationError as exc:
        raise ToolError(
            f"invalid arguments for {name}: {describe_validation_error(exc, 'arguments')}"
        ) from None
    except ValidationErrorV1 as exc:
        raise ToolError(f"invalid arguments for {name}: {exc}") from None
    return _output_text(name, output)


def _output_text(name: str, output: Any) -> str:
    if isinstance(output, ToolMessage):
        text = _content_text(output.content)
        if output.status == "error":
            raise ToolError(text or f"{name} failed without saying why")
        return text
    outputs = output if isinstance(output, list) and output else [output]
    if all(isinstance(item, ToolOutputMixin) for item in outputs):
        raise ToolError(
            f"{name} returned {type(outputs[0]).__name__}, a LangGraph state update that tierflow cannot "
            "apply; wrap the tool in one that returns its result"
        )
    return format_result(output)


def _content_text(content: str | list[str | dict[str, Any]]) -> str:
    """A message's content as text: text blocks' text, other data blocks as JSON, media named.

    >>> _content_text(["one", {"type": "text", "text": "two"}, {"type": "image", "url": "x.png"}])
    'one\\ntwo\\n[image block left out: tierflow passes tool results as text]'
    """
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        elif block.get("type") in _MEDIA_BLOCKS:
            parts.append(f"[{block['type']} block left out: tierflow passes tool results as text]")
        else:
            parts.append(json.dumps(block, ensure_ascii=False, default=str))
    return "\n".join(parts)
