"""Turning a JSON schema into a llama.cpp grammar that really constrains the output.

llama-cpp-python's ``response_format`` path falls back to generic JSON when a schema does
not convert, silently. Here a failed conversion is an error, and the schema is first made
flat enough for small models: ``maxLength``/``maxItems`` become huge repetition rules
that llama.cpp rejects, so bounds are dropped from the grammar (values are still checked
with pydantic afterwards).
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

from tierflow.errors import SchemaError
from tierflow.json_values import map_subschemas

__all__ = ["grammar_schema", "build_grammar", "check_grammar"]

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


_LITERAL_ESCAPES = {"\r": "\\r", "\n": "\\n", '"': '\\"', "\\": "\\\\"}
_LITERAL = re.compile(r'[\r\n"\\]')


def _converter(prop_order: dict[str, int]) -> Any:
    """llama-cpp-python's JSON-schema converter, writing literals GBNF can read: its own
    leaves a backslash unescaped, so an enum value holding a quote (``"un-stringize"``, as
    JSON ``\\"``) ends the literal early, and llama.cpp, unable to parse the grammar, has
    no sampler to run (the process crashes)."""
    from llama_cpp.llama_grammar import SchemaConverter

    class Converter(SchemaConverter):
        def _format_literal(self, literal: str) -> str:
            return '"' + _LITERAL.sub(lambda m: _LITERAL_ESCAPES[m.group(0)], literal) + '"'

    return Converter(  # type: ignore[no-untyped-call]  # llama_cpp is untyped
        prop_order=prop_order, allow_fetch=False, dotall=False, raw_pattern=False
    )


@lru_cache(maxsize=256)
def _grammar_from_json(schema_json: str, order: tuple[str, ...] = ()) -> Any:
    from llama_cpp.llama_grammar import LlamaGrammar

    try:
        converter = _converter({name: index for index, name in enumerate(order)})
        converter.visit(converter.resolve_refs(json.loads(schema_json), "stdin"), "")
        return LlamaGrammar.from_string(converter.format_grammar(), verbose=False)
    except Exception as exc:  # llama-cpp raises bare Exception/ValueError/RuntimeError here
        raise SchemaError(
            f"this JSON schema cannot be turned into a llama.cpp grammar: {exc}",
            hint="Keep tool parameters flat: str, int, float, bool, enums, lists of those.",
        ) from exc


def build_grammar(schema: dict[str, Any]) -> Any:
    """A ``LlamaGrammar`` for ``schema`` (cached); raises ``SchemaError`` if it does not convert.

    The model writes an object's properties in their sorted order, unless the schema names
    an order in ``propertyOrdering`` (as Gemini's API does): a step whose model should write
    one field before the next (the sentence it answers from, then the answer) says so."""
    flat = grammar_schema(schema)
    order = flat.pop("propertyOrdering", None) or []
    return _grammar_from_json(json.dumps(flat, sort_keys=True), tuple(order))


def check_grammar(vocab: Any, grammar: Any) -> None:
    """Raise ``SchemaError`` if llama.cpp cannot parse ``grammar`` for a model's ``vocab``
    (it would otherwise sample with no grammar sampler and crash the process)."""
    from llama_cpp import llama_cpp

    sampler = llama_cpp.llama_sampler_init_grammar(
        vocab, grammar._grammar.encode("utf-8"), grammar._root.encode("utf-8")
    )
    if not sampler:
        raise SchemaError(
            "llama.cpp cannot parse the grammar made from this JSON schema",
            hint="Keep tool parameters flat: str, int, float, bool, enums, lists of those.",
        )
    llama_cpp.llama_sampler_free(sampler)
