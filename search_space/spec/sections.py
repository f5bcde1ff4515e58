"""The spec's `dataset`, `model` and `training` sections, built from the trial contract.

Each field of a contract section (search_space.contract) becomes the spec field of the same
name, by its `Knob`: a searchable field takes a value or a distribution (checked against its
domain by the StudySpec), a fixed one one value checked here, a nullable nested section
(`ema`, `lookahead`) null or one mapping with its defaults filled in (so that the resolved trial
config states what ran), a pair (`betas`) one pair. Fields with `spec=False` are the trainer's
own and not part of a spec. A training option is therefore added in the contract only.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Union, cast, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    create_model,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict  # pydantic needs it, not typing's, before Python 3.12

from search_space.contract import (
    DatasetConfig,
    EmaConfig,
    LookaheadConfig,
    ModelConfig,
    TrainingConfig,
)
from search_space.contract.fields import ConfigModel, Knob, domain_schema, knob_of
from search_space.contract.training import AugmentConfig
from search_space.registry import Domain
from search_space.spec.values import fixed_value, is_distribution, searchable

# The TypedDicts of nullable nested sections by path ("training.ema"), as they are built.
MAPPING_SPECS: dict[str, Any] = {}
_STRICT: dict[Any, Any] = {int: StrictInt, float: StrictFloat, bool: StrictBool, str: StrictStr}


def _without_none(annotation: Any) -> tuple[Any, bool]:
    """(the type, whether None is allowed) of `T` or `T | None`."""
    if get_origin(annotation) in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return members[0], True
    return annotation, False


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, ConfigModel)


def is_section_type(annotation: Any) -> bool:
    """Whether a contract field holds a nested section that is always there (`augment`)."""
    return _is_section(annotation)


def spec_name(config: type[ConfigModel]) -> str:
    """The spec section's class name: TrainingConfig → TrainingSpec."""
    return config.__name__.removesuffix("Config") + "Spec"


def section_spec(config: type[ConfigModel]) -> type[BaseModel]:
    """The spec section (a pydantic model refusing unknown keys) of a contract section."""
    fields: dict[str, Any] = {}
    for name, info in config.model_fields.items():
        knob = knob_of(info)
        if knob is not None and knob.spec:
            fields[name] = _spec_field(config.field_path(name), info, knob)
    model: Any = create_model(
        spec_name(config),
        __config__=ConfigDict(extra="forbid"),
        __doc__=config.__doc__,
        __module__=__name__,
        **fields,
    )
    return cast(type[BaseModel], model)


def _spec_field(path: str, info: FieldInfo, knob: Knob) -> tuple[Any, Any]:
    kind, nullable = _without_none(info.annotation)
    if _is_section(kind) and not nullable:
        nested = section_spec(kind)
        return nested, Field(default_factory=nested, description=info.description)
    if _is_section(kind):
        return _mapping_field(path, kind, info, knob)
    if get_origin(kind) is tuple:
        return _pair_field(path, kind, info, knob)
    if knob.search:
        searched = searchable(_STRICT[kind])
        annotation = _optional(searched) if nullable else searched
        return annotation, Field(default=info.default, description=info.description)
    assert knob.domain is not None, f"{path}: a fixed field needs a domain"
    why = f" ({knob.why_fixed})" if knob.why_fixed else ""
    check = fixed_value(path, knob.domain, why, nullable=nullable)
    schema = _value_schema(knob.domain)
    annotation = _annotated(_optional(kind) if nullable else kind, check)
    return annotation, Field(
        default=info.default, description=info.description, json_schema_extra=schema or None
    )


def _value_schema(domain: Domain) -> dict[str, Any]:
    if domain.kind == "str" and domain.choices:
        return {"enum": list(domain.choices)}
    return domain_schema(domain)


def _refuse(reason: str) -> PydanticCustomError:
    return PydanticCustomError("invalid_spec", "{reason}", {"reason": reason})


