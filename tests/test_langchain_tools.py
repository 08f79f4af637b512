"""LangChain tools as tierflow tools: their schema as the model sees it, calls under the run's
limits, LangChain's errors as ``ToolError``, and a LangChain tool chosen in the task graph."""

from __future__ import annotations

import doctest
import enum
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from typing import Annotated, Any

import pytest
import tierflow.tools.langchain
from langchain_core.tools import (
    InjectedToolArg,
    InjectedToolCallId,
    StructuredTool,
    ToolException,
    tool,
)
from pydantic import BaseModel, Field
from tierflow.errors import ToolError
from tierflow.memory import TraceStore
from tierflow.tools import Tool, ToolRegistry
from tierflow.tools.langchain import from_langchain, langchain_name

from tests.scripted import ANSWER, EXTRACT, PLAN, SELECT, model_calls, scripted_runner, tool_calls


@tool(parse_docstring=True)
def multiply(a: int, b: float = 2.0) -> float:
    """Multiply two numbers.

    Args:
        a: the first factor
        b: the second factor
    """
    return a * b


class Unit(enum.StrEnum):
    CELSIUS = "celsius"
    FAHRENHEIT = "fahrenheit"


class ForecastInput(BaseModel):
    city: str = Field(description="the city, e.g. Paris")
    unit: Unit = Field(Unit.CELSIUS, description="the temperature unit")
    days: int | None = Field(None, description="how many days ahead")


def _forecast(city: str, unit: Unit = Unit.CELSIUS, days: int | None = None) -> dict[str, Any]:
    return {"city": city, "unit": unit.value, "days": days}


forecast = StructuredTool.from_function(
    _forecast, name="forecast", description="The weather forecast for a city.", args_schema=ForecastInput
)


def test_the_module_examples_run() -> None:
    assert doctest.testmod(tierflow.tools.langchain).failed == 0


def test_a_tool_function_keeps_its_name_description_and_typed_arguments() -> None:
    built = from_langchain(multiply)
    assert (built.name, built.description) == ("multiply", "Multiply two numbers.")
    assert built.parameters == {
        "type": "object",
        "properties": {
            "a": {"type": "integer", "description": "the first factor"},
            "b": {"type": "number", "description": "the second factor", "default": 2.0},
        },
        "required": ["a"],
    }
    assert built.call({"a": 3, "b": 1.5}) == "4.5"
    assert built.call({"a": 3}) == "6.0"  # LangChain's own default
    with pytest.raises(ToolError, match="invalid arguments for multiply: a: "):
        built.call({"a": "three"})
    with pytest.raises(ToolError, match="c: Extra inputs are not permitted"):
        built.call({"a": 1, "c": 2})


def test_a_structured_tool_schema_is_flat_with_its_enum_and_optional_field() -> None:
    built = from_langchain(forecast)
    assert built.parameters == {
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "the city, e.g. Paris"},
            "unit": {
                "type": "string",
                "enum": ["celsius", "fahrenheit"],
                "description": "the temperature unit",
                "default": "celsius",
            },
            "days": {"type": "integer", "description": "how many days ahead", "default": None},
        },
        "required": ["city"],
    }
    assert built.call({"city": "Paris", "unit": "fahrenheit"}) == (
        '{"city": "Paris", "unit": "fahrenheit", "days": null}'
    )
    assert built.call({"city": "Oslo", "days": 3}) == '{"city": "Oslo", "unit": "celsius", "days": 3}'
    with pytest.raises(ToolError, match="unit"):
        built.call({"city": "Paris", "unit": "kelvin"})


def test_a_tool_exception_is_a_tool_error_with_its_message() -> None:
    @tool
    def lookup(key: str) -> str:
        """Look a key up."""
        raise ToolException(f"no entry for {key!r}; known keys: alpha, beta")

    with pytest.raises(ToolError, match="no entry for 'gamma'; known keys: alpha, beta") as raised:
        from_langchain(lookup).call({"key": "gamma"})
    assert type(raised.value) is ToolError  # not a ToolBug: the tool refused its input

    lookup.handle_tool_error = True  # the tool turns it into an error message itself
    with pytest.raises(ToolError, match="no entry for 'gamma'"):
        from_langchain(lookup).call({"key": "gamma"})


def test_injected_arguments_are_hidden_from_the_model_and_given_by_the_caller() -> None:
    @tool
    def greet(
        name: str, user: Annotated[str, InjectedToolArg], call_id: Annotated[str, InjectedToolCallId]
    ) -> str:
        """Greet someone on behalf of the user."""
        return f"{user} greets {name} (call {call_id.split('-')[0]})"

    built = from_langchain(greet, inject={"user": "Ada"})
    assert list(built.parameters["properties"]) == ["name"] and built.parameters["required"] == ["name"]
    assert built.call({"name": "Bob"}) == "Ada greets Bob (call tierflow)"
    with pytest.raises(ToolError, match="user: Extra inputs"):  # the model cannot set it
        built.call({"name": "Bob", "user": "Mallory"})
    with pytest.raises(ValueError, match=r"needs injected arguments \['user'\].*inject=\{'user': \.\.\.\}"):
        from_langchain(greet)
    with pytest.raises(ValueError, match=r"inject gives \['name'\], which the model is shown"):
        from_langchain(greet, inject={"user": "Ada", "name": "Eve"})


