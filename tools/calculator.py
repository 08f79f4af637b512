"""Arithmetic by walking a whitelisted Python AST: never ``eval``, bounded in size and time."""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

from tierflow.errors import ToolError

__all__ = ["evaluate", "calculator"]

Number = int | float

_MAX_EXPRESSION = 500
_MAX_INT_BITS = 4096
_MAX_FACTORIAL = 500
_MAX_ROUND_DIGITS = 308  # beyond a float's range, round(1, -10**9) would compute 10**(10**9)

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e, "tau": math.tau}


def _factorial(n: Number) -> int:
    if not float(n).is_integer() or n < 0 or n > _MAX_FACTORIAL:
        raise ToolError(f"factorial takes a whole number from 0 to {_MAX_FACTORIAL}")
    return math.factorial(int(n))


def _round(number: Number, digits: Number | None = None) -> Number:
    if digits is None:
        return round(number)
    if not float(digits).is_integer() or abs(digits) > _MAX_ROUND_DIGITS:
        raise ToolError(
            f"round takes a whole number of digits from -{_MAX_ROUND_DIGITS} to {_MAX_ROUND_DIGITS}"
        )
    return round(number, int(digits))


_FUNCTIONS: dict[str, Callable[..., Number]] = {
    "sqrt": math.sqrt,
    "abs": abs,
    "round": _round,
    "min": min,
    "max": max,
    "floor": math.floor,
    "ceil": math.ceil,
    "exp": math.exp,
    "log": math.log,
    "log10": math.log10,
    "log2": math.log2,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "asin": math.asin,
    "acos": math.acos,
    "atan": math.atan,
    "hypot": math.hypot,
    "factorial": _factorial,
}


def evaluate(expression: str) -> Number:
    """Evaluate an arithmetic expression; a ``ToolError`` explains anything it refuses."""
    text = expression.strip()
    if not text:
        raise ToolError("the expression is empty")
    if len(text) > _MAX_EXPRESSION:
        raise ToolError(f"the expression is longer than {_MAX_EXPRESSION} characters")
    try:
        tree = ast.parse(text.replace("×", "*").replace("÷", "/"), mode="eval")
    except SyntaxError:
        raise ToolError(f"not a valid arithmetic expression: {expression!r}") from None
    try:
        value = _eval(tree.body)
    except ZeroDivisionError:
        raise ToolError("division by zero") from None
    except OverflowError:
        raise ToolError("the result is too large") from None
    except (ValueError, TypeError) as exc:
        raise ToolError(f"math error: {exc}") from None
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return int(value)
    return value


def _eval(node: ast.AST) -> Number:
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise ToolError(f"only numbers are allowed, not {node.value!r}")
        return _checked(node.value)  # 1e999 is read as inf
    if isinstance(node, ast.BinOp):
        if isinstance(node.op, ast.BitXor):
            raise ToolError("'^' is not a power here: write 2 ** 3")
        op = _BINARY.get(type(node.op))
        if op is None:
            raise ToolError(f"operator {type(node.op).__name__} is not allowed")
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow):
            _check_power(left, right)
        return _checked(op(left, right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _checked(_UNARY[type(node.op)](_eval(node.operand)))
    if isinstance(node, ast.Name):
        if node.id in _CONSTANTS:
            return _CONSTANTS[node.id]
        raise ToolError(f"unknown name {node.id!r}; constants: {', '.join(_CONSTANTS)}")
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
            raise ToolError(f"unknown function; functions: {', '.join(sorted(_FUNCTIONS))}")
        if node.keywords:
            raise ToolError("functions take positional arguments only")
        return _checked(_FUNCTIONS[node.func.id](*(_eval(arg) for arg in node.args)))
    if isinstance(node, ast.Tuple):
        raise ToolError("write numbers without thousands separators (1000, not 1,000)")
    raise ToolError(f"{type(node).__name__} is not allowed in an arithmetic expression")


def _check_power(base: Number, exponent: Number) -> None:
    if isinstance(base, int) and isinstance(exponent, int) and abs(base) > 1:
        if exponent * math.log2(abs(base)) > _MAX_INT_BITS:
            raise ToolError("the result is too large")


def _checked(value: Any) -> Number:
    if isinstance(value, complex):
        raise ToolError("the result is not a real number")
    if isinstance(value, int) and value.bit_length() > _MAX_INT_BITS:
        raise ToolError("the result is too large")
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        raise ToolError("the result is not a finite number")
    return value  # type: ignore[no-any-return]


def calculator(expression: str) -> Number:
    """Evaluate an arithmetic expression exactly, e.g. (17 * 23) + 4 or sqrt(2) * 3.

    Args:
        expression: arithmetic with numbers, + - * / // % ** and parentheses; functions
            sqrt, abs, round, min, max, floor, ceil, exp, log, log10, sin, cos, tan, factorial;
            constants pi and e.
    """
    return evaluate(expression)
