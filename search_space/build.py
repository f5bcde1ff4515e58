"""Build activation modules for model builders: one factory per model, one call per site.

The config is the contract's ActivationConfig (search_space.contract), re-exported here.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from torch import nn

from search_space.contract import ActivationConfig
from search_space.registry import DEFAULT_FIT_INTERVAL, DEFAULT_FIT_TARGET, Family, Scope

from .modules.base import ActivationModule

__all__ = [
    "ActivationConfig",
    "ActivationFactory",
    "activation_parameters",
    "activation_sites",
    "build_activation",
    "module_class",
    "no_weight_decay_parameters",
]


def module_class(family: Family) -> type[ActivationModule]:
    """Import the module class named by a family's module_path."""
    module_name, _, class_name = family.module_path.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    assert issubclass(cls, ActivationModule)
    return cls


class ActivationFactory:
    """`factory(channels)` builds the activation for one site; make one factory per model.

    Scope `shared` hands every site the same Parameter objects (one set per network; PyTorch's
    `model.parameters()` yields them once), `per_layer` one set per site, `per_channel` one
    value per channel. Families without trainable parameters ignore scope.
    """

    def __init__(self, config: ActivationConfig | Mapping[str, Any]) -> None:
        self.config = (
            config
            if isinstance(config, ActivationConfig)
            else ActivationConfig.model_validate(config)
        )
        resolved = self.config.resolved  # the family was resolved once, when validated
        self.family, self.params = resolved.family, resolved.params
        self.options, self.trainable = resolved.options, resolved.trainable
        self.scope: Scope = resolved.scope
        self.cls = module_class(self.family)
        self.coefficients = self._initial_coefficients()
        self._shared: ActivationModule | None = None

    @property
    def head_only(self) -> bool:
        """True for Maxout: use it at MLP-head sites only."""
        return self.family.head_only

    @property
    def width_factor(self) -> int:
        """How many inputs per output the module consumes (Maxout: k; others 1)."""
        return int(self.options.get("k", 1)) if self.family.head_only else 1

    def _initial_coefficients(self) -> dict[str, list[float]]:
        """PAU/OPAU coefficient vectors from the preset or a least-squares fit."""
        if not self.family.coefficients:
            return {}
        preset = self.family.presets.get(self.config.preset or "", {})
        if self.config.init_target is None and all(k in preset for k in self.family.coefficients):
            return {k: list(preset[k]) for k in self.family.coefficients}
        from search_space.fits import initial_coefficients

        if self.family.name == "pau":
            variant, m, n = self.options["form"], self.options["m"], self.options["n"]
        else:
            variant, m, n = self.options["basis"], self.options["k"], self.options["l"]
        fitted = initial_coefficients(
            self.family.name,
            str(variant),
            int(m),
            int(n),
            self.config.init_target or DEFAULT_FIT_TARGET,
            tuple(self.config.init_interval or DEFAULT_FIT_INTERVAL),
        )
        return {k: list(v) for k, v in fitted.items()}

    def __call__(self, channels: int) -> ActivationModule:
        module = self.cls(
            channels,
            params={**self.params, **self.coefficients},
            options=self.options,
            scope=self.scope,
            trainable=self.trainable,
            clamp=self.config.clamp,
            resolved=self.config.resolved,
        )
        if self.scope == "shared" and self.family.learnable:
            if self._shared is None:
                self._shared = module
            else:
                module.share_from(self._shared)
        return module


def build_activation(config: ActivationConfig | Mapping[str, Any], channels: int = 1) -> nn.Module:
    """One activation module for a config (a fresh factory: nothing shared with other calls)."""
    return ActivationFactory(config)(channels)


def activation_sites(model: nn.Module) -> dict[str, ActivationModule]:
    """Every activation module in a model by its module name ('root' for the model itself)."""
    return {
        name or "root": module
        for name, module in model.named_modules()
        if isinstance(module, ActivationModule)
    }


def activation_parameters(model: nn.Module) -> dict[str, dict[str, list[float]]]:
    """Constrained (user-facing) activation parameter values per site: site → name → values."""
    return {name: module.parameter_values() for name, module in activation_sites(model).items()}


def no_weight_decay_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The activations' own trainable parameters, once each: keep them out of weight decay."""
    seen: dict[int, nn.Parameter] = {}
    for module in activation_sites(model).values():
        for p in module.trainable_tensors():
            seen.setdefault(id(p), p)
    return list(seen.values())
