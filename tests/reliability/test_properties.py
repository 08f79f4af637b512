"""Property-based tests (hypothesis) of the code that reads text a model or a user wrote.

For any input: the calculator returns a finite number or a ``ToolError``, exactly as Python's
arithmetic for integer ``+ - *`` and without ``eval``; ``unit_convert`` returns text or a
``ToolError`` quickly and round trips; the workspace and the file tools never reach or show a
file outside the workspace; tool arguments, JSON schemas and model replies are accepted or
refused with the error of their family; a BFCL case file loads or raises ``CaseFileError``.
Each bug these properties found has its own test with its smallest known input as an example.
"""

from __future__ import annotations

import ast
import builtins
import json
import math
import operator
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from tierflow.agents.escalation import Rejected, parse_json, parse_model
from tierflow.agents.protocol import Completion
from tierflow.errors import SandboxError, TierflowError, ToolError
from tierflow.evals.bfcl import Case, CaseFileError, load_case_file, registry_for
from tierflow.tools import ToolLimits, ToolRegistry, Workspace, default_registry
from tierflow.tools.base import Tool
from tierflow.tools.calculator import evaluate
from tierflow.tools.limits import ToolBug
from tierflow.tools.units import prepare_units, unit_convert

# Reproducible in CI: the same examples on every run, nothing replayed from a local database.
BASE = settings(derandomize=True, database=None, deadline=2000, max_examples=100)
# A call in a forked child (the tool runner) costs a fork: fewer examples, a wider deadline.
FORKED = settings(BASE, max_examples=25, deadline=None)
RUNNER_LIMITS = ToolLimits(timeout_s=5.0)

JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12))
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


def as_json(value: Any) -> str:
    """A canonical text for comparing JSON values (NaN equals NaN, 1 is not True)."""
    return json.dumps(value, sort_keys=True)


# 1. The calculator ------------------------------------------------------------------------
UNARY_FUNCTIONS = [
    "sqrt", "abs", "round", "floor", "ceil", "exp", "log", "log10", "log2",
    "sin", "cos", "tan", "asin", "acos", "atan", "factorial",
]  # fmt: skip
VARIADIC_FUNCTIONS = ["min", "max", "hypot", "round", "log"]
OPERATORS = ["+", "-", "*", "/", "//", "%", "**"]
TOKENS = [
    *UNARY_FUNCTIONS, *VARIADIC_FUNCTIONS, *OPERATORS, "pi", "e", "tau", "(", ")", ",", " ",
    "0", "1", "2", "7", "9", "0.5", ".", "e5", "-", "×", "÷", "^", "~", "[", "]", "{", "}",
    "lambda", "x", ":", "__import__", "open", "eval", "'a'", '"', "1j", "True", "None", "if",
    "else", "<", "==", "and", ";", "\n", "\x00", "#", "@", "_", "10**", "**9", "9**9**9",
    "factorial(500)", "round(1, -10**9)", "2**4096", "1e308",
]  # fmt: skip

calculator_text = st.one_of(
    st.text(max_size=80),
    st.lists(st.sampled_from(TOKENS), max_size=40).map("".join),
    st.text(alphabet="0123456789+-*/%().e ", max_size=600),
)


@st.composite
def float_literal(draw: st.DrawFn) -> str:
    """A finite float as Python writes it, or a constant: never a literal that overflows."""
    number = draw(st.floats(allow_nan=False, allow_infinity=False))
    return draw(st.sampled_from([repr(number), "pi", "e", "tau"]))


number_literal = st.one_of(st.integers(-(10**6), 10**6).map(str), float_literal())


def _binary(parts: tuple[str, str, str]) -> str:
    left, op, right = parts
    return f"({left} {op} {right})"


arithmetic = st.recursive(
    number_literal,
    lambda sub: st.one_of(
        st.tuples(sub, st.sampled_from(OPERATORS), sub).map(_binary),
        st.tuples(st.sampled_from(["-", "+"]), sub).map(lambda t: f"{t[0]}({t[1]})"),
        st.tuples(st.sampled_from(UNARY_FUNCTIONS), sub).map(lambda t: f"{t[0]}({t[1]})"),
        st.tuples(st.sampled_from(VARIADIC_FUNCTIONS), st.lists(sub, max_size=3)).map(
            lambda t: f"{t[0]}({', '.join(t[1])})"
        ),
    ),
    max_leaves=12,
)


def assert_number(value: object) -> None:
    assert type(value) in (int, float), f"{value!r} is a {type(value).__name__}"
    if isinstance(value, float):
        assert math.isfinite(value), value
    else:
        assert isinstance(value, int) and len(str(abs(value))) <= 4300, "an int too long to show as text"


