"""Tools described by a JSON schema rather than a Python signature (OpenAI-style function
specs, BFCL's function docs): a pydantic model built from the schema validates the
arguments the same way as for typed Python functions.

Supported: ``string``, ``integer``, ``number``, ``boolean``, ``array`` (with ``items``),
``object`` (with ``properties``, or free-form), ``enum``, ``required`` and ``default``.
A property without a known type accepts any JSON value.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

__all__ = ["model_from_schema"]

_SCALARS: dict[str, Any] = {"string": str, "integer": int, "number": float, "boolean": bool}


def _python_type(schema: dict[str, Any], name: str) -> Any:
    enum = schema.get("enum")
    if isinstance(enum, list) and enum and all(isinstance(v, str | int | bool) for v in enum):
        literal: Any = Literal  # a Literal of runtime values
        return literal[tuple(enum)]
    kind = schema.get("type")
    if kind in _SCALARS:
        return _SCALARS[kind]
    if kind == "array":
        items = schema.get("items")
        item_type = _python_type(items, f"{name}_item") if isinstance(items, dict) else Any
        generic: Any = list
        return generic[item_type]
    if kind == "object":
        if isinstance(schema.get("properties"), dict) and schema["properties"]:
            return model_from_schema(name, schema)
        return dict[str, Any]
    return Any


def model_from_schema(name: str, schema: dict[str, Any]) -> type[BaseModel]:
    """A pydantic model that accepts exactly the objects ``schema`` describes (extra keys refused).

    Dump it with ``by_alias=True`` to get the schema's property names back."""
    required = set(schema.get("required") or [])
    fields: dict[str, Any] = {}
    # Property names need not be Python names ("_class", "max-results", "schema"): every field
    # gets a safe name and the property's name as its alias; dump with by_alias=True.
    for index, (prop, prop_schema) in enumerate((schema.get("properties") or {}).items()):
        annotation = _python_type(prop_schema, f"{name}_{index}")
        description = prop_schema.get("description")
        if prop in required:
            fields[f"p{index}"] = (annotation, Field(..., alias=prop, description=description))
        else:
            default = prop_schema.get("default")
            fields[f"p{index}"] = (annotation | None, Field(default, alias=prop, description=description))
    model_name = re.sub(r"\W", "_", name)
    return create_model(model_name, __config__=ConfigDict(extra="forbid"), **fields)
