"""How an activation family is described: its parameters, coefficients, options and aliases.

The types only; the table of families is `search_space.families`, the lookups
`search_space.registry`. Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from search_space.domain import Domain

Scope = Literal["shared", "per_layer", "per_channel"]
ALL_SCOPES: tuple[Scope, ...] = ("shared", "per_layer", "per_channel")


@dataclass(frozen=True)
class SearchRange:
    """Default Optuna range for a numeric parameter when a spec asks to search it."""

    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class ParamSpec:
    """A scalar numeric parameter of a family."""

    default: float
    domain: Domain
    search: SearchRange
    doc: str
    trainable: bool = False  # trainable by default
    can_train: bool = False  # may a spec make it trainable?
    positive: bool = False  # stored in log space when trainable (cannot leave its domain)


@dataclass(frozen=True)
class CoefficientSpec:
    """A trainable coefficient vector (PAU a/b, OPAU c/d); initialised by a fit or a preset."""

    doc: str


@dataclass(frozen=True)
class OptionSpec:
    """A non-numeric or structural choice (form, basis, degree, variant)."""

    default: str | int
    domain: Domain
    doc: str


@dataclass(frozen=True)
class Family:
    """One activation family: what it computes, what can be searched, how it is built."""

    name: str
    title: str
    formula: str
    module_path: str  # "package.module:Class", imported lazily
    docs_url: str
    params: dict[str, ParamSpec] = field(default_factory=dict)
    coefficients: dict[str, CoefficientSpec] = field(default_factory=dict)
    options: dict[str, OptionSpec] = field(default_factory=dict)
    scopes: tuple[Scope, ...] = ALL_SCOPES
    default_scope: Scope = "per_layer"
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)
    head_only: bool = False  # Maxout: changes width, MLP head only
    fit_init: bool = False  # accepts init_target / init_interval (PAU, OPAU)
    polynomial: bool = False  # accepts an input clamp (PAU, OPAU)
    notes: str = ""

    @property
    def learnable(self) -> bool:
        """True when the family has parameters that can train (scope then matters)."""
        return bool(self.coefficients) or any(p.can_train for p in self.params.values())

    @property
    def trainable_names(self) -> tuple[str, ...]:
        """Names accepted in a `trainable` mapping."""
        names = [n for n, p in self.params.items() if p.can_train]
        return (*names, *self.coefficients)

    def default_trainable(self) -> dict[str, bool]:
        """Trainable flags at their defaults."""
        flags = {n: p.trainable for n, p in self.params.items() if p.can_train}
        flags.update({n: True for n in self.coefficients})
        return flags

    def default_params(self) -> dict[str, float]:
        """Numeric parameters at their defaults."""
        return {n: p.default for n, p in self.params.items()}

    def default_options(self) -> dict[str, str | int]:
        """Options at their defaults."""
        return {n: o.default for n, o in self.options.items()}


@dataclass(frozen=True)
class Alias:
    """Another name for a family with some settings fixed (hp1, hp2, silu)."""

    target: str
    options: dict[str, str | int] = field(default_factory=dict)
    params: dict[str, float] = field(default_factory=dict)
    trainable: dict[str, bool] = field(default_factory=dict)
    note: str = ""