@contextmanager
def no_eval() -> Iterator[None]:
    """``eval``/``exec`` fail the test; ``compile`` is allowed only to build an AST."""
    real_compile = builtins.compile

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the calculator called eval or exec")

    def ast_only(source: Any, filename: Any, mode: str, flags: int = 0, *args: Any, **kwargs: Any) -> Any:
        assert flags & ast.PyCF_ONLY_AST, "the calculator compiled code to run"
        return real_compile(source, filename, mode, flags, *args, **kwargs)

    with (
        mock.patch.object(builtins, "eval", forbidden),
        mock.patch.object(builtins, "exec", forbidden),
        mock.patch.object(builtins, "compile", ast_only),
    ):
        yield


def evaluate_or_refuse(expression: str) -> int | float | None:
    """``evaluate``'s number, or None when it refused with a ``ToolError``."""
    try:
        return evaluate(expression)
    except ToolError as exc:
        assert str(exc), "a refusal says why"
        return None


@settings(BASE, max_examples=400)
@given(expression=calculator_text)
@example("__import__('os').system('echo owned')")
@example("9**9**9")
@example("-" * 499 + "1")
@example("(" * 150 + "1" + ")" * 150)
def test_calculator_returns_a_number_or_a_tool_error_for_any_text(expression: str) -> None:
    with no_eval():
        value = evaluate_or_refuse(expression)
    if value is not None:
        assert type(value) in (int, float)


@settings(BASE, max_examples=300)
@given(expression=arithmetic)
@example("factorial(500) * factorial(500)")
@example("round(2 ** 4000, -300)")
@example("exp(709.7) * 10")
def test_calculator_results_of_arithmetic_are_finite_numbers(expression: str) -> None:
    value = evaluate_or_refuse(expression)
    if value is not None:
        assert_number(value)


@settings(BASE, max_examples=50)
@given(
    literal=st.builds(
        lambda mantissa, exponent, wrap: wrap.format(f"{mantissa}e{exponent}"),
        st.integers(1, 9),
        st.integers(309, 10**6),
        st.sampled_from(["{}", "({})", "+({})", "max({}, 1)"]),
    )
)
@example(literal="1e999")
def test_calculator_refuses_a_literal_that_overflows_a_float(literal: str) -> None:
    value = evaluate_or_refuse(literal)
    if value is not None:
        assert_number(value)


@dataclass(frozen=True)
class Node:
    """An integer expression tree: a literal, a negation or a binary + - *."""

    op: str  # "lit", "neg", "+", "-", "*", "×"
    value: int = 0
    left: Node | None = None
    right: Node | None = None
    space: str = " "

    def render(self) -> str:
        if self.op == "lit":
            return f"({self.value})" if self.value < 0 else str(self.value)
        assert self.left is not None
        if self.op == "neg":
            return f"-({self.left.render()})"
        assert self.right is not None
        return f"({self.left.render()}{self.space}{self.op}{self.space}{self.right.render()})"

    def expected(self) -> int:
        """What Python's arithmetic gives, computed here without parsing any text."""
        if self.op == "lit":
            return self.value
        assert self.left is not None
        if self.op == "neg":
            return -self.left.expected()
        assert self.right is not None
        apply: Callable[[int, int], int] = {
            "+": operator.add, "-": operator.sub, "*": operator.mul, "×": operator.mul,
        }[self.op]  # fmt: skip
        return apply(self.left.expected(), self.right.expected())


integer_trees = st.recursive(
    st.integers(-999, 999).map(lambda n: Node("lit", n)),
    lambda sub: st.one_of(
        st.builds(lambda a: Node("neg", left=a), sub),
        st.builds(
            lambda op, a, b, space: Node(op, left=a, right=b, space=space),
            st.sampled_from(["+", "-", "*", "×"]),
            sub,
            sub,
            st.sampled_from(["", " ", "\t", "  "]),
        ),
    ),
    max_leaves=16,
)


@settings(BASE, max_examples=300)
@given(tree=integer_trees)
def test_calculator_integer_arithmetic_equals_pythons(tree: Node) -> None:
    text = tree.render()
    assert len(text) <= 500  # inside the calculator's limit, so a refusal would be a bug
    value = evaluate(text)
    assert type(value) is int
    assert value == tree.expected(), text


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> ToolRegistry:
    prepare_units()
    return default_registry(tmp_path_factory.mktemp("calculator_ws"))


@settings(FORKED)
@given(expression=st.one_of(calculator_text, arithmetic))
@example("9**9**9**9")
@example("factorial(10**9)")
def test_calculator_tool_answers_in_time_in_the_runner(registry: ToolRegistry, expression: str) -> None:
    calculator = registry.get("calculator")
    assert calculator is not None
    started = time.monotonic()
    try:
        result = calculator.call({"expression": expression}, RUNNER_LIMITS)
    except ToolBug as exc:
        pytest.fail(f"the calculator raised something other than ToolError: {exc}")
    except ToolError as exc:
        assert "time limit" not in str(exc), str(exc)
    else:
        float(result)  # the model gets a number as text
    assert time.monotonic() - started < 8.0


