"""Unit conversion through pint (a maintained registry of units, offsets for temperatures)."""

from __future__ import annotations

import re
import threading
from functools import lru_cache
from typing import Any

from tierflow.errors import ToolError

__all__ = ["unit_convert", "prepare_units"]

_ALIASES = {
    "c": "degC",
    "°c": "degC",
    "celsius": "degC",
    "degrees celsius": "degC",
    "degree celsius": "degC",
    "f": "degF",
    "°f": "degF",
    "fahrenheit": "degF",
    "degrees fahrenheit": "degF",
    "degree fahrenheit": "degF",
    "k": "kelvin",
    "kelvins": "kelvin",
}
_lock = threading.Lock()


@lru_cache(maxsize=1)
def _registry() -> Any:
    import pint

    return pint.UnitRegistry(autoconvert_offset_to_baseunit=True)


_MAX_UNIT = 64
# pint evaluates a unit as an expression: "9**9**9*m" would compute 9**387420489.
_NUMBER_POWER = re.compile(r"[\d.)]\s*(\*\*|\^)")
_LONG_NUMBER = re.compile(r"\d{7,}")


def _unit(registry: Any, text: str) -> Any:
    name = _ALIASES.get(text.strip().lower(), text.strip())
    if not name:
        raise ToolError("a unit is empty")
    if len(name) > _MAX_UNIT:
        raise ToolError(f"a unit is longer than {_MAX_UNIT} characters")
    if _NUMBER_POWER.search(name) or _LONG_NUMBER.search(name):
        raise ToolError(f"{text[:_MAX_UNIT]!r} is not a unit: numbers and their powers belong in value")
    try:
        return registry.parse_units(name)
    except Exception:  # noqa: BLE001 - pint's parser raises many kinds ("/" is an AssertionError)
        raise ToolError(
            f"unknown unit {text[:_MAX_UNIT]!r}; use names like km, mile, kg, lb, degC, L"
        ) from None


def prepare_units() -> None:
    """Build pint's registry (about a second) once, in the process that calls the tool."""
    with _lock:
        _registry()


def unit_convert(value: float, from_unit: str, to_unit: str) -> str:
    """Convert a quantity between units (length, mass, volume, time, speed, temperature, data...).

    Args:
        value: the number to convert
        from_unit: the unit of value, e.g. km, mile, kg, lb, degC, degF, liter, hour, MB
        to_unit: the unit to convert to
    """
    import pint

    with _lock:  # pint's registry caches are not thread-safe
        registry = _registry()
        source, target = _unit(registry, from_unit), _unit(registry, to_unit)
        try:
            result = registry.Quantity(value, source).to(target)
        except pint.errors.DimensionalityError:
            raise ToolError(
                f"cannot convert {from_unit} to {to_unit}: they measure different things"
            ) from None
        except (OverflowError, ZeroDivisionError, ValueError):
            raise ToolError(f"converting {from_unit} to {to_unit} leaves the range of numbers") from None
    return f"{value:g} {from_unit} = {result.magnitude:.6g} {to_unit}"
