"""CIFAR models (32×32 inputs) whose every activation site is built by an activation factory."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from workers.models.classic import lenet, vgg11, vgg16
from workers.models.common import ActFactory, ChannelAct
from workers.models.proxy import ProxyNet, proxy
from workers.models.resnet import preact_resnet18, preact_resnet34, resnet18
from workers.models.torchvision_models import (
    TORCHVISION_ACTIVATIONS,
    efficientnet_b0,
    mobilenet_v2,
    shufflenet_v2,
)

ModelBuilder = Callable[[int, ActFactory, float], nn.Module]

MODELS: dict[str, ModelBuilder] = {
    "resnet18": resnet18,
    "preact_resnet18": preact_resnet18,
    "preact_resnet34": preact_resnet34,
    "mobilenet_v2": mobilenet_v2,
    "shufflenet_v2": shufflenet_v2,
    "efficientnet_b0": efficientnet_b0,
    "lenet": lenet,
    "vgg11": vgg11,
    "vgg16": vgg16,
    "proxy": proxy,
}
MODEL_NAMES: tuple[str, ...] = tuple(MODELS)
# Models that widen the layer before each site by the factory's width_factor (Maxout's k).
WIDENING_MODELS = ("lenet",)

__all__ = [
    "MODEL_NAMES",
    "TORCHVISION_ACTIVATIONS",
    "ActFactory",
    "ChannelAct",
    "ProxyNet",
    "build_model",
]


def build_model(
    name: str, num_classes: int, act_factory: ActFactory, width: float = 1.0
) -> nn.Module:
    """Build a model by name; act_factory(channels) makes every activation module."""
    key = name.lower()
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(MODEL_NAMES)}")
    if not width > 0:
        raise ValueError(f"model width must be positive, not {width}")
    if getattr(act_factory, "head_only", False) and key not in WIDENING_MODELS:
        raise ValueError(
            f"this activation needs every layer before it widened (Maxout); models that do "
            f"this: {', '.join(WIDENING_MODELS)}"
        )
    return MODELS[key](num_classes, act_factory, width)