# 2. Unit conversion -------------------------------------------------------------------------
KNOWN_UNITS = [
    "m", "km", "mile", "mi", "inch", "foot", "ft", "yard", "kg", "g", "lb", "ounce", "degC", "degF",
    "C", "F", "K", "kelvin", "celsius", "Fahrenheit", "°C", "L", "liter", "gallon", "s", "hour",
    "day", "MB", "GB", "byte", "bit", "km/h", "m/s", "mph", "N", "J", "W", "Pa", "bar", "atm",
    "delta_degC", "pi", "e", "percent", "", " ", "meter second", "kilometre", "µm", "Å",
]  # fmt: skip
unit_words = st.one_of(
    st.sampled_from(KNOWN_UNITS),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIKLMNOPQRSTUVWXYZ0123456789 _°µ", max_size=70),
)


def convert_or_refuse(value: float, from_unit: str, to_unit: str) -> str | None:
    started = time.monotonic()
    try:
        result: str | None = unit_convert(value, from_unit, to_unit)
    except ToolError as exc:
        assert str(exc)
        result = None
    assert time.monotonic() - started < 8.0, "a unit conversion hung"  # generous: CI shares 2 cores
    return result


@pytest.fixture(scope="module")
def units_ready() -> None:
    prepare_units()  # pint's registry takes about a second to build, once


@settings(BASE, max_examples=300)
@given(value=st.floats(), from_unit=unit_words, to_unit=unit_words)
def test_unit_convert_of_unit_words_returns_text_or_tool_error(
    units_ready: None, value: float, from_unit: str, to_unit: str
) -> None:
    result = convert_or_refuse(value, from_unit, to_unit)
    if result is not None:
        assert result.startswith(f"{value:g} {from_unit} = ")
        assert result.endswith(f" {to_unit}")


@settings(BASE, max_examples=300)
@given(value=st.floats(), from_unit=st.text(max_size=70), to_unit=st.text(max_size=70))
@example(value=1.0, from_unit="m", to_unit="/")
@example(value=1.0, from_unit="(", to_unit="m")
def test_unit_convert_of_any_text_returns_text_or_tool_error(
    units_ready: None, value: float, from_unit: str, to_unit: str
) -> None:
    convert_or_refuse(value, from_unit, to_unit)


@settings(BASE, max_examples=50)
@given(
    pair=st.sampled_from([("km", "m"), ("m", "km"), ("mile", "mm"), ("GB", "bit")]),
    power=st.integers(1, 999_999),
)
@example(pair=("km", "m"), power=400)
def test_unit_convert_of_powers_of_units_returns_text_or_tool_error(
    units_ready: None, pair: tuple[str, str], power: int
) -> None:
    convert_or_refuse(1.0, f"{pair[0]}**{power}", f"{pair[1]}**{power}")


ROUND_TRIPS = [
    ("km", "mile", False), ("kg", "lb", False), ("L", "gallon", False), ("hour", "s", False),
    ("MB", "byte", False), ("m/s", "km/h", False), ("inch", "cm", False), ("J", "calorie", False),
    ("degC", "degF", True), ("kelvin", "degC", True), ("C", "F", True),
]  # fmt: skip


def magnitude(result: str, to_unit: str) -> float:
    """The converted number in ``'<value> <from> = <number> <to>'``."""
    converted = result.split(" = ", 1)[1]
    assert converted.endswith(f" {to_unit}"), result
    return float(converted[: -len(to_unit) - 1])


@settings(BASE, max_examples=200)
@given(pair=st.sampled_from(ROUND_TRIPS), value=st.floats(-1e12, 1e12))
@example(pair=("km", "mile", False), value=1.0)
@example(pair=("degC", "degF", True), value=-40.0)
def test_unit_convert_round_trips(units_ready: None, pair: tuple[str, str, bool], value: float) -> None:
    there, back, offset = pair
    forth = magnitude(unit_convert(value, there, back), back)
    again = magnitude(unit_convert(forth, back, there), there)
    # The text keeps 6 significant digits, so each leg may be off by 5e-6 relative; a temperature's
    # offset (273.15, 32) makes the error relative to the offset for values near zero.
    scale = abs(value) + (500.0 if offset else 0.0)
    assert math.isclose(again, value, rel_tol=2e-5, abs_tol=2e-5 * scale + 1e-300), (value, forth, again)


# 3. Path confinement ----------------------------------------------------------------------
SECRET = "tierflow-canary-5b7e9d outside the workspace: never shown to a model"
INSIDE = {"notes.txt": "hello workspace\n", "sub/inner.txt": "inner file text\n"}


