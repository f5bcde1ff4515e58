"""Recommended training settings per model: overrides of the contract's training defaults.

A recipe names only the options it changes; `recipe(model)` is the whole "training" mapping with
every other option at its contract default (search_space.contract.TrainingConfig), checked when
this module is imported. It is what `actsearch train` and the bench train with. A study spec
whose model is one of SPEC_RECIPE_MODELS takes that recipe's value for every training field it
leaves out (search_space.spec); other models keep the contract's generic defaults. Torch-free.
"""

from __future__ import annotations

import copy
from typing import Any

from search_space.contract import TrainingConfig
from search_space.contract.fields import ConfigModel, knob_of

__all__ = [
    "MODEL_RECIPES",
    "PROXY_RECIPE",
    "SPEC_RECIPE_MODELS",
    "STANDARD_RECIPE",
    "recipe",
    "spec_recipe",
]

# The proxy follows airbench94 (github.com/KellerJordan/cifar10-airbench) with its sum-loss
# hyperparameters rescaled to a mean loss over batches of 1024.
PROXY_RECIPE: dict[str, Any] = {
    "epochs": 10,
    "batch_size": 1024,
    "optimizer": "sgd",
    "lr": 1.5,
    "momentum": 0.85,
    "nesterov": True,
    "weight_decay": 1.33e-3,
    "schedule": "linear",
    "warmup_epochs": 2.3,
    "label_smoothing": 0.2,
    "augment": {"crop_padding": 2, "flip": True, "pad_mode": "reflect"},
    "bias_lr_scale": 64.0,
    "lookahead": {"start_epoch": 3, "every": 5, "decay": 0.95, "power": 3.0},
    "eval_batch_size": 2000,
}
# The recipe of every model without its own.
STANDARD_RECIPE: dict[str, Any] = {
    "epochs": 30,
    "batch_size": 512,
    "optimizer": "sgd",
    "lr": 0.4,
    "momentum": 0.9,
    "nesterov": True,
    "weight_decay": 5e-4,
    "schedule": "onecycle",
    "warmup_epochs": 3.0,
    "label_smoothing": 0.1,
    "augment": {"crop_padding": 4, "flip": True, "pad_mode": "reflect"},
    "eval_batch_size": 1024,
}
# Models with a recipe of their own.
MODEL_RECIPES: dict[str, dict[str, Any]] = {"proxy": PROXY_RECIPE}
# Models whose recipe is also a study spec's training defaults. STANDARD_RECIPE is not one: the
# spec's generic defaults predate it, and every stored study that leaves a field out relies on
# them.
SPEC_RECIPE_MODELS: tuple[str, ...] = ("proxy",)
# Every recipe is a valid TrainingConfig: a misspelt or out-of-domain key fails at import.
_RESOLVED: dict[str, TrainingConfig] = {
    name: TrainingConfig.model_validate(overrides)
    for name, overrides in {**MODEL_RECIPES, "standard": STANDARD_RECIPE}.items()
}


def recipe(model: str) -> dict[str, Any]:
    """Recommended "training" settings for a model, every option stated (a fresh mapping)."""
    name = model if model in MODEL_RECIPES else "standard"
    return _RESOLVED[name].model_dump(mode="json")


def spec_recipe(model: str) -> dict[str, Any] | None:
    """What a study spec of this model takes for the training fields it leaves out, or None.

    The recipe's own overrides, without the trainer's options a spec does not set
    (augment.pad_mode): the other fields are the spec's generic defaults anyway.
    """
    if model not in SPEC_RECIPE_MODELS:
        return None
    return _spec_fields(copy.deepcopy(MODEL_RECIPES[model]), TrainingConfig)


def _spec_fields(values: dict[str, Any], config: type[ConfigModel]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in values.items():
        info = config.model_fields[name]
        knob = knob_of(info)
        if knob is None or not knob.spec:
            continue
        nested = info.annotation
        if isinstance(value, dict) and isinstance(nested, type) and issubclass(nested, ConfigModel):
            value = _spec_fields(value, nested)
        out[name] = value
    return out
