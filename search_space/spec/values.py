"""The spec's value types and validation plumbing: distributions, fixed values, error collection.

Every searchable field takes a fixed value or a distribution:
  - a scalar: fixed;
  - {low, high, log?, step?}: a float range (an int range for integer fields; bounds must be
    integers there);
  - {choices: [...]}: categorical.

Errors: `SpecError(errors=[{"loc": "activations.smu.alpha", "msg": ...}, ...])`, a ValueError.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    Tag,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from search_space.registry import Domain
from search_space.spelling import with_hint

# The validation context key of a new submission (parse_spec(..., submission=True)): checks that
# only a new spec must pass. Stored specs are re-parsed by every worker at every claim, and one
# that was valid when submitted must not start failing when a check is added. So a check added
# since specs were stored runs on every parse only if it protects what a worker needs (a value
# it cannot run, a bound Optuna or the database relies on). One that refuses what the code ran
# harmlessly or ignored runs only for new specs: a field the sampler, pruner or dataset does not
# read, a baseline listed twice, a blank name, hyperband's max_resource below min_resource, a
# grid of more than MAX_GRID_POINTS configurations, a count past its cap, a description longer
# than MAX_DESCRIPTION_CHARS.
SUBMISSION = "submission"


class SpecError(ValueError):
    """An invalid study spec; `errors` lists {"loc": dotted path, "msg": reason} entries."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        self.errors = errors
        summary = "; ".join(f"{e['loc'] or '(spec)'}: {e['msg']}" for e in errors)
        super().__init__(f"invalid study spec: {summary}")


def at_submission(info: ValidationInfo) -> bool:
    """Whether a validator runs for a new spec (SUBMISSION) rather than a stored one."""
    return bool(info.context and info.context.get(SUBMISSION))


def _over(value: int, high: int, cap: bool, info: ValidationInfo) -> bool:
    """Whether value is above high where that counts: always, or for a cap at submission only."""
    return value > high and (not cap or at_submission(info))


def within(name: str, low: int, high: int, *, cap: bool = False) -> AfterValidator:
    """A validator refusing integers outside [low, high] with a message naming field and range.

    `cap`: `high` bounds only a new spec (SUBMISSION): a stored one from before the cap ran with a
    larger value harmlessly.
    """

    def check(value: int, info: ValidationInfo) -> int:
        if value < low or _over(value, high, cap, info):
            raise PydanticCustomError(
                "invalid_spec",
                "{reason}",
                {"reason": f"{name} must be between {low} and {high}, not {value}"},
            )
        return value

    return AfterValidator(check)


def schema_bounds(low: int, high: int) -> dict[str, Any]:
    """The JSON-schema entry of a bounded integer (the validator above does the checking)."""
    return {"minimum": low, "maximum": high}


def int_or_auto(name: str, low: int, high: int, *, cap: bool = False) -> BeforeValidator:
    """A validator for an integer in [low, high] or the string "auto" (pruner resources).

    One check rather than a union, so that an error is located at the field itself (a union
    would add its branch to the location) and `"3"` or `3.0` are refused, not converted.
    `cap` as for _within.
    """

    def check(value: Any, info: ValidationInfo) -> Any:
        if value == "auto" and isinstance(value, str):
            return value
        number = isinstance(value, int) and not isinstance(value, bool)
        if number and low <= value and not _over(value, high, cap, info):
            return value
        reason = f"{name} must be auto or an integer between {low} and {high}, not {value!r}"
        raise PydanticCustomError("invalid_spec", "{reason}", {"reason": reason})

    return BeforeValidator(check)