@dataclass(frozen=True)
class Sandbox:
    base: Path
    root: Path
    outside: Path
    registry: ToolRegistry

    def inside(self, path: Path) -> bool:
        real = path.resolve()
        return real == self.root or self.root in real.parents

    def function(self, name: str) -> Callable[..., Any]:
        found = self.registry.get(name)
        assert found is not None
        return found.function


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Sandbox:
    """A workspace with files, links that stay inside and links that lead out to a secret."""
    base = tmp_path_factory.mktemp("confinement").resolve()
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET)
    (base / "secret.txt").write_text(SECRET)
    root = base / "ws"
    (root / "sub").mkdir(parents=True)
    for name, text in INSIDE.items():
        (root / name).write_text(text)
    links = {
        "out_file": str(outside / "secret.txt"),
        "out_dir": str(outside),
        "dotdot": "..",
        "root_link": "/",
        "sub/rel_up": "../../outside/secret.txt",
        "sub/rel_dir": "../../outside",
        "in_link": "notes.txt",
        "sub/to_root": "..",
        "sub/dangling": "../../nowhere/at/all",
    }
    for name, target in links.items():
        os.symlink(target, root / name)
    return Sandbox(base, root, outside, default_registry(root))


PATH_PARTS = [
    "..", ".", "", "~", "~root", "out_file", "out_dir", "dotdot", "root_link", "sub", "rel_up",
    "rel_dir", "to_root", "dangling", "in_link", "notes.txt", "inner.txt", "secret.txt", "outside",
    "ws", "etc", "passwd", "\x00", "C:", "..\\..", "%2e%2e", "．．", "\u2025", "a" * 200, "é", " ",
    "\t", "$HOME", "*", "\\", "\n", "..\x00",
]  # fmt: skip
PATH_PREFIXES = ["", "/", "~/", "\\\\server\\share\\", "C:\\", "C:/", "./", " ", "//"]


def fits_filesystem(path: str) -> bool:
    """No name over 255 bytes, no lone surrogate: paths the file system can be asked about
    (the others are tested apart below, as known bugs)."""
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return len(encoded) < 3000 and all(len(part) <= 255 for part in encoded.split(b"/"))


@st.composite
def hostile_paths(draw: st.DrawFn, sandbox_base: str = "") -> str:
    parts = draw(st.lists(st.one_of(st.sampled_from(PATH_PARTS), st.text(max_size=20)), max_size=6))
    separators = [draw(st.sampled_from(["/", "\\", "//", "/./"])) for _ in parts]
    prefix = draw(st.sampled_from([*PATH_PREFIXES, sandbox_base]))
    joined = "".join(part + separator for part, separator in zip(parts, separators, strict=True))
    return prefix + draw(st.sampled_from([joined, joined.rstrip("/\\")]))


LINK_WALK = [
    "out_file", "out_dir", "dotdot", "root_link", "sub", "rel_up", "rel_dir", "to_root", "dangling",
    "in_link", "secret.txt", "outside", "ws", "notes.txt", "etc", ".",
]  # fmt: skip
link_walks = st.lists(st.sampled_from(LINK_WALK), min_size=1, max_size=5).map("/".join)


def confined_paths(sandbox: Sandbox) -> st.SearchStrategy[str]:
    absolute = [str(sandbox.outside / "secret.txt"), str(sandbox.base / "secret.txt"), str(sandbox.root)]
    return st.one_of(
        link_walks,
        hostile_paths(sandbox_base=str(sandbox.base) + "/"),
        st.sampled_from([*absolute, "../secret.txt", "../outside/secret.txt", "sub/../../secret.txt"]),
        st.text(max_size=40),
    ).filter(fits_filesystem)


def must_refuse(path: str) -> bool:
    """What the workspace documents as refused before any link is looked at."""
    text = path.strip() or "."
    return (
        "\x00" in text
        or text.startswith(("~", "/"))
        or bool(re.match(r"[A-Za-z]:[\\/]", text))
        or ".." in text.replace("\\", "/").split("/")
    )


@settings(BASE, max_examples=400)
@given(data=st.data())
def test_workspace_resolves_inside_or_refuses(sandbox: Sandbox, data: st.DataObject) -> None:
    path = data.draw(confined_paths(sandbox), label="path")
    workspace = Workspace(sandbox.root)
    try:
        resolved = workspace.resolve(path)
    except SandboxError:
        return
    assert not must_refuse(path), f"{path!r} should have been refused"
    assert resolved == resolved.resolve(), "resolve returns the real path"
    assert sandbox.inside(resolved), f"{path!r} resolved to {resolved}, outside the workspace"


def check_file_tool_result(sandbox: Sandbox, tool: str, result: object) -> None:
    """A file tool's result shows only what is inside the workspace."""
    assert SECRET not in str(result)
    if tool == "read_file":
        assert isinstance(result, str)
        body = re.sub(r"\n\[\.\.\. truncated at \d+ characters\]$", "", result)
        assert body and any(text.startswith(body) for text in INSIDE.values()), result
    elif tool == "word_count":
        counts = [
            {"words": len(t.split()), "lines": len(t.splitlines()), "characters": len(t)}
            for t in INSIDE.values()
        ]
        assert result in counts, result
    else:
        assert isinstance(result, str)
        if result.startswith("no files matching"):
            return
        for line in result.splitlines():
            if re.fullmatch(r"\[\.\.\. \d+ more\]", line):
                continue
            assert sandbox.inside(sandbox.root / line.rstrip("/")), f"listed {line!r}, outside"


