"""Tool argument schemas: the flat form a model is shown, and pydantic models built from
a JSON schema.

``flat_schema`` is how every tool's arguments reach a model, whether they come from a
typed Python function, a LangChain tool or a JSON schema: ``$ref`` inlined, no titles,
``Optional[X]`` as ``X``.

``model_from_schema`` serves tools described by a JSON schema rather than a Python signature
(OpenAI-style function specs, BFCL's function docs): the model it builds validates the
arguments the same way as for typed Python functions.

Supported: ``string``, ``integer``, ``number``, ``boolean``, ``array`` (with ``items``),
``object`` (with ``properties``, or free-form), ``enum``, ``required`` and ``default``.
A property without a known type accepts any JSON value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model
from tierflow.json_values import map_children

__all__ = ["flat_schema", "model_from_schema"]


def flat_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """An arguments schema as a model is shown it: an object with ``properties`` and
    ``required``, ``$ref`` inlined (a recursive one becomes a free-form object), no titles,
    no top-level description, and ``Optional[X]`` (``anyOf: [X, null]``) as ``X``.

    >>> flat_schema({"title": "Args", "$defs": {"U": {"title": "U", "enum": ["km", "mi"]}},
    ...              "properties": {"unit": {"anyOf": [{"$ref": "#/$defs/U"}, {"type": "null"}]}}})
    {'properties': {'unit': {'enum': ['km', 'mi']}}, 'type': 'object', 'required': []}
    """
    definitions = {**schema.get("definitions", {}), **schema.get("$defs", {})}
    flat: dict[str, Any] = _flatten(dict(schema), definitions, frozenset())
    flat.pop("description", None)
    flat["type"] = "object"
    flat.setdefault("properties", {})
    flat.setdefault("required", [])
    return flat


def _flatten(node: dict[str, Any], definitions: Mapping[str, Any], seen: frozenset[str]) -> dict[str, Any]:
    ref = node.get("$ref")
    if isinstance(ref, str):
        key = ref.rsplit("/", 1)[-1]
        rest = {k: v for k, v in node.items() if k != "$ref"}
        if ref in seen or key not in definitions:  # recursive or unknown: a free-form object
            return {"type": "object", **_flatten(rest, definitions, seen)}
        return _flatten({**definitions[key], **rest}, definitions, seen | {ref})
    children = map_children(node, lambda sub: _flatten(sub, definitions, seen))
    flat = {key: value for key, value in children.items() if key not in ("title", "$defs", "definitions")}
    for combinator in ("anyOf", "oneOf", "allOf"):
        options = flat.get(combinator)
        if isinstance(options, list):
            kept = [o for o in options if o != {"type": "null"}]
            if len(kept) == 1 and isinstance(kept[0], dict):
                del flat[combinator]
                flat = {**kept[0], **flat}
    kind = flat.get("type")
    if isinstance(kind, list) and "null" in kind and len(kind) == 2:
        flat["type"] = next(k for k in kind if k != "null")
    return flat


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