def test_a_call_runs_under_the_limits_and_a_stuck_tool_is_stopped() -> None:
    @tool
    def wait_forever(reason: str) -> str:
        """Wait for something that never comes."""
        threading.Event().wait()
        return reason

    with pytest.raises(ToolError, match=r"wait_forever ran past its 0.2 s time limit and was stopped"):
        from_langchain(wait_forever, timeout_s=0.2).call({"reason": "test"})
    with pytest.raises(ToolError, match="over the 5-character limit"):
        from_langchain(multiply, max_result_chars=5).call({"a": 123456})
    with pytest.raises(TypeError, match="unknown tool limits"):
        from_langchain(multiply, time_limit=3)


def test_async_only_tools_run_and_artifacts_stay_out_of_the_text() -> None:
    async def fetch_page(url: str) -> str:
        """Fetch a page (async only)."""
        return f"<html>{url}</html>"

    async_tool = StructuredTool.from_function(coroutine=fetch_page)
    assert from_langchain(async_tool).call({"url": "x.org"}) == "<html>x.org</html>"

    @tool(response_format="content_and_artifact")
    def search(query: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Search the notes."""
        blocks = [{"type": "text", "text": f"2 notes on {query}"}, {"type": "image", "url": "chart.png"}]
        return blocks, {"raw": ["note-1", "note-2"]}

    text = from_langchain(search, isolate=False).call({"query": "tea"})
    assert text == "2 notes on tea\n[image block left out: tierflow passes tool results as text]"


def test_return_direct_tools_are_called_like_any_tool() -> None:
    @tool(return_direct=True)
    def final_answer(text: str) -> str:
        """Give the final answer."""
        return text

    assert from_langchain(final_answer).call({"text": "done"}) == "done"


def test_names_are_made_to_fit_and_an_explicit_name_is_checked() -> None:
    @tool("Weather lookup!")
    def weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    assert from_langchain(weather).name == "Weather_lookup_"
    assert langchain_name("2fast") == "_2fast" and len(langchain_name("x" * 100)) == 64
    assert from_langchain(weather, name="weather").name == "weather"
    with pytest.raises(ValueError, match="tool name 'the weather' must match"):
        from_langchain(weather, name="the weather")


def test_the_registry_takes_langchain_tools_directly() -> None:
    registry = ToolRegistry([multiply])
    registry.register(forecast)
    assert registry.names() == ["multiply", "forecast"]
    assert isinstance(registry.get("forecast"), Tool)
    multiplied = registry.get("multiply")
    assert multiplied is not None and multiplied.call({"a": 2}) == "4.0"
    with pytest.raises(ValueError, match="already registered"):
        registry.register(multiply)
    with pytest.raises(TypeError, match="a int is not a tool"):
        registry.register(42)  # type: ignore[arg-type]


def test_the_registry_does_not_import_langchain_for_plain_functions() -> None:
    code = (
        "import sys\n"
        "from tierflow.tools import ToolRegistry\n"
        "def add(a: int, b: int) -> int:\n"
        "    '''Add.'''\n"
        "    return a + b\n"
        "assert ToolRegistry([add]).get('add').call({'a': 1, 'b': 2}) == '3'\n"
        "print('langchain_core' in sys.modules)\n"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "False"


def test_a_real_langchain_community_file_tool(tmp_path: Path) -> None:
    with warnings.catch_warnings():  # the package warns at import that it is being sunset
        warnings.simplefilter("ignore", DeprecationWarning)
        file_management = pytest.importorskip("langchain_community.tools.file_management")
    (tmp_path / "notes.txt").write_text("buy oat milk\n", encoding="utf-8")
    built = from_langchain(file_management.ReadFileTool(root_dir=str(tmp_path)), name="lc_read_file")
    assert (built.name, built.description) == ("lc_read_file", "Read file from disk")
    assert built.parameters == {
        "type": "object",
        "properties": {"file_path": {"type": "string", "description": "name of file"}},
        "required": ["file_path"],
    }
    assert built.call({"file_path": "notes.txt"}) == "buy oat milk\n"
    assert built.call({"file_path": "../outside.txt"}).startswith("Error: Access denied")  # its own text
    with pytest.raises(ToolError, match="file_path: Field required"):
        built.call({})


def test_a_langchain_tool_is_chosen_and_called_in_the_task_graph(store: TraceStore, tmp_path: Path) -> None:
    runner, _small, _large = scripted_runner(
        store,
        tmp_path,
        llm={PLAN: ['{"steps": ["Get the forecast for Oslo in fahrenheit"], "answer": ""}']},
        slm={
            SELECT: ['{"tool": "forecast"}'],
            EXTRACT: ['{"city": "Oslo", "unit": "fahrenheit"}'],
            ANSWER: ["The forecast for Oslo is ready."],
        },
    )
    runner.tools.register(forecast)
    result = runner.run("What is the forecast for Oslo in fahrenheit?")
    assert result.status == "succeeded"
    trace = store.get_run(result.run_id)
    select_call = next(call for call in model_calls(trace) if call.node == "select_tool")
    assert "forecast" in select_call.output_schema["properties"]["tool"]["enum"]
    [call] = tool_calls(trace)
    assert (call.tool, call.arguments, call.error) == (
        "forecast",
        {"city": "Oslo", "unit": "fahrenheit"},
        None,
    )
    assert call.result == '{"city": "Oslo", "unit": "fahrenheit", "days": null}'