@st.composite
def file_tool_calls(draw: st.DrawFn, sandbox: Sandbox) -> tuple[str, dict[str, Any]]:
    path = draw(confined_paths(sandbox), label="path")
    tool = draw(st.sampled_from(["read_file", "word_count", "list_files"]))
    if tool == "read_file":
        return tool, {"path": path, "max_chars": draw(st.integers(-5, 200_000))}
    if tool == "word_count":
        return tool, {"text": "", "path": path}
    pattern = draw(
        st.one_of(st.sampled_from(["*", "*.txt", "secret*", "[", "**", "../*", "*out*"]), st.text())
    )
    return tool, {"directory": path, "pattern": pattern, "recursive": draw(st.booleans())}


@settings(BASE, max_examples=400)
@given(data=st.data())
def test_file_tools_never_read_outside_the_workspace(sandbox: Sandbox, data: st.DataObject) -> None:
    tool, arguments = data.draw(file_tool_calls(sandbox), label="call")
    try:
        result = sandbox.function(tool)(**arguments)
    except ToolError as exc:
        assert SECRET not in str(exc)
        return
    check_file_tool_result(sandbox, tool, result)


def call_in_runner(sandbox: Sandbox, tool: str, arguments: dict[str, Any]) -> str | None:
    """The tool's text from the runner (a forked child), or None when it raised ``ToolError``."""
    found = sandbox.registry.get(tool)
    assert found is not None
    try:
        text = found.call(arguments, RUNNER_LIMITS)
    except ToolBug as exc:
        pytest.fail(f"{tool} raised something other than ToolError: {exc}")
    except ToolError as exc:
        assert SECRET not in str(exc)
        return None
    assert SECRET not in text
    return text


@settings(FORKED, max_examples=30)
@given(data=st.data())
def test_file_tools_in_the_runner_raise_only_tool_errors(sandbox: Sandbox, data: st.DataObject) -> None:
    tool, arguments = data.draw(file_tool_calls(sandbox), label="call")
    call_in_runner(sandbox, tool, arguments)


@pytest.mark.parametrize(
    "path", ["out_file", "sub/rel_up", "dotdot/secret.txt", "../secret.txt", "SECRET_ABS"]
)
def test_the_planted_secret_is_refused_through_the_runner(sandbox: Sandbox, path: str) -> None:
    path = str(sandbox.outside / "secret.txt") if path == "SECRET_ABS" else path
    for tool, arguments in [("read_file", {"path": path}), ("word_count", {"path": path})]:
        assert call_in_runner(sandbox, tool, arguments) is None


@settings(BASE, max_examples=50)
@given(
    path=st.text(
        alphabet=st.one_of(st.characters(categories=["Cs"]), st.sampled_from("ab/.")), min_size=1, max_size=10
    ).filter(lambda p: not fits_filesystem(p))
)
@example(path="\ud800")
def test_workspace_refuses_a_path_with_a_lone_surrogate(sandbox: Sandbox, path: str) -> None:
    try:
        resolved = Workspace(sandbox.root).resolve(path)
    except SandboxError:
        return
    assert sandbox.inside(resolved)


@settings(BASE, max_examples=30)
@given(
    tool=st.sampled_from(["read_file", "word_count", "list_files"]),
    name=st.text(alphabet="aé", min_size=1).map(lambda s: (s * 256)[:300]),
)
@example(tool="read_file", name="a" * 256)
def test_file_tools_refuse_a_name_too_long_with_a_tool_error(sandbox: Sandbox, tool: str, name: str) -> None:
    arguments = {"directory": name} if tool == "list_files" else {"path": name}
    with pytest.raises(ToolError):
        sandbox.function(tool)(**arguments)


@settings(BASE, max_examples=30)
@given(
    tool=st.sampled_from(["read_file", "word_count", "list_files"]),
    path=st.sampled_from([".", "loop", "loop/x", "ping", "ping/pong/x", "ok.txt"]),
)
@example(tool="list_files", path=".")
def test_a_symlink_loop_in_the_workspace_is_refused_not_a_crash(
    tmp_path_factory: pytest.TempPathFactory, tool: str, path: str
) -> None:
    root = tmp_path_factory.mktemp("looped")
    (root / "ok.txt").write_text("fine\n")
    os.symlink("loop", root / "loop")
    os.symlink("pong", root / "ping")
    os.symlink("ping", root / "pong")
    function = default_registry(root).get(tool)
    assert function is not None
    arguments = {"directory": path} if tool == "list_files" else {"path": path}
    try:
        function.function(**arguments)
    except ToolError:
        pass


