"""Walking JSON-like values (dicts, lists and tuples of them): the one walker the trace's
JSON, the secret scrubber and the escalation score's argument features share."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["map_json", "json_leaves"]


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
