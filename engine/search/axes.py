"""Grid axes as the command line writes them: `lam=0:1:21` (21 evenly spaced values from 0 to 1, both ends
included) or `density=0.1,0.2,0.5` (the values listed). Whether a name is a parameter of the method and
every value in its declared range is checked by `engine.search.grid.checked_axes` once the method is known."""

from __future__ import annotations

from collections.abc import Sequence

from engine.errors import ParameterError

Axis = tuple[str, tuple[float, ...]]


def parse_axis(text: str) -> Axis:
    """One `name=low:high:count` or `name=v1,v2,...` definition (ParameterError naming it otherwise)."""
    name, sep, values = text.partition("=")
    name = name.strip()
    if not sep or not name or not values.strip():
        raise ParameterError(f"grid {text!r}", "is not NAME=LOW:HIGH:COUNT or NAME=V1,V2,...", fix="e.g. lam=0:1:21")
    if ":" in values:
        return name, _evenly_spaced(text, values)
    return name, tuple(_number(text, v) for v in values.split(","))


def parse_axes(texts: Sequence[str]) -> tuple[Axis, ...]:
    """Every definition in order (the last axis varies fastest in the grid); each name once."""
    axes = tuple(parse_axis(t) for t in texts)
    names = [name for name, _ in axes]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ParameterError(f"grid axis {repeated[0]!r}", "is given more than once", fix="give each parameter once")
    return axes


def _evenly_spaced(text: str, values: str) -> tuple[float, ...]:
    parts = values.split(":")
    if len(parts) != 3:
        raise ParameterError(f"grid {text!r}", "a range needs LOW:HIGH:COUNT", fix="e.g. lam=0:1:21")
    low, high = _number(text, parts[0]), _number(text, parts[1])
    count = _number(text, parts[2])
    if count != int(count) or count < 1 or (count == 1 and low != high):
        raise ParameterError(
            f"grid {text!r}", "COUNT must be a whole number ≥ 2 (1 when LOW = HIGH)", fix="e.g. lam=0:1:21"
        )
    count = int(count)
    if count == 1:
        return (low,)
    return tuple(round(low + i * (high - low) / (count - 1), 10) for i in range(count))


def _number(text: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ParameterError(f"grid {text!r}", f"{raw.strip()!r} is not a number", fix="e.g. lam=0:1:21") from None