# 4. Tool arguments, schemas and model replies ---------------------------------------------
def sample_tool(
    count: int,
    ratio: float = 0.5,
    name: str = "",
    flag: bool = False,
    tags: list[str] | None = None,
    extra: dict[str, int] | None = None,
    anything: Any = None,
) -> str:
    """A tool with one parameter of each kind.

    Args:
        count: a whole number
        ratio: a number
        name: a text
        flag: a switch
        tags: texts
        extra: numbers by name
        anything: any JSON value
    """
    return ""


TYPED_PARAMETERS = ["count", "ratio", "name", "flag", "tags", "extra", "anything"]
argument_dicts = st.dictionaries(
    st.one_of(st.sampled_from(TYPED_PARAMETERS), st.text(max_size=10)), JSON_VALUES, max_size=7
)


def validate_or_refuse(tool: Tool, arguments: dict[str, Any]) -> dict[str, Any] | None:
    """``tool.arguments``' result, or None when it refused with a ``ToolError`` naming the tool."""
    try:
        tool.validate(arguments)
        validated = tool.arguments(arguments)
    except ToolError as exc:
        assert str(exc).startswith(f"invalid arguments for {tool.name}: "), str(exc)
        return None
    json.dumps(validated)  # plain JSON values, ready to record or send
    return validated


@settings(BASE, max_examples=400)
@given(arguments=argument_dicts)
@example(arguments={"count": "1" * 5000})
@example(arguments={"count": 10**400, "ratio": 10**400})
@example(arguments={"count": float("nan")})
def test_typed_tool_arguments_validate_or_raise_tool_error(arguments: dict[str, Any]) -> None:
    tool = Tool.from_function(sample_tool)
    validated = validate_or_refuse(tool, arguments)
    if validated is None:
        return
    assert set(arguments) <= set(TYPED_PARAMETERS) and "count" in arguments
    assert set(validated) == set(arguments)  # the ones given, no defaults added
    assert type(validated["count"]) is int
    assert as_json(tool.arguments(validated)) == as_json(validated)  # validating is idempotent


PROPERTY_NAMES = st.one_of(
    st.sampled_from(
        ["model_config", "schema", "dict", "json", "copy", "__class__", "p0", "p1", "", "max-results"]
    ),
    st.text(max_size=10),
)
SCALAR_TYPES = ["string", "integer", "number", "boolean"]
leaf_schemas = st.one_of(
    st.sampled_from(SCALAR_TYPES).map(lambda kind: {"type": kind}),
    st.lists(st.one_of(st.text(max_size=5), st.integers(-3, 3), st.booleans()), min_size=1, max_size=4).map(
        lambda values: {"enum": values}
    ),
    st.just({}),
    st.just({"type": "object"}),
    st.just({"type": "array"}),
)


