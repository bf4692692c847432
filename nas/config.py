"""Typed settings: a dataclass built from a mapping (YAML or flags), with one-line errors that name
the source and the setting. A settings class declares the range of each number in ``RANGES``."""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from nas.errors import PoseNASError

KINDS = {"int": int, "float": (int, float), "bool": bool, "str": str, "dict": dict, "list": list}


@dataclass(frozen=True)
class Range:
    """Where a number may lie: from ``low`` (excluded with ``above``) to ``high``."""
    low: float | None = None
    high: float | None = None
    above: bool = False

    def holds(self, value: float) -> bool:
        return (self.low is None or (value > self.low if self.above else value >= self.low)) and \
            (self.high is None or value <= self.high)

    def __str__(self) -> str:
        low = None if self.low is None else f"{'above' if self.above else 'at least'} {self.low:g}"
        high = None if self.high is None else f"at most {self.high:g}"
        return " and ".join(t for t in (low, high) if t)


POSITIVE, NON_NEGATIVE, AT_LEAST_ONE = Range(0, above=True), Range(0), Range(1)


def typed(kind, d: dict, source: str = "config"):
    """``kind(**d)`` for a settings dataclass; an unknown key, a value of the wrong type, a NaN or
    infinite number or one outside the class's ``RANGES`` is a one-line error naming the source
    and the setting."""
    known = {f.name: f for f in fields(kind)}
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise PoseNASError(f"{source}: unknown setting(s) {unknown}; known: {sorted(known)}")
    ranges = getattr(kind, "RANGES", {})
    for name, value in d.items():
        kinds = [KINDS[t.split("[")[0]] for t in str(known[name].type).split(" | ") if t.split("[")[0] in KINDS]
        if value is not None and kinds and not any(is_kind(value, k) for k in kinds):
            raise PoseNASError(f"{source}: setting {name!r} must be {known[name].type}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise PoseNASError(f"{source}: setting {name!r} must be a finite number, got {value!r}")
        if name in ranges and is_kind(value, (int, float)) and not ranges[name].holds(value):
            raise PoseNASError(f"{source}: setting {name!r} must be {ranges[name]}, got {value!r}")
    try:
        return kind(**d)
    except TypeError as e:  # a required setting left out
        raise PoseNASError(f"{source}: {e}") from None


def is_kind(value: Any, kind) -> bool:
    """``isinstance`` where a bool counts as a bool only, never as an int or a float."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return any(isinstance(value, k) and isinstance(value, bool) == (k is bool) for k in kinds)
