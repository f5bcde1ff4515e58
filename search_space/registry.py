"""The activation registry: look families up by name or alias and resolve their settings.

The table itself is `search_space.families`, the types describing it `search_space.family_types`
and `search_space.domain`; their names are re-exported here, so `from search_space.registry
import FAMILIES, Domain, get_family, ...` keeps working. Torch-free: the service imports this
module.
"""

from __future__ import annotations

from collections.abc import Mapping

from search_space.domain import POSITIVE, REAL, UNIT, Domain
from search_space.families import (
    ALIASES,
    DEFAULT_FIT_INTERVAL,
    DEFAULT_FIT_TARGET,
    FAMILIES,
    FIT_TARGETS,
    MAX_DEGREE,
    OPAU_BASES,
    PAU_FORMS,
    PAU_REFERENCE_LEAKY_RELU,
)
from search_space.family_types import (
    ALL_SCOPES,
    Alias,
    CoefficientSpec,
    Family,
    OptionSpec,
    ParamSpec,
    Scope,
    SearchRange,
)
from search_space.spelling import did_you_mean

__all__ = [
    "ALIASES",
    "ALL_SCOPES",
    "DEFAULT_FIT_INTERVAL",
    "DEFAULT_FIT_TARGET",
    "FAMILIES",
    "FIT_TARGETS",
    "MAX_DEGREE",
    "OPAU_BASES",
    "PAU_FORMS",
    "PAU_REFERENCE_LEAKY_RELU",
    "POSITIVE",
    "POSITIVE_MAX",
    "POSITIVE_MIN",
    "PRESCREEN_DF_LIMIT",
    "PRESCREEN_FLAT_LIMIT",
    "PRESCREEN_F_LIMIT",
    "PRESCREEN_INTERVAL",
    "REAL",
    "UNIT",
    "Alias",
    "CoefficientSpec",
    "Domain",
    "Family",
    "OptionSpec",
    "ParamSpec",
    "Scope",
    "SearchRange",
    "family_names",
    "get_alias",
    "get_family",
    "resolve_settings",
]

# The pre-screen (search_space.curves.prescreen) on [-10, 10] in fp32: a candidate is rejected
# when f or f′ is not finite, |f| > PRESCREEN_F_LIMIT (fp16 overflows at 65504; no useful
# activation reaches 1e3 at |x| = 10), |f′| > PRESCREEN_DF_LIMIT, or max f − min f is below
# PRESCREEN_FLAT_LIMIT (a constant curve).
PRESCREEN_INTERVAL: tuple[float, float] = (-10.0, 10.0)
PRESCREEN_F_LIMIT = 1e3
PRESCREEN_DF_LIMIT = 1e2
PRESCREEN_FLAT_LIMIT = 1e-6

# Positive parameters are stored as log(value) and clamped to this range, so they can never
# reach 0 or infinity (ACTIVATIONS.md §1 traps). Both SMU presets (1e6, 4.33e-9) lie inside.
POSITIVE_MIN = 1e-12
POSITIVE_MAX = 1e12


def family_names(include_aliases: bool = True) -> list[str]:
    """All valid family names (and aliases), in registry order."""
    names = list(FAMILIES)
    return [*names, *ALIASES] if include_aliases else names


def get_family(name: str) -> Family:
    """Return the family for a name or alias; unknown names raise ValueError listing valid ones."""
    key = name.lower() if isinstance(name, str) else name
    if key in FAMILIES:
        return FAMILIES[key]
    if key in ALIASES:
        return FAMILIES[ALIASES[key].target]
    hint = did_you_mean(name, family_names())
    raise ValueError(
        f"unknown activation family {name!r}; {hint + ' ' if hint else ''}valid names: "
        f"{', '.join(family_names())}"
    )


def get_alias(name: str) -> Alias | None:
    """The alias record for a name, or None when the name is a family itself."""
    return ALIASES.get(name.lower())


def resolve_settings(
    name: str,
    params: Mapping[str, float] | None = None,
    options: Mapping[str, str | int] | None = None,
    trainable: Mapping[str, bool] | None = None,
    preset: str | None = None,
) -> tuple[Family, dict[str, float], dict[str, str | int], dict[str, bool]]:
    """Defaults ← preset ← alias ← given values, for one family; raises ValueError on bad names."""
    family = get_family(name)
    alias = get_alias(name)
    values = family.default_params()
    opts = family.default_options()
    flags = family.default_trainable()
    if preset is not None:
        if preset not in family.presets:
            raise ValueError(
                f"{family.name} has no preset {preset!r}; presets: "
                f"{', '.join(family.presets) or 'none'}"
            )
        chosen = family.presets[preset]
        values.update({k: float(v) for k, v in chosen.items() if k in family.params})
        opts.update({k: v for k, v in chosen.items() if k in family.options})
    if alias is not None:
        values.update(alias.params)
        opts.update(alias.options)
        flags.update(alias.trainable)
        _check_alias(name, alias, params, options, trainable)
    for kind, given, known in (
        ("parameter", params, family.params),
        ("option", options, family.options),
        ("trainable flag", trainable, {**family.params, **family.coefficients}),
    ):
        unknown = sorted(set(given or {}) - set(known))
        if unknown:
            raise ValueError(
                f"{family.name} has no {kind} {', '.join(map(repr, unknown))}; valid: "
                f"{', '.join(known) or 'none'}"
            )
    for key, value in {**(params or {}), **(options or {})}.items():
        spec = family.params.get(key) or family.options.get(key)
        why = spec.domain.check(value) if spec is not None else None
        if why:
            raise ValueError(f"{family.name} {key}: {why}")
    for key, flag in (trainable or {}).items():
        if flag and key not in flags:
            raise ValueError(f"{family.name}'s {key} cannot be trainable")
    values.update({k: float(v) for k, v in (params or {}).items()})
    opts.update(options or {})
    flags.update({k: v for k, v in (trainable or {}).items() if k in flags})
    return family, values, opts, flags


def _check_alias(
    name: str,
    alias: Alias,
    params: Mapping[str, float] | None,
    options: Mapping[str, str | int] | None,
    trainable: Mapping[str, bool] | None,
) -> None:
    """An alias fixes some settings; a different given value is an error, not an override."""
    for fixed, given in (
        (alias.params, params),
        (alias.options, options),
        (alias.trainable, trainable),
    ):
        for key, value in fixed.items():
            if given and key in given and given[key] != value:
                raise ValueError(
                    f"{name} is {alias.target} with {key}={value!r} fixed; got {given[key]!r}"
                )
