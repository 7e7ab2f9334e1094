"""Checks of user-given settings with messages that say what was expected (never ``assert``)."""

from __future__ import annotations

import math
import numbers


def real(name: str, value, *, low: float | None = None, high: float | None = None, low_open: bool = False,
         high_open: bool = False, where: str = "") -> float:
    """A finite real number in the given range (bools and strings are refused)."""
    prefix = f"{where}: " if where else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise TypeError(f"{prefix}{name} must be a finite number, got {value!r} ({type(value).__name__})")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        left = "" if low is None else f"{'(' if low_open else '['}{low}"
        right = "" if high is None else f"{high}{')' if high_open else ']'}"
        span = f"in {left}, {right}" if low is not None and high is not None else (
            f"{'>' if low_open else '>='} {low}" if low is not None else f"{'<' if high_open else '<='} {high}")
        raise ValueError(f"{prefix}{name} must be {span}, got {value}")
    return float(value)


def integer(name: str, value, *, low: int | None = None, where: str = "") -> int:
    """An integer (not a bool, not a float such as 2.5 or 2.0) at least ``low``."""
    prefix = f"{where}: " if where else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{prefix}{name} must be an integer, got {value!r} ({type(value).__name__})")
    if low is not None and value < low:
        raise ValueError(f"{prefix}{name} must be an integer >= {low}, got {value}")
    return int(value)


def flag(name: str, value, *, where: str = "") -> bool:
    if not isinstance(value, bool):
        prefix = f"{where}: " if where else ""
        raise TypeError(f"{prefix}{name} must be True or False, got {value!r} ({type(value).__name__})")
    return value


def choice(name: str, value, options, *, where: str = ""):
    if not isinstance(value, str) or value not in options:
        prefix = f"{where}: " if where else ""
        raise ValueError(f"{prefix}{name} must be one of {tuple(options)}, got {value!r}")
    return value
