"""Berkeley Function Calling Leaderboard cases: reading them, describing their functions to
tierflow as tools, and scoring decided calls with BFCL's own AST checker.

BFCL ships its data in the ``bfcl-eval`` package (``bfcl_eval/data/BFCL_v4_<category>.json``,
answers in ``possible_answer/``), one JSON object per line. Its checker module imports
``bfcl_eval.constants.model_config``, which imports every vendor SDK; a small stand-in
module is registered first so the checker works as a plain library (install the package
with ``pip install --no-deps bfcl-eval``; ``make setup`` does).
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import sys
import types
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from tierflow.errors import SchemaError, TierflowError
from tierflow.json_values import map_subschemas
from tierflow.tools.base import Tool
from tierflow.tools.registry import ToolRegistry

__all__ = [
    "SINGLE_TURN",
    "Case",
    "CaseFileError",
    "Verdict",
    "bfcl_data_dir",
    "load_category",
    "reserved_digests",
    "is_reserved",
    "load_case_file",
    "to_json_schema",
    "function_schema",
    "registry_for",
    "request_text",
    "check",
]

SINGLE_TURN = (
    "simple_python",
    "simple_java",
    "simple_javascript",
    "multiple",
    "parallel",
    "parallel_multiple",
    "irrelevance",
    "live_simple",
    "live_multiple",
    "live_parallel",
    "live_parallel_multiple",
    "live_irrelevance",
    "live_relevance",
)
"""BFCL's single-turn categories, longest-prefix first when matched against case ids."""

_BY_PREFIX = sorted(SINGLE_TURN, key=len, reverse=True)

# Gorilla's parameter types, as JSON Schema types (Java and JavaScript values are strings).
GORILLA_TYPES = {
    "string": "string",
    "String": "string",
    "char": "string",
    "any": "string",
    "Any": "string",
    "integer": "integer",
    "int": "integer",
    "long": "integer",
    "short": "integer",
    "byte": "integer",
    "Bigint": "integer",
    "float": "number",
    "double": "number",
    "number": "number",
    "boolean": "boolean",
    "bool": "boolean",
    "Boolean": "boolean",
    "array": "array",
    "list": "array",
    "tuple": "array",
    "Array": "array",
    "ArrayList": "array",
    "dict": "object",
    "object": "object",
    "HashMap": "object",
}


class CaseFileError(TierflowError):
    """A case file that cannot be read; the message names the file and line."""


@dataclass(frozen=True)
class Case:
    id: str
    category: str
    messages: list[dict[str, str]]
    functions: list[dict[str, Any]]
    ground_truth: list[dict[str, Any]] | None

    @property
    def language(self) -> str:
        if self.category.endswith("java"):
            return "java"
        if self.category.endswith("javascript"):
            return "javascript"
        return "python"


