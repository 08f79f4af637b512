"""Checks on a graph before it runs, each failing with a ``GraphError`` that says what to
fix: that it is a compiled graph, that the input fits its input schema, that the policy
names only nodes it has; and ``load_graph`` for ``MODULE:ATTR`` references."""

from __future__ import annotations

import importlib
import os
import sys
import types
import typing
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError
from tierflow.agents.policy import TierPolicy
from tierflow.errors import GraphError, describe_validation_error
from typing_extensions import is_typeddict

__all__ = ["load_graph", "graph_key", "check_graph", "check_input", "check_policy", "node_names"]


def load_graph(reference: str) -> Any:
    """The compiled graph at ``MODULE:ATTR`` (e.g. ``tierflow.graphs.examples.triage:graph``)."""
    module_name, sep, attribute = reference.partition(":")
    if not sep or not module_name or not attribute:
        raise GraphError(
            f"--graph {reference!r} is not MODULE:ATTR",
            hint="For example: --graph tierflow.graphs.examples.triage:graph",
        )
    _current_folder_importable()
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise GraphError(
            f"module {module_name!r} does not import: {exc}",
            hint="Check the module path; a module of your own must be importable "
            "(run from its folder, or add it to PYTHONPATH).",
        ) from None
    except SystemExit as exc:  # its import ran a program that exited: no graph, whatever the code
        raise GraphError(
            f"module {module_name!r} exited (sys.exit({exc.code!r})) while being imported",
            hint='Put the code that runs a program under `if __name__ == "__main__":`.',
        ) from None
    except Exception as exc:  # noqa: BLE001 - any error of the user's module at import time
        raise GraphError(
            f"module {module_name!r} failed while being imported: {type(exc).__name__}: {exc}",
            hint=f"Fix the module; `python -c 'import {module_name}'` shows where it fails.",
        ) from None
    try:
        graph = getattr(module, attribute)
    except AttributeError:
        found = sorted(n for n, v in vars(module).items() if _is_graph(v))
        raise GraphError(
            f"module {module_name!r} has no attribute {attribute!r}",
            hint=f"Graphs in it: {', '.join(found)}." if found else "It defines no compiled graph.",
        ) from None
    check_graph(graph, reference)
    return graph


def _current_folder_importable() -> None:
    """The current folder on the import path, last (as ``python -m`` has it, but never ahead
    of installed modules): a graph module of one's own imports when run from its folder."""
    folder = os.getcwd()
    if folder not in sys.path and "" not in sys.path:
        sys.path.append(folder)


def graph_key(graph: Any, reference: str) -> str:
    """The name runs, labels and scorers of ``graph`` are kept under: its own name
    (``compile(name=...)``), else the ``MODULE:ATTR`` it was loaded from."""
    named = getattr(graph, "name", None)
    return str(named) if named and named != "LangGraph" else reference


def _is_graph(value: Any) -> bool:
    from langgraph.pregel import Pregel

    return isinstance(value, Pregel)


def check_graph(graph: Any, label: str | None = None) -> None:
    if _is_graph(graph):
        return
    what = type(graph).__name__
    hint = (
        "Call .compile() on the StateGraph."
        if what == "StateGraph"
        else "Point at a compiled LangGraph graph."
    )
    raise GraphError(f"{label or 'the graph'} is a {what}, not a compiled LangGraph graph", hint=hint)


def node_names(graph: Any) -> set[str]:
    """Every node name in ``graph`` and in its subgraphs."""
    names: set[str] = set()
    for node_id in graph.get_graph(xray=True).nodes:
        if node_id not in ("__start__", "__end__"):
            names.add(node_id)
            names.add(node_id.rsplit(":", 1)[-1])
    return names


def check_policy(graph: Any, policy: TierPolicy) -> None:
    if not policy.nodes:
        return
    unknown = sorted(set(policy.nodes) - node_names(graph))
    if unknown:
        known = sorted(n for n in node_names(graph) if ":" not in n)
        raise GraphError(
            f"the policy names node(s) {', '.join(map(repr, unknown))}, which the graph does not have",
            hint=f"Its nodes are: {', '.join(known)}.",
        )


def _input_schema(graph: Any) -> Any:
    """The type the graph's builder declared for its input (a TypedDict or pydantic model)."""
    return getattr(getattr(graph, "builder", None), "input_schema", None)


def _check_value(key: str, expected: Any, value: Any) -> str | None:
    try:
        TypeAdapter(expected).validate_python(value, strict=False)
    except ValidationError as exc:
        return f"{key}: {describe_validation_error(exc)}"
    except Exception:  # noqa: BLE001 - a type pydantic cannot check here is accepted as given
        return None
    return None


def check_input(graph: Any, data: Any) -> None:
    """``data`` must be an object with the input schema's required keys and no others,
    each of its declared type."""
    if not isinstance(data, Mapping):
        raise GraphError(
            f"the input must be a JSON object, not {type(data).__name__}",
            hint='For example: --input \'{"text": "..."}\'',
        )
    schema = _input_schema(graph)
    if schema is None:
        return
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        try:
            schema.model_validate(dict(data))
        except ValidationError as exc:
            raise GraphError(
                f"the input does not match the graph's input schema: {describe_validation_error(exc)}",
                hint=f"Fields: {', '.join(schema.model_fields)}.",
            ) from None
        return
    if not is_typeddict(schema):
        return
    hints = typing.get_type_hints(schema, include_extras=False)
    required = set(getattr(schema, "__required_keys__", set()))
    missing = sorted(required - set(data))
    extra = sorted(set(data) - set(hints))
    wrong = [p for k, v in data.items() if k in hints and (p := _check_value(k, _plain(hints[k]), v))]
    if missing or extra or wrong:
        problems = [f"missing {', '.join(missing)}"] if missing else []
        problems += [f"unknown key(s) {', '.join(extra)}"] if extra else []
        problems += wrong
        raise GraphError(
            "the input does not match the graph's input schema: " + "; ".join(problems),
            hint=f"Its keys: {', '.join(f'{k} ({_name(t)})' for k, t in hints.items())}.",
        )


def _plain(annotation: Any) -> Any:
    """Annotated[...] reducers stripped: the value's own type."""
    if typing.get_origin(annotation) is typing.Annotated:
        return typing.get_args(annotation)[0]
    return annotation


def _name(annotation: Any) -> str:
    plain = _plain(annotation)
    if isinstance(plain, type) and not isinstance(plain, types.GenericAlias):
        return plain.__name__
    return str(plain).replace("typing.", "")
