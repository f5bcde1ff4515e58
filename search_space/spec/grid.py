"""Grid arithmetic: the values of discrete dimensions and the number of distinct configurations.

A family's own parameters vary only within that family's configurations (relu is not trained
once per value of smu.alpha); model and training parameters vary in every family's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from search_space.spec.dims import activation_dims
from search_space.spec.search import ActivationSpec
from search_space.spec.values import Choices, SearchDim


class Searched(Protocol):
    """What grid_size reads of a spec (a StudySpec)."""

    @property
    def activations(self) -> Mapping[str, ActivationSpec]: ...

    def search_space(self) -> list[SearchDim]: ...


def is_continuous(dim: SearchDim) -> bool:
    """A float range without a step: no grid can list it."""
    return not isinstance(dim.dist, Choices) and dim.kind == "float" and dim.dist.step is None


def is_shared_dim(dim: SearchDim) -> bool:
    """A model or training parameter: searched in every family's configurations."""
    return dim.name.split(".", 1)[0] in ("model", "training")


def grid_count(dim: SearchDim) -> int:
    """How many values a discrete dimension has on the grid (without listing them)."""
    dist = dim.dist
    if isinstance(dist, Choices):
        return len(dist.choices)
    if dist.step is None and dim.kind == "float":
        raise ValueError(f"{dim.name} is continuous: the grid needs a step or choices")
    step = dist.step or 1
    if dim.kind == "int":
        return (int(dist.high) - int(dist.low)) // int(step) + 1
    return math.floor((dist.high - dist.low) / step + 1e-9) + 1


def grid_values(dim: SearchDim) -> list[Any]:
    """The values of a discrete dimension on the grid, low to high (choices in their order)."""
    dist = dim.dist
    if isinstance(dist, Choices):
        return list(dist.choices)
    count = grid_count(dim)
    if dim.kind == "int":
        return [int(dist.low) + i * int(dist.step or 1) for i in range(count)]
    assert dist.step is not None  # grid_count refused a continuous range
    return [round(dist.low + i * dist.step, 12) for i in range(count)]


def grid_size(spec: Searched) -> int:
    """Distinct configurations of a grid over the spec: a family's parameters vary only with it.

    Each family contributes the product of its own searched parameters' counts, times the
    product of the searched model/training parameters' counts (shared by every family).
    """
    shared = math.prod(grid_count(d) for d in spec.search_space() if is_shared_dim(d))
    per_family = sum(
        math.prod(grid_count(d) for d in activation_dims(key, entry))
        for key, entry in spec.activations.items()
    )
    return shared * per_family


def value_index(values: Sequence[Any], value: Any) -> int:
    """Position of `value` among grid values (1 == 1.0, but True is not 1); ValueError if absent."""
    for i, candidate in enumerate(values):
        if candidate == value and isinstance(candidate, bool) == isinstance(value, bool):
            return i
    raise ValueError(f"{value!r} is not on the grid")
