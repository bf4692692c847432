"""Typed settings: a dataclass built from a mapping (YAML or flags), with one-line errors that name
the source and the setting."""
from __future__ import annotations

from dataclasses import fields
from typing import Any

from nas.errors import PoseNASError

KINDS = {"int": int, "float": (int, float), "bool": bool, "str": str, "dict": dict, "list": list}


def typed(kind, d: dict, source: str = "config"):
    """``kind(**d)`` for a settings dataclass; an unknown key or a value of the wrong type is a
    one-line error naming the source and the setting."""
    known = {f.name: f for f in fields(kind)}
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise PoseNASError(f"{source}: unknown setting(s) {unknown}; known: {sorted(known)}")
    for name, value in d.items():
        kinds = [KINDS[t.split("[")[0]] for t in str(known[name].type).split(" | ") if t.split("[")[0] in KINDS]
        if value is not None and kinds and not any(is_kind(value, k) for k in kinds):
            raise PoseNASError(f"{source}: setting {name!r} must be {known[name].type}, got {value!r}")
    try:
        return kind(**d)
    except TypeError as e:  # a required setting left out
        raise PoseNASError(f"{source}: {e}") from None


def is_kind(value: Any, kind) -> bool:
    """``isinstance`` where a bool counts as a bool only, never as an int or a float."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return any(isinstance(value, k) and isinstance(value, bool) == (k is bool) for k in kinds)