def bfcl_data_dir() -> Path:
    """Where the installed ``bfcl-eval`` keeps its data (without importing the package)."""
    spec = importlib.util.find_spec("bfcl_eval")
    if spec is None or not spec.submodule_search_locations:
        raise TierflowError(
            "the BFCL data is not installed (package bfcl-eval)",
            hint="Run `make setup`, or `pip install --no-deps bfcl-eval`.",
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def category_of(case_id: str) -> str | None:
    for category in _BY_PREFIX:
        if case_id.startswith(category + "_"):
            return category
    return None


def _read_lines(path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CaseFileError(
            f"cannot read case file {path}: {exc.strerror or exc}", hint="Check the path."
        ) from None
    except UnicodeDecodeError:
        raise CaseFileError(f"{path} is not UTF-8 text", hint="Case files are JSON lines.") from None
    for number, line in enumerate(text.split("\n"), start=1):  # JSON strings may hold U+2028
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CaseFileError(
                f"{path}, line {number}: not valid JSON ({exc.msg} at column {exc.colno})",
                hint="Each line must be one JSON object (JSON lines).",
            ) from None
        except RecursionError:
            raise CaseFileError(
                f"{path}, line {number}: the JSON is nested too deeply",
                hint="Each line must be one JSON object (JSON lines).",
            ) from None
        if not isinstance(value, dict):
            raise CaseFileError(
                f"{path}, line {number}: expected a JSON object, got {type(value).__name__}",
                hint="Each line must be one JSON object (JSON lines).",
            )
        yield number, value


def _messages(value: Any) -> list[dict[str, str]] | None:
    """BFCL's ``question``: a list of turns, each a list of messages; one turn expected."""
    turns = value if isinstance(value, list) else None
    if not turns:
        return None
    turn = turns[0] if isinstance(turns[0], list) else turns  # also accept a flat message list
    if len(turns) > 1 and isinstance(turns[0], list):
        return None
    ok = all(isinstance(m, dict) and isinstance(m.get("content"), str) and "role" in m for m in turn)
    return [{"role": str(m["role"]), "content": m["content"]} for m in turn] if ok and turn else None


def _case(where: str, raw: dict[str, Any], answer: Any, category: str | None) -> Case:
    def bad(problem: str, hint: str = "See BFCL's format: id, question, function, ground_truth.") -> None:
        raise CaseFileError(f"{where}: {problem}", hint=hint)

    case_id = raw.get("id")
    if not isinstance(case_id, str) or not case_id:
        bad('missing "id" (a non-empty string)')
    assert isinstance(case_id, str)
    messages = _messages(raw.get("question"))
    if messages is None:
        bad('"question" must be one turn: [[{"role": "user", "content": "..."}]]')
    functions = raw.get("function")
    if not isinstance(functions, list) or not all(
        isinstance(f, dict) and isinstance(f.get("name"), str) for f in functions
    ):
        bad('"function" must be a list of function descriptions, each with a "name"')
    assert isinstance(functions, list) and messages is not None
    for function in functions:
        parameters = function.get("parameters", {"properties": {}})
        if not isinstance(parameters, dict) or not isinstance(parameters.get("properties", {}), dict):
            bad(f'function {function["name"]!r}: "parameters" must be an object with "properties"')
    category = raw.get("category") or category or category_of(case_id)
    if answer is None and category not in ("irrelevance", "live_irrelevance", "live_relevance"):
        bad(
            f'case {case_id!r} has no "ground_truth"',
            hint='Add "ground_truth" to the line, give an answers file, or mark the case '
            '"category": "irrelevance" if no function should be called.',
        )
    if answer is not None and not (
        isinstance(answer, list) and all(isinstance(call, dict) and len(call) == 1 for call in answer)
    ):
        bad('"ground_truth" must be a list of {"function_name": {"param": [allowed values]}}')
    if category is None:
        category = "multiple" if not answer or len(answer) == 1 else "parallel_multiple"
    case = Case(case_id, str(category), messages, functions, answer)
    try:
        registry_for(case)  # names, duplicates and parameter schemas, checked now, not mid-evaluation
    except (ValueError, TypeError, KeyError, SchemaError) as exc:
        bad(f"its functions cannot be offered as tools: {exc}")
    return case


def load_case_file(path: Path, answers: Path | None = None, *, category: str | None = None) -> list[Case]:
    """Cases from a BFCL-format file; answers inline (``ground_truth``) or in a second file."""
    by_id: dict[str, Any] = {}
    if answers is not None:
        for number, line in _read_lines(answers):
            if not isinstance(line.get("id"), str) or "ground_truth" not in line:
                raise CaseFileError(
                    f'{answers}, line {number}: expected {{"id": ..., "ground_truth": [...]}}',
                    hint="An answers file has one id and its ground_truth per line.",
                )
            by_id[line["id"]] = line["ground_truth"]
    cases = []
    seen: set[str] = set()
    for number, raw in _read_lines(path):
        answer = raw.get("ground_truth", by_id.get(str(raw.get("id"))))
        case = _case(f"{path}, line {number}", raw, answer, category)
        if case.id in seen:
            raise CaseFileError(
                f"{path}, line {number}: duplicate id {case.id!r}", hint="Ids must be unique."
            )
        seen.add(case.id)
        cases.append(case)
    if not cases:
        raise CaseFileError(f"{path} holds no cases", hint="Each line must be one JSON object (JSON lines).")
    return cases


RESERVED_IDS_FILE = Path(__file__).parent / "data" / "reserved-bfcl-ids.sha256"


@cache
def reserved_digests() -> frozenset[str]:
    """The sha256 of each BFCL item kept for independent checks of tierflow: never trained,
    tuned, used to seed memory or choose thresholds, or reported on. Only the digests are
    stored (``evals/data/reserved-bfcl-ids.sha256``), so the ids stay out of the repository."""
    lines = RESERVED_IDS_FILE.read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip() for line in lines if line.strip() and not line.startswith("#"))


def is_reserved(case_id: str) -> bool:
    return hashlib.sha256(case_id.encode()).hexdigest() in reserved_digests()


def load_category(category: str) -> list[Case]:
    """The cases of one BFCL single-turn category, with their answers, less the reserved ones."""
    if category not in SINGLE_TURN:
        raise TierflowError(
            f"unknown or multi-turn BFCL category {category!r}",
            hint=f"Single-turn categories: {', '.join(SINGLE_TURN)}.",
        )
    data = bfcl_data_dir()
    questions = data / f"BFCL_v4_{category}.json"
    answers = data / "possible_answer" / f"BFCL_v4_{category}.json"
    cases = load_case_file(questions, answers if answers.exists() else None, category=category)
    return [case for case in cases if not is_reserved(case.id)]


# Function descriptions as tools ---------------------------------------------------------
def to_json_schema(spec: dict[str, Any], language: str = "python") -> dict[str, Any]:
    """A Gorilla parameter spec as JSON Schema. Java and JavaScript values are strings written
    in that language's syntax, as BFCL's own handlers describe them."""
    result: dict[str, Any] = map_subschemas(spec, lambda node: _schema_node(node, language))
    return result


def _schema_node(spec: dict[str, Any], language: str) -> dict[str, Any]:
    """One Gorilla spec node as JSON Schema, its subschemas already translated."""
    out: dict[str, Any] = {}
    kind = spec.get("type")
    if language != "python":
        out["type"] = "string"
        note = f" This is a {language.capitalize()} {kind} value, written as a string."
        out["description"] = (spec.get("description") or "") + (note if kind else "")
    else:
        mapped = GORILLA_TYPES.get(kind) if isinstance(kind, str) else None
        if mapped is not None:
            out["type"] = mapped
        if spec.get("description"):
            out["description"] = spec["description"]
        if mapped == "array" and isinstance(spec.get("items"), dict):
            out["items"] = spec["items"]
        if mapped == "object" and isinstance(spec.get("properties"), dict):
            out["properties"] = {
                name: sub for name, sub in spec["properties"].items() if isinstance(sub, dict)
            }
            required = [r for r in spec.get("required", []) if r in out["properties"]]
            if required:
                out["required"] = required
    if isinstance(spec.get("enum"), list) and spec["enum"]:
        out["enum"] = [str(v) for v in spec["enum"]] if language != "python" else list(spec["enum"])
    if "default" in spec and out.get("type") in ("string", "integer", "number", "boolean"):
        out["default"] = spec["default"]
    return out


def function_schema(function: dict[str, Any], language: str) -> dict[str, Any]:
    """A function's parameters as the JSON Schema of its arguments object."""
    parameters = function.get("parameters") or {}
    properties = {
        name: to_json_schema(prop, language)
        for name, prop in (parameters.get("properties") or {}).items()
        if isinstance(prop, dict)
    }
    required = [name for name in parameters.get("required", []) if name in properties]
    return {"type": "object", "properties": properties, "required": required}


def registry_for(case: Case) -> ToolRegistry:
    """The case's functions as schema-only tools (chosen and filled in, never called)."""
    tools = [
        Tool.from_schema(f["name"], f.get("description", ""), function_schema(f, case.language))
        for f in case.functions
    ]
    return ToolRegistry(tools)


def request_text(case: Case) -> str:
    """The request the graph sees: the user's message, or the whole short conversation."""
    if len(case.messages) == 1:
        return case.messages[0]["content"]
    return "\n".join(f"{m['role']}: {m['content']}" for m in case.messages)


# Scoring ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Verdict:
    correct: bool
    error_type: str | None  # BFCL's checker category, e.g. "value_error:string"
    detail: str = ""


class _AnyModel(dict[str, Any]):
    """``MODEL_CONFIG_MAPPING`` stand-in: every model keeps dots in function names."""

    def __missing__(self, key: str) -> Any:
        return types.SimpleNamespace(underscore_to_dot=False)


def _ast_checker() -> Any:
    if "bfcl_eval.constants.model_config" not in sys.modules:
        stub = types.ModuleType("bfcl_eval.constants.model_config")
        stub.MODEL_CONFIG_MAPPING = _AnyModel()  # type: ignore[attr-defined]
        sys.modules["bfcl_eval.constants.model_config"] = stub
    try:
        from bfcl_eval.constants.enums import Language
        from bfcl_eval.eval_checker.ast_eval.ast_checker import ast_checker
    except ImportError as exc:
        raise TierflowError(
            f"BFCL's checker could not be imported: {exc}",
            hint="Run `make setup`, or `pip install --no-deps bfcl-eval`.",
        ) from None
    return ast_checker, Language


def check(case: Case, calls: list[dict[str, dict[str, Any]]]) -> Verdict:
    """Score decided ``calls`` (``[{name: arguments}]``) as BFCL does for the case's category."""
    if case.category in ("irrelevance", "live_irrelevance"):
        if calls:
            return Verdict(False, "irrelevance_error:called_a_function", f"called {next(iter(calls[0]))}")
        return Verdict(True, None)
    if case.category == "live_relevance":
        return Verdict(True, None) if calls else Verdict(False, "relevance_error:no_call")
    if not calls:
        return Verdict(False, "no_call", "no function was called")
    ast_checker, language = _ast_checker()
    functions = copy.deepcopy(case.functions)
    for function in functions:  # the checker needs both keys; case files may leave them out
        parameters = function.setdefault("parameters", {})
        parameters.setdefault("properties", {})
        parameters.setdefault("required", [])
    result = ast_checker(
        functions,
        copy.deepcopy(calls),
        copy.deepcopy(case.ground_truth or []),
        language(case.language),
        case.category,
        "tierflow",
    )
    if result.get("valid"):
        return Verdict(True, None)
    errors = result.get("error") or []
    return Verdict(False, str(result.get("error_type") or "unknown"), "; ".join(map(str, errors))[:500])
