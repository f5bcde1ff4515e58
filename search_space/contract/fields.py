"""The machinery of the trial contract: a field's valid values and how a study spec may set it.

Each field of a contract section (search_space.contract) is declared once, as

    lr: Annotated[float, Knob(Domain("float", low=0.0, low_open=True))] = Field(
        0.1, description="peak learning rate; the schedule scales it")

and everything else reads that declaration: the trainer's validation (`ConfigModel` checks
every value against its `Knob.domain` before pydantic converts it, so `true` is never taken for
1 nor "3" for 3), the study spec's section of the same name (search_space.spec builds it from
the contract: a searchable field takes a value or a distribution, a fixed one a value), the
spec's bounds and docs, and the canonical form of a trial (`canonical`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic.fields import FieldInfo

from search_space.registry import Domain


@dataclass(frozen=True)
class Knob:
    """How a contract field may be set.

    `domain`: its valid values (for a pair, each element's; for a nested section, None).
    `search`: a study spec may give a distribution for it (else one value for the whole study,
    e.g. what the accuracies measure; `why_fixed` says why, in the spec's error). `spec`: a study
    spec sets it at all (False: the trainer's own option, such as the pad mode of the proxy's
    recipe). `off`: for a nullable nested section, what null means ("no averaging").
    """

    domain: Domain | None = None
    search: bool = True
    spec: bool = True
    off: str = ""
    why_fixed: str = ""


class ConfigError(ValueError):
    """A trial config the trainer cannot run; the message names each field and why."""


def knob_of(info: FieldInfo) -> Knob | None:
    """The Knob a contract field is annotated with (None: a plain field)."""
    return next((m for m in info.metadata if isinstance(m, Knob)), None)


def domain_problem(path: str, value: Any, domain: Domain) -> str | None:
    """Why a raw value is not in a domain (None when it is), naming the field."""
    if isinstance(value, (list, tuple)) and domain.kind in ("int", "float"):
        for i, item in enumerate(value):
            if (why := domain.check(item)) is not None:
                return f"{path}[{i}]: {why}"
        return None
    why = domain.check(value)
    return None if why is None else f"{path}: {why}"


def domain_schema(domain: Domain) -> dict[str, Any]:
    """The JSON-schema bounds of a numeric domain ({"minimum": 0, "exclusiveMaximum": 1})."""
    schema: dict[str, Any] = {}
    if domain.kind not in ("int", "float"):
        return schema
    for bound, value, is_open in (
        ("Minimum", domain.low, domain.low_open),
        ("Maximum", domain.high, domain.high_open),
    ):
        if value is not None:
            number = int(value) if float(value).is_integer() else value
            schema[f"exclusive{bound}" if is_open else bound.lower()] = number
    return schema


class ConfigModel(BaseModel):
    """A frozen contract section: each value checked against its field's domain, by name.

    Unknown keys are refused, naming the valid ones: a misspelt option must not train with its
    default, nor a config written by a newer version train without what it asks for.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    section: ClassVar[str] = ""  # its place in a trial config, e.g. "training.augment"

    @model_validator(mode="before")
    @classmethod
    def _check_domains(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        unknown = sorted(set(data) - set(cls.model_fields))
        if unknown:
            where = f"{cls.section}: " if cls.section else ""
            raise ValueError(
                f"{where}unknown keys {', '.join(unknown)}; valid: {', '.join(cls.model_fields)}"
            )
        for name, info in cls.model_fields.items():
            knob = knob_of(info)
            value = data.get(name)
            if knob is None or knob.domain is None or name not in data or value is None:
                continue
            if (why := domain_problem(cls.field_path(name), value, knob.domain)) is not None:
                raise ValueError(why)
        return data

    @classmethod
    def field_path(cls, name: str) -> str:
        """A field's dotted name in a trial config: "training.lr"."""
        return f"{cls.section}.{name}" if cls.section else name

    @classmethod
    def knobs(cls) -> dict[str, Knob]:
        """The contract fields of this section (name → Knob), in declaration order."""
        return {n: k for n, info in cls.model_fields.items() if (k := knob_of(info)) is not None}


def parse(model: type[ConfigModel], value: Any) -> Any:
    """Validate a mapping into a contract model; ConfigError names each field and why."""
    try:
        return model.model_validate(value)
    except ValidationError as error:
        raise ConfigError(describe(error, model.section)) from error


def describe(error: ValidationError, prefix: str = "") -> str:
    """pydantic's errors as "training.ema.every: must be …; …" (one clause per problem)."""
    parts = []
    for item in error.errors():
        message = str(item["msg"]).removeprefix("Value error, ")
        where = ".".join(str(p) for p in item["loc"])
        path = ".".join(p for p in (prefix, where) if p)
        # Our own domain messages already start with the field's path.
        parts.append(message if path and message.startswith(path) else f"{path}: {message}")
    return "; ".join(parts)


def finite_or_none(value: float | None) -> float | None:
    """A number as JSON can hold it: finite, else None."""
    return value if value is not None and math.isfinite(value) else None