def _mapping_field(
    path: str, config: type[ConfigModel], info: FieldInfo, knob: Knob
) -> tuple[Any, Any]:
    """null, or one mapping of the nested section's keys (a plain mapping in the stored spec)."""
    keys = ", ".join(config.model_fields)

    def mapping_or_null(value: Any) -> Any:
        if value is None or (isinstance(value, Mapping) and not is_distribution(value)):
            return value
        problem = "cannot be searched" if is_distribution(value) else f"cannot be {value!r}"
        raise _refuse(
            f"{path} {problem}: give one mapping with some of {{{keys}}} (missing keys take "
            f"their defaults), or null for {knob.off}"
        )

    defaults = config().model_dump(mode="json")

    def with_defaults(value: dict[str, Any] | None) -> dict[str, Any] | None:
        # Filled in here so that the resolved trial config states what ran.
        return None if value is None else {**defaults, **value}

    mapping = _typed_dict(path, config)
    annotation = _annotated(
        _optional(mapping), BeforeValidator(mapping_or_null), AfterValidator(with_defaults)
    )
    return annotation, Field(default=info.default, description=info.description)


def _typed_dict(path: str, config: type[ConfigModel]) -> Any:
    """The keys of a nested section as a TypedDict, each one fixed value in its domain."""
    keys: dict[str, Any] = {}
    for key, info in config.model_fields.items():
        knob = knob_of(info)
        assert knob is not None and knob.domain is not None, f"{path}.{key} needs a domain"
        keys[key] = _annotated(
            info.annotation,
            fixed_value(f"{path}.{key}", knob.domain),
            Field(description=info.description, json_schema_extra=domain_schema(knob.domain)),
        )
    mapping: Any = cast(Any, TypedDict)(spec_name(config), keys, total=False)
    mapping.__pydantic_config__ = ConfigDict(extra="forbid")
    mapping.__doc__ = config.__doc__
    mapping.__module__ = __name__
    MAPPING_SPECS[path] = mapping
    return mapping


def _pair_field(path: str, kind: Any, info: FieldInfo, knob: Knob) -> tuple[Any, Any]:
    """A fixed tuple of numbers (AdamW's betas), each in the knob's domain."""
    assert knob.domain is not None, f"{path}: a pair needs its items' domain"
    domain, size = knob.domain, len(get_args(kind))

    def one_pair(value: Any) -> Any:
        if is_distribution(value):
            problem = "cannot be searched"
        elif not isinstance(value, (list, tuple)) or len(value) != size:
            problem = f"cannot be {value!r}"
        else:
            bad = [f"item {i + 1} = {v!r}" for i, v in enumerate(value) if domain.check(v)]
            if not bad:
                return value
            problem = f"has {' and '.join(bad)}"
        default = list(info.default) if isinstance(info.default, tuple) else info.default
        raise _refuse(
            f"{path} {problem}: give one list of {size} numbers in {domain} (default {default})"
        )

    item = _annotated(float, Field(json_schema_extra=domain_schema(domain)))
    pair = tuple.__class_getitem__((item,) * size)  # tuple[item, item]
    annotation = _annotated(pair, BeforeValidator(one_pair))
    return annotation, Field(default=info.default, description=info.description)


def _annotated(base: Any, *metadata: Any) -> Any:
    """`Annotated[base, *metadata]` for a type built at run time."""
    return Annotated[(base, *metadata)]


def _optional(base: Any) -> Any:
    """`base | None` for a type built at run time."""
    return Union[base, None]  # noqa: UP007


def section_domains(config: type[ConfigModel]) -> dict[str, Domain]:
    """The domains of a section's searchable spec fields (checked on values and ranges)."""
    return {
        name: knob.domain
        for name, knob in config.knobs().items()
        if knob.spec and knob.search and knob.domain is not None
    }


if TYPE_CHECKING:  # the generated classes, as the type checker sees them

    class _Section(BaseModel):
        def __getattr__(self, name: str) -> Any: ...

    class DatasetSpec(_Section): ...

    class ModelSpec(_Section): ...

    class AugmentSpec(_Section): ...

    class TrainingSpec(_Section): ...

else:
    DatasetSpec = section_spec(DatasetConfig)
    ModelSpec = section_spec(ModelConfig)
    TrainingSpec = section_spec(TrainingConfig)
    AugmentSpec = TrainingSpec.model_fields["augment"].default_factory
EmaSpec: Any = MAPPING_SPECS["training.ema"]
LookaheadSpec: Any = MAPPING_SPECS["training.lookahead"]

TRAINING_DOMAINS = section_domains(TrainingConfig)
AUGMENT_DOMAINS = section_domains(AugmentConfig)
MODEL_DOMAINS = section_domains(ModelConfig)
EMA_DEFAULTS: dict[str, Any] = EmaConfig().model_dump(mode="json")
LOOKAHEAD_DEFAULTS: dict[str, Any] = LookaheadConfig().model_dump(mode="json")
BETAS_DEFAULT: tuple[float, float] = TrainingConfig().betas
