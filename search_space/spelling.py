"""Suggestions for a misspelt name (a family, a spec field, a choice): "did you mean …?".

Torch-free: the spec and the registry use it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any


def closest(name: Any, candidates: Iterable[Any]) -> str | None:
    """The valid name `name` most likely misspells, or None when none is close."""
    if not isinstance(name, str) or not name:
        return None
    names = [str(c) for c in candidates if isinstance(c, str) and c != name]
    by_lower = {n.lower(): n for n in names}
    if name.lower() in by_lower:  # only the case differs
        return by_lower[name.lower()]
    found = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.6)
    return by_lower[found[0]] if found else None


def did_you_mean(name: Any, candidates: Iterable[Any]) -> str:
    """The suggestion ("did you mean 'smu'?") when a candidate is close to `name`, else ""."""
    match = closest(name, candidates)
    return f"did you mean {match!r}?" if match is not None else ""


def with_hint(message: str, name: Any, candidates: Iterable[Any]) -> str:
    """`message` followed by "; did you mean …?" when a candidate is close to `name`."""
    hint = did_you_mean(name, candidates)
    return f"{message}; {hint}" if hint else message