def exact_int(name: str) -> BeforeValidator:
    """A validator refusing anything but an int (a Literal[1] field would take true or 1.0)."""

    def check(value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise PydanticCustomError(
            "invalid_spec", "{reason}", {"reason": f"{name} must be an integer, not {value!r}"}
        )

    return BeforeValidator(check)


# -- distributions -------------------------------------------------------------------------
def _number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PydanticCustomError(
            "invalid_spec", "{reason}", {"reason": f"must be a number, not {value!r}"}
        )
    return value


Number = Annotated[int | float, BeforeValidator(_number)]
FiniteFloat = Annotated[StrictFloat, Field(allow_inf_nan=False)]


class Range(BaseModel):
    """A numeric search range; integer-typed parameters need integer bounds."""

    model_config = ConfigDict(extra="forbid")

    low: Number
    high: Number
    log: StrictBool = False
    step: Number | None = None


class Choices(BaseModel):
    """A categorical search over the listed values."""

    model_config = ConfigDict(extra="forbid")

    choices: list[bool | int | float | str] = Field(min_length=1)


def _kind_of(value: Any) -> str:
    if isinstance(value, Choices) or (isinstance(value, Mapping) and "choices" in value):
        return "@choices"
    if isinstance(value, (Range, Mapping)):
        return "@range"
    return "@fixed"


def searchable(fixed: Any) -> Any:
    """A field type taking a fixed value of type `fixed`, a Range or Choices."""
    # Strict: `lr: true`, `epochs: "64"` or `epochs: 10.5` are mistakes to report, not to coerce
    # (an int is still a valid float).
    return Annotated[
        Annotated[fixed, Tag("@fixed")]
        | Annotated[Range, Tag("@range")]
        | Annotated[Choices, Tag("@choices")],
        Discriminator(_kind_of),
    ]


SearchFloat = searchable(StrictFloat)
SearchInt = searchable(StrictInt)
SearchBool = searchable(StrictBool)
SearchStr = searchable(StrictStr)
SearchAny = searchable(StrictBool | StrictInt | StrictFloat | StrictStr)
ANY_VALUE: TypeAdapter[Any] = TypeAdapter(SearchAny)


@dataclass(frozen=True)
class SearchDim:
    """One Optuna parameter a spec searches: its name, distribution and value kind."""

    name: str
    dist: Range | Choices
    kind: Literal["int", "float", "categorical"]


def is_searched(value: Any) -> bool:
    """True when a spec value is a distribution rather than a fixed value."""
    return isinstance(value, (Range, Choices))


# -- error plumbing -------------------------------------------------------------------------
class Errors:
    """Collects (loc, msg) pairs while validating, then raises them as one ValidationError."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.items: list[tuple[tuple[str | int, ...], str]] = []

    def add(self, loc: tuple[str | int, ...], msg: str) -> None:
        self.items.append((loc, msg))

    def raise_if_any(self) -> None:
        if not self.items:
            return
        details = [
            InitErrorDetails(
                type=PydanticCustomError("invalid_spec", "{reason}", {"reason": msg}),
                loc=loc,
                input=None,
            )
            for loc, msg in self.items
        ]
        raise ValidationError.from_exception_data(self.title, details)


def domain_problem(domain: Domain, value: Any) -> str | None:
    """Why a value is outside a domain (None: inside); a misspelt choice gets a suggestion."""
    why = domain.check(value)
    if why is None or domain.kind != "str" or not domain.choices:
        return why
    return with_hint(why, value, domain.choices)


def check_value(value: Any, domain: Domain) -> list[str]:
    """Why a fixed value or distribution does not fit a domain (empty when it does)."""
    if isinstance(value, Choices):
        problems = [
            f"choice {c!r}: {why}" for c in value.choices if (why := domain_problem(domain, c))
        ]
        if len({json.dumps(c) for c in value.choices}) != len(value.choices):
            problems.append("choices must be distinct")
        return problems
    if isinstance(value, Range):
        return _range_problems(value, domain)
    why = domain_problem(domain, value)
    return [why] if why else []


def _range_problems(r: Range, domain: Domain) -> list[str]:
    if domain.kind not in ("int", "float"):
        return [f"a {domain.kind} parameter takes a value or {{choices: [...]}}, not a range"]
    problems = []
    if domain.kind == "int" and not all(
        isinstance(v, int) and not isinstance(v, bool) for v in (r.low, r.high)
    ):
        problems.append("an integer parameter needs integer low and high")
    if domain.kind == "int" and r.step is not None and not isinstance(r.step, int):
        problems.append("an integer parameter needs an integer step")
    if not r.low < r.high:
        problems.append(f"empty range: low ({r.low}) must be < high ({r.high})")
    if r.log and r.low <= 0:
        problems.append("a log range needs low > 0")
    if r.step is not None and r.step <= 0:
        problems.append("step must be > 0")
    if r.log and r.step is not None and not (domain.kind == "int" and r.step == 1):
        problems.append("log and step cannot be combined")
    for bound in (r.low, r.high):
        if math.isfinite(bound) and not domain.contains(float(bound)):
            problems.append(f"{bound!r} is outside the domain {domain}")
        elif not math.isfinite(bound):
            problems.append("bounds must be finite")
    return problems


def dim_kind(domain: Domain, value: Range | Choices) -> Literal["int", "float", "categorical"]:
    if isinstance(value, Choices):
        return "categorical"
    return "int" if domain.kind == "int" else "float"


def is_distribution(value: Any) -> bool:
    """Whether a raw spec value is written as a distribution ({low, high, ...} or {choices})."""
    if isinstance(value, (Range, Choices)):
        return True
    return isinstance(value, Mapping) and (
        "choices" in value or {"low", "high"} <= set(value) or "log" in value or "step" in value
    )


def fixed_value(
    path: str, domain: Domain, why_fixed: str = "", *, nullable: bool = False
) -> BeforeValidator:
    """A validator for a field that takes one value (never searched), checked against domain.

    Runs before pydantic's type coercion, so a bool is not taken for a number nor "3" for an
    integer, as the trainer would not take them either. `nullable`: null is a value too (off).
    """

    def check(value: Any) -> Any:
        if value is None and nullable:
            return value
        if is_distribution(value):
            raise PydanticCustomError(
                "invalid_spec",
                "{reason}",
                {
                    "reason": f"{path} cannot be searched: give one value in {domain}, not a "
                    f"distribution{why_fixed}"
                },
            )
        if (why := domain_problem(domain, value)) is not None:
            raise PydanticCustomError(
                "invalid_spec", "{reason}", {"reason": _bounded(path, domain, value, why)}
            )
        return value

    return BeforeValidator(check)


def _bounded(path: str, domain: Domain, value: Any, why: str) -> str:
    """An integer outside a bounded range reads "x must be between 1 and 10, not 0"."""
    number = isinstance(value, int) and not isinstance(value, bool)
    if domain.kind == "int" and number and domain.low is not None and domain.high is not None:
        return f"{path} must be between {int(domain.low)} and {int(domain.high)}, not {value}"
    return why
