"""The activation sites of a model: made through the registry, recorded, read back.

A model builder calls the activation factory once per site; `SiteRecorder` remembers each, so
the trainer can keep activation parameters out of weight decay and record their learned values
and curves.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import numpy as np
from torch import nn

from search_space.contract import ActivationConfig
from workers.models import ActFactory

CURVE_GRID = np.linspace(-4.0, 4.0, 81)


class SiteRecorder:
    """Wraps an activation factory and remembers every module it made (the activation sites)."""

    def __init__(self, factory: ActFactory) -> None:
        self.factory = factory
        self.sites: list[tuple[nn.Module, int]] = []

    def __call__(self, channels: int) -> nn.Module:
        module = self.factory(channels)
        self.sites.append((module, channels))
        return module

    def parameter_ids(self) -> set[int]:
        """ids of all parameters owned by activation modules."""
        return {id(p) for module, _ in self.sites for p in module.parameters()}

    @property
    def head_only(self) -> bool:
        """Whether the wrapped factory makes head-only modules (Maxout)."""
        return bool(getattr(self.factory, "head_only", False))

    @property
    def width_factor(self) -> int:
        """Inputs per output of the wrapped factory's modules (Maxout: k)."""
        return int(getattr(self.factory, "width_factor", 1))


def make_act_factory(activation_cfg: ActivationConfig | Mapping[str, Any]) -> ActFactory:
    """The activation factory for a trial's activation (search_space.build)."""
    # Imported here so that `import workers.train` stays light (the registry loads lazily).
    from search_space.build import ActivationFactory

    return ActivationFactory(activation_cfg)


def activation_parameters(model: nn.Module) -> dict[str, Any]:
    """Learned activation parameters per site (constrained values, as the registry shows them)."""
    from search_space.build import activation_parameters as parameters

    return dict(parameters(model))


def activation_curves(model: nn.Module) -> dict[str, Any]:
    """f and f' of every activation site on CURVE_GRID, computed on CPU copies of the sites."""
    from search_space.build import activation_sites
    from search_space.curves import activation_curves as curves

    # Copies keep the curve sampling off the training device and away from the live modules.
    tree = nn.Module()
    for name, module in activation_sites(model).items():
        _attach(tree, name, copy.deepcopy(module).cpu())
    return dict(curves(tree, CURVE_GRID))


def _attach(root: nn.Module, dotted: str, module: nn.Module) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        if not hasattr(root, part):
            root.add_module(part, nn.Module())
        root = getattr(root, part)
    root.add_module(leaf, module)