def object_schemas(properties: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    def with_required(props: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
        required = st.lists(st.sampled_from(sorted(props)), unique=True) if props else st.just([])
        return st.fixed_dictionaries(
            {"type": st.just("object"), "properties": st.just(props), "required": required}
        )

    return st.dictionaries(PROPERTY_NAMES, properties, max_size=4).flatmap(with_required)


def array_of(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


flat_schemas = st.one_of(leaf_schemas, leaf_schemas.map(array_of))
property_schemas = st.one_of(
    flat_schemas, object_schemas(flat_schemas), object_schemas(flat_schemas).map(array_of)
)
parameter_schemas = object_schemas(property_schemas)
plain_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=8)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


def values_for(schema: dict[str, Any], top: bool = False) -> st.SearchStrategy[Any]:
    """Values that match ``schema`` as the schema module documents it; at the top (a tool's
    parameters) only the properties are accepted, below an object without them is free-form."""
    if schema.get("enum"):
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    scalar: dict[str, st.SearchStrategy[Any]] = {
        "string": st.text(max_size=8),
        "integer": st.integers(),
        "number": st.floats(allow_nan=False),
        "boolean": st.booleans(),
    }
    if kind in scalar:
        return scalar[kind]
    if kind == "array":
        items = schema.get("items")
        return st.lists(values_for(items) if isinstance(items, dict) else plain_json, max_size=3)
    if kind == "object" and (top or schema.get("properties")):
        required = set(schema["required"])
        props = schema["properties"]
        return st.fixed_dictionaries(
            {key: values_for(sub) for key, sub in props.items() if key in required},
            optional={key: values_for(sub) for key, sub in props.items() if key not in required},
        )
    if kind == "object":
        return st.dictionaries(st.text(max_size=5), plain_json, max_size=3)
    return plain_json


@settings(BASE, max_examples=200)
@given(data=st.data(), schema=parameter_schemas)
def test_schema_tools_accept_exactly_what_matches_the_schema(
    data: st.DataObject, schema: dict[str, Any]
) -> None:
    tool = Tool.from_schema("schema_tool", "described by a schema", schema)
    matching = data.draw(values_for(schema, top=True), label="matching")
    validated = validate_or_refuse(tool, matching)
    assert validated is not None, f"{matching!r} matches {schema!r} but was refused"
    assert validated == matching  # the schema's own names and values come back
    keys = st.one_of(st.sampled_from(sorted(schema["properties"]) or [""]), st.text(max_size=8))
    hostile = data.draw(st.dictionaries(keys, JSON_VALUES, max_size=5), label="hostile")
    validated = validate_or_refuse(tool, hostile)
    if validated is not None:
        assert set(validated) <= set(schema["properties"]) and set(schema["required"]) <= set(validated)


def completion(text: str, finish_reason: str = "stop") -> Completion:
    return Completion(
        text=text, model="m", tier="slm", prompt_tokens=1, completion_tokens=1, latency_ms=1.0,
        finish_reason=finish_reason,
    )  # fmt: skip


class Reply(BaseModel):
    action: str
    arguments: dict[str, Any] = {}


reply_texts = st.one_of(
    st.text(max_size=200),
    JSON_VALUES.map(json.dumps),
    st.builds(
        lambda fence, value: f"{fence}{json.dumps(value)}\n```\n",
        st.sampled_from(["```json\n", "```\n", "  ```JSON \n"]),
        JSON_VALUES,
    ),
    st.builds(
        lambda action, arguments: json.dumps({"action": action, "arguments": arguments}),
        st.one_of(st.text(max_size=8), JSON_VALUES),
        st.one_of(st.dictionaries(st.text(max_size=5), JSON_VALUES, max_size=3), JSON_VALUES),
    ),
    st.sampled_from(["```", "```json", "```\n```", "", "NaN", "-Infinity", '"\\ud800"', "{", "[1,]"]),
)


FENCED = re.compile(r"\s*```[^\n]*\n(.*)```\s*", re.DOTALL)
NOT_JSON = object()


def json_in(text: str) -> object:
    """The JSON value a reply holds, plain or in a fenced block; NOT_JSON when it holds none."""
    fenced = FENCED.fullmatch(text)
    try:
        return json.loads(fenced.group(1) if fenced else text, strict=False)
    except json.JSONDecodeError:
        return NOT_JSON


@settings(BASE, max_examples=300)
@given(text=reply_texts, finish_reason=st.sampled_from(["stop", "length"]))
@example(text='```json\n{"action": "add"}\n```', finish_reason="stop")
def test_reply_parsers_return_a_value_or_rejected(text: str, finish_reason: str) -> None:
    reply = completion(text, finish_reason)
    expected = json_in(text)
    try:
        value = parse_json(reply)
    except Rejected as exc:
        assert exc.code == "invalid_json" and exc.detail
        assert expected is NOT_JSON, f"{text!r} holds JSON but was rejected: {exc}"
        value = None
    else:
        assert expected is not NOT_JSON and as_json(value) == as_json(expected)
    try:
        model = parse_model(Reply)(reply)
    except Rejected as exc:
        assert exc.code in ("invalid_json", "schema_validation")
        assert value is None or exc.code == "schema_validation"
    else:
        assert isinstance(model, Reply) and value is not None


@settings(BASE, max_examples=30)
@given(depth=st.integers(1, 100_000), closed=st.booleans(), opener=st.sampled_from(["[", '{"a":']))
@example(depth=100_000, closed=False, opener="[")
def test_parse_json_rejects_a_deeply_nested_reply(depth: int, closed: bool, opener: str) -> None:
    text = opener * depth + ("]" * depth if closed and opener == "[" else "")
    try:
        parse_json(completion(text))
    except Rejected:
        pass


# 5. BFCL case files -----------------------------------------------------------------------
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant"]), "content": st.text(max_size=20)}
)
gorilla_parameters = st.one_of(
    st.fixed_dictionaries(
        {
            "type": st.just("dict"),
            "properties": st.dictionaries(
                st.text(max_size=6),
                st.fixed_dictionaries(
                    {"type": st.sampled_from(["string", "integer", "float", "array", "dict"])}
                ),
                max_size=3,
            ),
        },
        optional={"required": st.one_of(st.lists(st.text(max_size=6), max_size=2), JSON_VALUES)},
    ),
    JSON_VALUES,
)
function_spec = st.fixed_dictionaries(
    {"name": st.one_of(st.sampled_from(["weather.get", "add", "f", "none"]), st.text(max_size=10))},
    optional={"description": st.text(max_size=10), "parameters": gorilla_parameters},
)
case_lines = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(
            st.sampled_from(["c1", "c2", "simple_1", "irrelevance_3"]), st.text(max_size=8), JSON_VALUES
        ),
        "question": st.one_of(
            st.lists(st.lists(message, max_size=2), max_size=2), st.lists(message, max_size=2), JSON_VALUES
        ),
        "function": st.one_of(st.lists(function_spec, max_size=3), JSON_VALUES),
        "ground_truth": st.one_of(
            st.lists(st.dictionaries(st.text(max_size=5), JSON_VALUES, min_size=1, max_size=1), max_size=2),
            JSON_VALUES,
        ),
        "category": st.one_of(st.sampled_from(["irrelevance", "simple", "live_relevance"]), JSON_VALUES),
    },
)
valid_case_lines = st.builds(
    lambda case_id, messages, names, answer: {
        "id": case_id,
        "question": [messages],
        "function": [{"name": name} for name in names],
        **({"ground_truth": [{names[0]: {}}]} if answer else {"category": "irrelevance"}),
    },
    st.sampled_from(["c1", "c2", "simple_1", "irrelevance_3"]),
    st.lists(message, min_size=1, max_size=2),
    st.lists(st.sampled_from(["weather.get", "add", "f"]), min_size=1, max_size=2, unique=True),
    st.booleans(),
)
file_lines = st.lists(
    st.one_of(
        valid_case_lines.map(json.dumps),
        case_lines.map(json.dumps),
        JSON_VALUES.map(json.dumps),
        st.text(max_size=30),
        st.just(""),
    ),
    max_size=5,
)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder for the case files the examples write (each example overwrites its file)."""
    return tmp_path_factory.mktemp("case_files")


def load_or_refuse(path: Path) -> list[Case] | None:
    try:
        return load_case_file(path)
    except TierflowError as exc:
        assert isinstance(exc, CaseFileError), f"{type(exc).__name__}: {exc}"
        assert str(path) in str(exc)  # the message names the file
        return None


def check_cases(cases: list[Case], lines: list[str]) -> None:
    assert len(cases) == sum(bool(line.strip()) for line in lines)  # one case a line
    assert len({case.id for case in cases}) == len(cases)
    for case in cases:
        assert isinstance(case.id, str) and case.id
        assert isinstance(case.category, str)
        assert case.messages and all(
            set(m) == {"role", "content"} and all(isinstance(v, str) for v in m.values())
            for m in case.messages
        )
        assert all(isinstance(f, dict) and isinstance(f.get("name"), str) for f in case.functions)


ONE_CASE = json.dumps(
    {
        "id": "c1",
        "question": [[{"role": "user", "content": "hi"}]],
        "function": [{"name": "f"}],
        "ground_truth": [],
    }
)


@settings(BASE, max_examples=300)
@given(lines=file_lines)
@example(lines=[ONE_CASE, "", "  "])
@example(lines=[ONE_CASE, ONE_CASE])  # a duplicate id
def test_case_file_loads_or_raises_case_file_error(scratch: Path, lines: list[str]) -> None:
    path = scratch / "cases.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8")
    cases = load_or_refuse(path)
    if cases is not None:
        check_cases(cases, lines)


@settings(BASE, max_examples=150)
@given(data=st.binary(max_size=400))
@example(data=b"\xff\xfe{}")
@example(data=b'{"id": "x"}\n\x00')
def test_case_file_of_any_bytes_loads_or_raises_case_file_error(scratch: Path, data: bytes) -> None:
    path = scratch / "cases.jsonl"
    path.write_bytes(data)
    load_or_refuse(path)


@settings(BASE, max_examples=20)
@given(depth=st.integers(1, 100_000), opener=st.sampled_from(["[", '{"id": ']))
@example(depth=100_000, opener="[")
def test_case_file_with_a_deeply_nested_line_raises_case_file_error(
    scratch: Path, depth: int, opener: str
) -> None:
    path = scratch / "cases.jsonl"
    path.write_text(opener * depth + "\n", encoding="utf-8")
    load_or_refuse(path)


def good_case(case_id: str, content: str) -> dict[str, Any]:
    return {
        "id": case_id,
        "question": [[{"role": "user", "content": content}]],
        "function": [{"name": "weather.get", "parameters": {"type": "dict", "properties": {}}}],
        "ground_truth": [{"weather.get": {}}],
    }


@settings(BASE, max_examples=50)
@given(content=st.text(max_size=20), separator=st.sampled_from(["\u2028", "\u2029", "\x85"]))
@example(content="a", separator="\u2028")
def test_case_file_with_a_unicode_line_separator_in_a_string_loads(
    scratch: Path, content: str, separator: str
) -> None:
    path = scratch / "cases.jsonl"
    text = content + separator
    path.write_text(json.dumps(good_case("c1", text), ensure_ascii=False) + "\n", encoding="utf-8")
    (case,) = load_case_file(path)
    assert case.messages[0]["content"] == text


@settings(BASE, max_examples=100)
@given(functions=st.lists(function_spec, min_size=1, max_size=3))
@example(functions=[{"name": "a b"}])
def test_a_case_the_loader_accepts_becomes_tools(scratch: Path, functions: list[dict[str, Any]]) -> None:
    path = scratch / "cases.jsonl"
    line = {**good_case("c1", "hello"), "function": functions, "category": "irrelevance"}
    path.write_text(json.dumps(line) + "\n", encoding="utf-8")
    cases = load_or_refuse(path)
    for case in cases or []:
        registry_for(case)
