"""Tool calls over a chat endpoint: the specs sent, and the call read back from the reply.

A call goes either through the endpoint's native ``tools=`` or, where the endpoint refuses
them, as a JSON reply ``{"tool", "arguments"}`` under a schema, the tools described in the
system message (prompt ``tool_call_fallback.system.j2``). Either way an unusable call (an
unknown tool, arguments that are not a JSON object) is the model's mistake, not a failure:
it is read back as no call, with the reason as its ``problem``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from tierflow.agents.prompting import render_text
from tierflow.agents.protocol import Message

__all__ = ["ToolCallResult", "function_spec", "tool_reply_schema", "with_tool_instruction", "chosen_call"]

ToolChoice = Literal["auto", "required"]
_FALLBACK_PROMPT = "tool_call_fallback.system.j2"


@dataclass(frozen=True)
class ToolCallResult:
    """What one ``call_tool`` returned: the tool the model chose and its arguments, or none."""

    name: str | None  # None: no call, or an unusable one (then ``problem`` says why)
    arguments: dict[str, Any]
    text: str  # what the model wrote: its message, or else the raw arguments of its call
    model: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    native: bool  # True: through the endpoint's tools=; False: a JSON reply to a schema
    messages: list[Message]  # exactly what was sent (the JSON path adds the tools to the system message)
    finish_reason: str = "stop"
    problem: str | None = None  # the model's mistake, for the trace or for asking again


def function_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The function of a tool spec, bare as ``ToolRegistry.specs()`` gives it or wrapped in
    ``{"type": "function", "function": ...}``."""
    function = spec.get("function") if spec.get("type") == "function" else spec
    if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
        raise ValueError(f"a tool spec needs a name, as ToolRegistry.specs() gives them: {spec!r}")
    return dict(function)


def tool_reply_schema(names: Sequence[str], tool_choice: ToolChoice) -> dict[str, Any]:
    """The schema of a JSON reply that calls one of ``names`` (or ``"none"``, when optional)."""
    choices = [*names, "none"] if tool_choice == "auto" else list(names)
    return {
        "type": "object",
        "properties": {"tool": {"type": "string", "enum": choices}, "arguments": {"type": "object"}},
        "required": ["tool", "arguments"],
    }


def with_tool_instruction(
    messages: Sequence[Message], functions: Sequence[Mapping[str, Any]], tool_choice: ToolChoice
) -> list[Message]:
    """The messages with the tools described in the system message (a copy)."""
    instruction = render_text(
        _FALLBACK_PROMPT, tool_choice=tool_choice, tools=[json.dumps(function) for function in functions]
    )
    if messages and messages[0]["role"] == "system":
        first: Message = {"role": "system", "content": f"{messages[0]['content']}\n\n{instruction}"}
        return [first, *messages[1:]]
    return [{"role": "system", "content": instruction}, *messages]


def chosen_call(
    message: Any, native: bool, names: Sequence[str], tool_choice: ToolChoice
) -> tuple[str | None, dict[str, Any], str, str | None]:
    """The tool a reply calls (or None), its arguments, the reply's text, and any problem."""
    name, arguments, text, problem = _read_call(message, native, names)
    if name is None and problem is None and tool_choice == "required":
        problem = "it called no tool, though one was required"
    return name, arguments, text, problem


def _read_call(
    message: Any, native: bool, names: Sequence[str]
) -> tuple[str | None, dict[str, Any], str, str | None]:
    calls = getattr(message, "tool_calls", None) or []
    function = getattr(calls[0], "function", None) if native and calls else None
    if function is not None:
        name, arguments, problem = _checked_call(function.name, function.arguments, names)
        return name, arguments, message.content or function.arguments or "", problem
    text = message.content or ""
    name, arguments, problem = (None, {}, None) if native else _json_call(text, names)
    return name, arguments, text, problem


def _json_call(text: str, names: Sequence[str]) -> tuple[str | None, dict[str, Any], str | None]:
    try:
        reply = json.loads(text)
    except ValueError:
        return None, {}, "the reply is not JSON"
    if not isinstance(reply, dict) or not isinstance(reply.get("tool"), str):
        return None, {}, 'the reply names no "tool"'
    if reply["tool"] == "none":
        return None, {}, None
    return _checked_call(reply["tool"], reply.get("arguments", {}), names)


def _checked_call(
    name: object, arguments: object, names: Sequence[str]
) -> tuple[str | None, dict[str, Any], str | None]:
    if name not in names:
        return None, {}, f"it called {name!r}, which is not one of the tools ({', '.join(names)})"
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments or "{}")
        except ValueError:
            return None, {}, f"the arguments of {name!r} are not JSON: {arguments!r}"
    if not isinstance(arguments, dict):
        return None, {}, f"the arguments of {name!r} are not a JSON object: {arguments!r}"
    return str(name), arguments, None
