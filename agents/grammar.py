"""Turning a JSON schema into a llama.cpp grammar that really constrains the output.

llama-cpp-python's ``response_format`` path falls back to generic JSON when a schema does
not convert, silently. Here a failed conversion is an error, and the schema is first made
flat enough for small models: ``maxLength``/``maxItems`` become huge repetition rules
that llama.cpp rejects, so bounds are dropped from the grammar (values are still checked
with pydantic afterwards).
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from tierflow.errors import SchemaError
from tierflow.json_values import map_subschemas

__all__ = ["grammar_schema", "build_grammar"]

_DROPPED_KEYWORDS = frozenset(
    {
        "maxLength",
        "minLength",
        "maxItems",
        "minItems",
        "pattern",
        "format",
        "title",
        "description",
        "examples",
        "default",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minimum",
        "maximum",
        "multipleOf",
    }
)


def grammar_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``schema`` with the keywords that hurt grammar sampling removed."""

    result: dict[str, Any] = map_subschemas(
        schema, lambda node: {key: value for key, value in node.items() if key not in _DROPPED_KEYWORDS}
    )
    return result


@lru_cache(maxsize=256)
def _grammar_from_json(schema_json: str) -> Any:
    from llama_cpp.llama_grammar import LlamaGrammar

    try:
        return LlamaGrammar.from_json_schema(schema_json, verbose=False)
    except Exception as exc:  # llama-cpp raises bare Exception/ValueError/RuntimeError here
        raise SchemaError(
            f"this JSON schema cannot be turned into a llama.cpp grammar: {exc}",
            hint="Keep tool parameters flat: str, int, float, bool, enums, lists of those.",
        ) from exc


def build_grammar(schema: dict[str, Any]) -> Any:
    """A ``LlamaGrammar`` for ``schema`` (cached); raises ``SchemaError`` if it does not convert."""
    return _grammar_from_json(json.dumps(grammar_schema(schema), sort_keys=True))
