"""Walking JSON-like values (dicts, lists and tuples of them) and JSON schemas.

``map_json`` and ``json_leaves`` are the one value walker the trace's JSON, the secret
scrubber and the escalation score's argument features share. ``map_children`` and
``map_subschemas`` are the one schema walker: they know which keywords hold subschemas
(``properties``, ``items``, ``anyOf`` ...) and which hold data (``enum``, ``default``,
``required`` ...), so a property named ``title`` or an enum of objects is never mistaken for
a keyword. The grammar builder, the tool schema flattener and the BFCL translator use them.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["map_json", "json_leaves", "map_children", "map_subschemas"]


def map_json(value: Any, leaf: Callable[[Any], Any], *, keys: bool = False) -> Any:
    """``value`` rebuilt with ``leaf`` applied to everything that is not a dict, list or
    tuple (and, with ``keys``, to the dicts' keys too)."""
    if isinstance(value, dict):
        return {
            (map_json(key, leaf, keys=keys) if keys else key): map_json(item, leaf, keys=keys)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [map_json(item, leaf, keys=keys) for item in value]
    if isinstance(value, tuple):
        return tuple(map_json(item, leaf, keys=keys) for item in value)
    return leaf(value)


def json_leaves(value: Any) -> Iterator[Any]:
    """Everything inside ``value`` that is not a dict, list or tuple, in order (dict values,
    not keys)."""
    if isinstance(value, dict):
        for item in value.values():
            yield from json_leaves(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from json_leaves(item)
    else:
        yield value


# Keywords whose value is one subschema, a list of them, or a map of names to them.
_ONE_SCHEMA = frozenset(
    {
        "items",
        "additionalProperties",
        "additionalItems",
        "not",
        "if",
        "then",
        "else",
        "contains",
        "propertyNames",
        "unevaluatedItems",
        "unevaluatedProperties",
        "contentSchema",
    }
)
_SCHEMA_LISTS = frozenset({"allOf", "anyOf", "oneOf", "prefixItems", "items"})
_NAMED_SCHEMAS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"})

Schema = dict[str, Any]


def map_children(schema: Schema, child: Callable[[Schema], Any]) -> Schema:
    """A copy of ``schema`` with ``child`` applied to each of its direct subschemas.

    Data keywords (``enum``, ``const``, ``default``, ``required``, unknown keys) are deep
    copies; boolean subschemas (``additionalProperties: false``) are kept as they are.

    >>> map_children({"type": "array", "items": {"type": "string"}}, lambda s: {**s, "x": 1})
    {'type': 'array', 'items': {'type': 'string', 'x': 1}}
    """

    def apply(sub: Any) -> Any:
        return child(sub) if isinstance(sub, dict) else copy.deepcopy(sub)

    out: Schema = {}
    for key, value in schema.items():
        if key in _NAMED_SCHEMAS and isinstance(value, dict):
            out[key] = {name: apply(sub) for name, sub in value.items()}
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            out[key] = [apply(sub) for sub in value]
        elif key in _ONE_SCHEMA and isinstance(value, dict):
            out[key] = child(value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def map_subschemas(schema: Schema, transform: Callable[[Schema], Any]) -> Any:
    """``schema`` rebuilt bottom-up: every subschema, the root last, passes through
    ``transform`` after its own subschemas have.

    >>> drop_titles = lambda s: {k: v for k, v in s.items() if k != "title"}
    >>> map_subschemas({"title": "A", "properties": {"title": {"title": "T", "type": "string"}}}, drop_titles)
    {'properties': {'title': {'type': 'string'}}}
    """
    return transform(map_children(schema, lambda sub: map_subschemas(sub, transform)))
