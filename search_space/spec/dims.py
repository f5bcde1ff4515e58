"""The Optuna parameters a spec searches (`SearchDim`s), in the spec's order.

Model and training parameters are named by their place in a trial config (`model.width`,
`training.lr`, `training.augment.crop_padding`), in the contract's field order; then
`activation` (the family choice, when there are several) and each family's conditional
parameters (`smu.alpha`, `pau.init_target`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, cast

from pydantic import BaseModel

from search_space.contract import ModelConfig, TrainingConfig
from search_space.contract.fields import ConfigModel, knob_of
from search_space.registry import Domain, Family, get_family
from search_space.spec.search import ActivationSpec
from search_space.spec.sections import is_section_type
from search_space.spec.values import Choices, SearchDim, dim_kind, is_searched


def option_or_param_domain(family: Family, name: str) -> Domain | None:
    """The domain of a family parameter or option, or None when the family has no such key."""
    if name in family.params:
        return family.params[name].domain
    if name in family.options:
        return family.options[name].domain
    return None


def section_dims(prefix: str, section: BaseModel, config: type[ConfigModel]) -> Iterator[SearchDim]:
    """The searched fields of a spec section (nested sections in their place)."""
    for name, info in config.model_fields.items():
        knob = knob_of(info)
        if knob is None or not knob.spec or not knob.search:
            continue
        value = getattr(section, name)
        if is_section_type(info.annotation):
            yield from section_dims(
                f"{prefix}.{name}", value, cast(type[ConfigModel], info.annotation)
            )
        elif knob.domain is not None and is_searched(value):
            yield SearchDim(f"{prefix}.{name}", value, dim_kind(knob.domain, value))


def search_dims(
    model: BaseModel, training: BaseModel, activations: Mapping[str, ActivationSpec]
) -> Iterator[SearchDim]:
    """Every Optuna parameter of a spec (conditional ones included), in order."""
    yield from section_dims("model", model, ModelConfig)
    yield from section_dims("training", training, TrainingConfig)
    keys = list(activations)
    if len(keys) > 1:
        yield SearchDim("activation", Choices(choices=list(keys)), "categorical")
    for key in keys:
        yield from activation_dims(key, activations[key])


def activation_dims(key: str, entry: ActivationSpec) -> Iterator[SearchDim]:
    """The conditional Optuna parameters of one activation entry (`<key>.<name>`)."""
    family = get_family(key)
    for name, value in entry.values().items():
        domain = option_or_param_domain(family, name)
        if domain is not None and is_searched(value):
            yield SearchDim(f"{key}.{name}", value, dim_kind(domain, value))
    for name in ("scope", "preset", "init_target"):
        setting: Any = getattr(entry, name)
        if isinstance(setting, Choices):
            yield SearchDim(f"{key}.{name}", setting, "categorical")
