"""The set of valid values of one parameter or option (`Domain`) and the common ones.

Torch-free, imported by the registry and the trial contract.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class Domain:
    """The set of valid values of one parameter or option."""

    kind: Literal["float", "int", "str", "bool"]
    low: float | None = None  # None = unbounded
    high: float | None = None
    low_open: bool = False  # True: low itself is excluded
    high_open: bool = False
    choices: tuple[str, ...] | None = None  # for kind "str"

    def check(self, value: Any) -> str | None:
        """Return why `value` is outside the domain, or None when it is valid."""
        if self.kind == "bool":
            return None if isinstance(value, bool) else f"expected true or false, got {value!r}"
        if self.kind == "str":
            if not isinstance(value, str):
                return f"expected a string, got {value!r}"
            if self.choices is not None and value not in self.choices:
                return f"{value!r} is not one of {', '.join(self.choices)}"
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"expected a number, got {value!r}"
        if self.kind == "int" and not isinstance(value, int):
            return f"expected an integer, got {value!r}"
        if not math.isfinite(value):
            return f"expected a finite number, got {value!r}"
        if not self.contains(float(value)):
            return f"{value!r} is outside the domain {self}"
        return None

    def contains(self, value: float) -> bool:
        """True when the number lies inside the interval."""
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return not (
            self.high is not None and (value > self.high or (self.high_open and value == self.high))
        )

    def __str__(self) -> str:
        if self.kind == "str":
            return "{" + ", ".join(self.choices or ()) + "}"
        if self.kind == "bool":
            return "{true, false}"
        left = "(" if self.low is None or self.low_open else "["
        right = ")" if self.high is None or self.high_open else "]"
        low = "-inf" if self.low is None else _short(self.low)
        high = "inf" if self.high is None else _short(self.high)
        return f"{left}{low}, {high}{right}"


def _short(value: float) -> str:
    return repr(int(value)) if float(value).is_integer() else repr(value)


REAL = Domain("float")
POSITIVE = Domain("float", low=0.0, low_open=True)
UNIT = Domain("float", low=0.0, high=1.0)
