import doctest
import enum
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import tierflow.json_values
import tierflow.tools.schema
from pydantic import BaseModel
from tierflow.agents.grammar import build_grammar, grammar_schema
from tierflow.errors import ToolError
from tierflow.tools import Tool, ToolRegistry, default_registry


def convert(amount: float, currency: str = "EUR", exact: bool = False) -> str:
    """Convert money.

    More text that is not part of the summary.

    Args:
        amount: how much money
            (may span lines)
        currency: ISO code
        exact: keep all decimals

    Returns:
        text
    """
    return f"{amount} {currency} {exact}"


def test_schema_comes_from_signature_and_docstring() -> None:
    tool = Tool.from_function(convert)
    assert tool.description == "Convert money."
    assert tool.parameters == {
        "additionalProperties": False,
        "properties": {
            "amount": {"description": "how much money (may span lines)", "type": "number"},
            "currency": {"default": "EUR", "description": "ISO code", "type": "string"},
            "exact": {"default": False, "description": "keep all decimals", "type": "boolean"},
        },
        "required": ["amount"],
        "type": "object",
    }


class Unit(enum.Enum):
    km = "km"
    mi = "mi"


class Leg(BaseModel):
    title: str
    distance: float


def plan(legs: list[Leg], unit: Unit | None = None, title: str = "trip") -> str:
    """Plan a trip."""
    return title


def test_typed_schemas_are_shown_flat_like_every_other_tool() -> None:
    """Nested models and enums are inlined, Optional[X] is X, titles go, and a property
    named ``title`` stays: the same flattening as LangChain tools get."""
    parameters = Tool.from_function(plan).parameters
    text = json.dumps(parameters)
    assert "$ref" not in text and "$defs" not in text and "anyOf" not in text
    assert parameters["properties"]["unit"] == {"default": None, "enum": ["km", "mi"], "type": "string"}
    leg = parameters["properties"]["legs"]["items"]
    assert set(leg["properties"]) == {"title", "distance"}
    assert "title" not in leg and "title" not in leg["properties"]["title"]
    assert parameters["properties"]["title"] == {"default": "trip", "type": "string"}
    assert build_grammar(parameters) is not None  # and llama.cpp takes it as a grammar


def test_the_schema_walker_tells_keywords_from_names_and_data() -> None:
    schema = {
        "type": "object",
        "title": "drop me",
        "properties": {
            "format": {"type": "string", "format": "date", "title": "drop me too"},
            "shape": {"enum": [{"title": "kept", "maxLength": 3}], "default": {"pattern": "kept"}},
        },
        "required": ["format"],
    }
    stripped = grammar_schema(schema)
    assert stripped == {
        "type": "object",
        "properties": {"format": {"type": "string"}, "shape": {"enum": [{"title": "kept", "maxLength": 3}]}},
        "required": ["format"],
    }
    assert schema["properties"]["format"]["format"] == "date"  # the input is left alone


def test_schema_module_examples_hold() -> None:
    assert doctest.testmod(tierflow.json_values).failed == 0
    assert doctest.testmod(tierflow.tools.schema).failed == 0


def test_validation_errors_name_the_field() -> None:
    tool = Tool.from_function(convert)
    with pytest.raises(ToolError, match="amount: Field required"):
        tool.call({})
    with pytest.raises(ToolError, match="colour: Extra inputs are not permitted"):
        tool.call({"amount": 1, "colour": "red"})
    assert tool.call({"amount": "2.5"}) == "2.5 EUR False"


def test_functions_without_hints_or_with_varargs_are_refused() -> None:
    def untyped(x):  # type: ignore[no-untyped-def]
        return x

    def varargs(*values: int) -> int:
        return 0

    with pytest.raises(TypeError, match="needs a type hint"):
        Tool.from_function(untyped)
    with pytest.raises(TypeError, match=r"\*args"):
        Tool.from_function(varargs)
    with pytest.raises(ValueError, match="must match"):
        Tool.from_function(convert, name="bad name")


def test_registry_refuses_duplicates_and_the_reserved_name() -> None:
    registry = ToolRegistry([convert])
    with pytest.raises(ValueError, match="already registered"):
        registry.register(convert)
    with pytest.raises(ValueError, match="reserved"):
        registry.register(Tool.from_function(convert, name="none"))
    assert registry.names() == ["convert"] and "convert" in registry and len(registry) == 1


def test_builtin_set_and_units(tmp_path: Path) -> None:
    clock = lambda: datetime(2026, 3, 14, 15, 9, 26, tzinfo=UTC)  # noqa: E731
    registry = default_registry(tmp_path, clock=clock)
    assert registry.names() == [
        "calculator",
        "unit_convert",
        "current_datetime",
        "read_file",
        "list_files",
        "word_count",
    ]
    convert_unit = registry.get("unit_convert")
    assert convert_unit is not None
    assert convert_unit.call({"value": 5, "from_unit": "km", "to_unit": "mile"}) == "5 km = 3.10686 mile"
    assert convert_unit.call({"value": 100, "from_unit": "celsius", "to_unit": "F"}) == "100 celsius = 212 F"
    with pytest.raises(ToolError, match="different things"):
        convert_unit.call({"value": 1, "from_unit": "kg", "to_unit": "meter"})
    with pytest.raises(ToolError, match="unknown unit"):
        convert_unit.call({"value": 1, "from_unit": "blorp", "to_unit": "meter"})
    now = registry.get("current_datetime")
    assert now is not None
    assert now.call({"timezone": "Asia/Tokyo"}) == "2026-03-15T00:09:26+09:00 (Sunday, Asia/Tokyo)"
    with pytest.raises(ToolError, match="unknown time zone"):
        now.call({"timezone": "Mars/Olympus"})
