"""The keys a place in the spec takes, found from the spec's own types.

pydantic reports a misspelt key (`training.batchsize`) as "extra_forbidden" without saying what
the valid keys are; `keys_at` finds them by walking the model's field types along the error's
location, so that the message can suggest the right one (`batch_size`).
"""

from __future__ import annotations

import types
from collections.abc import Sequence
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel
from typing_extensions import is_typeddict

from search_space.spec.values import Choices, Range

# The union tags of a searchable field's location (values.searchable): which member it took.
_TAGGED: dict[str, type[BaseModel]] = {"@range": Range, "@choices": Choices}


def keys_at(root: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    """The keys valid where `loc`'s last part is (pydantic's raw location); [] when unknown."""
    kinds: list[Any] = [root]
    for part in loc[:-1]:
        if isinstance(part, str) and part.startswith("@"):
            tagged = _TAGGED.get(part)
            kinds = [
                k for k in kinds if k is tagged or (tagged is None and k not in (Range, Choices))
            ]
            continue
        kinds = [member for kind in kinds for member in _members(_child(kind, part))]
    return sorted({key for kind in kinds for key in _keys(kind)})


def _members(annotation: Any) -> list[Any]:
    """The types a field can hold: Annotated, optional and union wrappers taken off."""
    if annotation is None:
        return []
    origin = get_origin(annotation)
    if origin is Annotated:
        return _members(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return [member for arg in get_args(annotation) for member in _members(arg)]
    return [annotation]


def _child(kind: Any, part: str | int) -> Any:
    """The type of `kind`'s key or item `part`, or None."""
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        field = kind.model_fields.get(str(part))
        return None if field is None else field.annotation
    if is_typeddict(kind):
        return kind.__annotations__.get(str(part))
    origin, args = get_origin(kind), get_args(kind)
    if origin in (list, tuple) and args and isinstance(part, int):
        return args[0]
    if origin is dict and len(args) == 2:
        return args[1]
    return None


def _keys(kind: Any) -> list[str]:
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        return list(kind.model_fields)
    if is_typeddict(kind):
        return list(kind.__annotations__)
    return []
