"""A tool: a typed Python function whose JSON schema comes from its signature and
docstring, and ``@tool``, which makes one.

>>> def add(a: int, b: int = 1) -> int:
...     '''Add two numbers.
...
...     Args:
...         a: the first number
...         b: the second number
...     '''
...     return a + b
>>> tool = Tool.from_function(add)
>>> tool.parameters["properties"]["a"]
{'description': 'the first number', 'type': 'integer'}
>>> tool.call({"a": 2})
'3'
"""

from __future__ import annotations

import inspect
import json
import re
import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, get_type_hints, overload

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from tierflow.errors import ToolError, describe_validation_error
from tierflow.tools.limits import DEFAULT_LIMITS, ToolLimits, run_limited
from tierflow.tools.schema import flat_schema, model_from_schema

__all__ = ["Tool", "tool", "checked_limits", "format_result"]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    function: Callable[..., Any]
    arguments_model: type[BaseModel]
    input_schema: dict[str, Any] | None = None
    """The JSON schema the tool was described with, when it was not a typed function."""
    limit_overrides: tuple[tuple[str, Any], ...] = ()
    """The tool's own limits (``@tool(timeout_s=60)``) over the run's ``ToolLimits``."""
    prepare: Callable[[], Any] | None = None
    """Run once in the caller's process before the first call (load data, build a registry),
    so that the child process each call runs in inherits it instead of rebuilding it."""
    holds_local_only: Callable[[str], bool] | None = None
    """Tells from a result whether it holds local-only data (chunks of a local-only memory
    collection): the task graph then keeps the rest of the run on the SLM."""

    @classmethod
    def from_function(
        cls,
        function: Callable[..., Any],
        *,
        name: str | None = None,
        prepare: Callable[[], Any] | None = None,
        **limits: Any,
    ) -> Tool:
        """Build a tool; every parameter needs a type hint, the docstring gives descriptions."""
        tool_name = name or function.__name__
        if not _NAME.match(tool_name):
            raise ValueError(f"tool name {tool_name!r} must match {_NAME.pattern}")
        summary, arg_docs = _parse_docstring(inspect.getdoc(function) or "")
        hints = get_type_hints(function)
        fields: dict[str, Any] = {}
        for param in inspect.signature(function).parameters.values():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise TypeError(f"tool {tool_name}: *args/**kwargs cannot be described to a model")
            if param.name not in hints:
                raise TypeError(f"tool {tool_name}: parameter {param.name!r} needs a type hint")
            default = ... if param.default is param.empty else param.default
            fields[param.name] = (
                hints[param.name],
                Field(default, description=arg_docs.get(param.name)),
            )
        model = create_model(f"{tool_name}_arguments", __config__=ConfigDict(extra="forbid"), **fields)
        described = summary or tool_name
        return cls(
            tool_name, described, function, model, limit_overrides=checked_limits(limits), prepare=prepare
        )

    @classmethod
    def from_schema(
        cls,
        name: str,
        description: str,
        parameters: dict[str, Any],
        function: Callable[..., Any] | None = None,
    ) -> Tool:
        """A tool described by a JSON schema (``type: object``); without ``function`` it can
        be chosen and given arguments (as in evaluations) but calling it is an error."""
        if not _NAME.match(name):
            raise ValueError(f"tool name {name!r} must match {_NAME.pattern}")

        def described_only(**_: Any) -> Any:
            raise ToolError(f"{name} is described by a schema only; it has no implementation to call")

        model = model_from_schema(f"{name}_arguments", parameters)
        return cls(name, description or name, function or described_only, model, parameters)

    @cached_property
    def parameters(self) -> dict[str, Any]:
        """The arguments' JSON schema, flat and without titles (built once per tool)."""
        if self.input_schema is not None:
            return self.input_schema
        return flat_schema(self.arguments_model.model_json_schema())

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """A tool made with ``@tool`` is still the function it was."""
        return self.function(*args, **kwargs)

    def spec(self) -> dict[str, Any]:
        """The OpenAI-style function description."""
        return {"name": self.name, "description": self.description, "parameters": self.parameters}

    def validate(self, arguments: Mapping[str, Any]) -> BaseModel:
        """Check arguments against the signature; a ``ToolError`` says what is wrong."""
        try:
            return self.arguments_model.model_validate(dict(arguments))
        except ValidationError as exc:
            problems = describe_validation_error(exc, "arguments")
            raise ToolError(f"invalid arguments for {self.name}: {problems}") from None

    def arguments(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """The validated arguments as plain JSON values: the ones given, defaults left out."""
        dumped: dict[str, Any] = self.validate(arguments).model_dump(exclude_unset=True, by_alias=True)
        return dumped

    def limits(self, default: ToolLimits = DEFAULT_LIMITS) -> ToolLimits:
        """The limits a call runs under: ``default`` (the run's), with the tool's own over it."""
        return replace(default, **dict(self.limit_overrides)) if self.limit_overrides else default

    def call(self, arguments: Mapping[str, Any], limits: ToolLimits = DEFAULT_LIMITS) -> str:
        """Validate, run under ``limits`` (see ``tierflow.tools.limits``), and return the
        result as text for the model; a ``ToolError`` says what went wrong."""
        if self.input_schema is not None:  # fields are aliased: pass the schema's names
            values = self.arguments(arguments)
        else:
            values = dict(self.validate(arguments))
        if self.prepare is not None:
            _prepared(self.prepare)
        return run_limited(self.name, lambda: format_result(self.function(**values)), self.limits(limits))


@overload
def tool(function: Callable[..., Any], /) -> Tool: ...


@overload
def tool(
    *,
    name: str | None = None,
    timeout_s: float | None = None,
    max_result_chars: int | None = None,
    memory_mb: int | None = None,
    isolate: bool | None = None,
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    function: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    timeout_s: float | None = None,
    max_result_chars: int | None = None,
    memory_mb: int | None = None,
    isolate: bool | None = None,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Make a typed function a tool: ``@tool`` or ``@tool(name="lookup", timeout_s=60)``. The
    schema comes from the type hints, the descriptions from the docstring's ``Args:``; the
    result can still be called as the function, and goes into a ``ToolRegistry``.

    Each call runs under the run's limits (``tool_timeout_s``, ``tool_max_result_chars``,
    ``tool_memory_mb`` in the settings) in a child process; the keyword arguments set this
    tool's own. ``isolate=False`` runs it in the caller's process (for a tool that changes
    the caller's objects): its time limit then stops the waiting, not the tool."""
    limits: dict[str, Any] = {
        "timeout_s": timeout_s,
        "max_result_chars": max_result_chars,
        "memory_mb": memory_mb,
        "isolate": isolate,
    }

    def build(fn: Callable[..., Any]) -> Tool:
        return Tool.from_function(fn, name=name, **limits)

    return build(function) if function is not None else build


_PREPARED: weakref.WeakSet[Callable[[], Any]] = weakref.WeakSet()
_PREPARING = threading.Lock()


def _prepared(prepare: Callable[[], Any]) -> None:
    with _PREPARING:
        if prepare not in _PREPARED:
            prepare()
            _PREPARED.add(prepare)


def checked_limits(limits: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """A tool's own limits (``timeout_s=60``...), checked now rather than at its first call."""
    known = set(ToolLimits.__dataclass_fields__)
    unknown = set(limits) - known
    if unknown:
        raise TypeError(f"unknown tool limits {sorted(unknown)}; known: {sorted(known)}")
    given = tuple((key, value) for key, value in limits.items() if value is not None)
    replace(DEFAULT_LIMITS, **dict(given))  # a ValueError now, not at the first call
    return given


def format_result(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, int | float):
        return f"{value:.12g}" if isinstance(value, float) else str(value)
    return json.dumps(value, ensure_ascii=False, default=str)


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """Google style: the first paragraph, and ``name: text`` lines under ``Args:``."""
    summary_lines: list[str] = []
    args: dict[str, str] = {}
    current: str | None = None
    section = "summary"
    for raw in doc.splitlines():
        line = raw.strip()
        if section == "summary":
            if line.lower() in ("args:", "arguments:", "parameters:"):
                section = "args"
            elif not line and summary_lines:
                section = "rest"
            elif line:
                summary_lines.append(line)
        elif section == "rest" and line.lower() in ("args:", "arguments:", "parameters:"):
            section = "args"
        elif section == "args":
            if not line:
                continue
            if line.endswith(":") and " " not in line:  # next section (Returns:, Raises:)
                section = "rest"
                continue
            name, sep, text = line.partition(":")
            key = name.split("(")[0].strip()
            if sep and key.isidentifier():
                current = key
                args[current] = text.strip()
            elif current:
                args[current] = f"{args[current]} {line}".strip()
    return " ".join(summary_lines), args
