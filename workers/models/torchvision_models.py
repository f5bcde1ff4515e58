"""torchvision's MobileNetV2, ShuffleNetV2 and EfficientNet-B0, adapted to 32×32 inputs.

Adaptation: the stride-2 stem becomes stride 1 (and ShuffleNet's max-pool is dropped, MobileNetV2's
second stage keeps stride 1, as in common CIFAR ports), so feature maps end at 4×4 or 2×2 rather
than 1×1. Every activation module is then replaced by one from the activation factory, sized to
the channel count of the layer before it. EfficientNet's squeeze-and-excitation blocks keep their
sigmoid: it is a gate that scales channels, not an activation site; their inner SiLU is replaced.
"""

from __future__ import annotations

from functools import partial

from torch import nn
from torchvision.models import MobileNetV2, ShuffleNetV2
from torchvision.models.efficientnet import EfficientNet, MBConvConfig
from torchvision.ops.misc import SqueezeExcitation

from workers.models.common import ActFactory, scaled

# Modules torchvision uses as activation sites; all of them are replaced.
TORCHVISION_ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish, nn.GELU, nn.ELU, nn.LeakyReLU, nn.Mish,
    nn.SELU, nn.CELU, nn.PReLU, nn.Softplus,
)  # fmt: skip
SHUFFLENET_CHANNELS = (24, 116, 232, 464, 1024)


def replace_activations(module: nn.Module, act_factory: ActFactory) -> int:
    """Replace every torchvision activation module in place; returns how many were replaced."""
    count, _ = _replace(module, act_factory, channels=None)
    return count


def _replace(
    module: nn.Module, act_factory: ActFactory, channels: int | None
) -> tuple[int, int | None]:
    # Walks children in registration order, which is forward order in these models, remembering
    # the channel count of the last conv / BN / linear seen: that is the activation's width.
    count = 0
    for name, child in list(module.named_children()):
        if isinstance(child, SqueezeExcitation):
            # Registered fc1, fc2, activation, but run fc1 → activation → fc2.
            child.activation = act_factory(child.fc1.out_channels)
            count += 1
        elif isinstance(child, TORCHVISION_ACTIVATIONS):
            if channels is None:
                raise ValueError(f"cannot tell the width of activation {name!r}")
            setattr(module, name, act_factory(channels))
            count += 1
        elif isinstance(child, nn.Conv2d):
            channels = child.out_channels
        elif isinstance(child, nn.BatchNorm2d):
            channels = child.num_features
        elif isinstance(child, nn.Linear):
            channels = child.out_features
        else:
            inner, channels = _replace(child, act_factory, channels)
            count += inner
    return count, channels


def _stride_one(conv: nn.Module) -> None:
    assert isinstance(conv, nn.Conv2d)
    conv.stride = (1, 1)


def mobilenet_v2(num_classes: int, act_factory: ActFactory, width: float = 1.0) -> nn.Module:
    """MobileNetV2 with a stride-1 stem and a stride-1 second stage."""
    model = MobileNetV2(num_classes=num_classes, width_mult=width)
    _stride_one(model.features[0][0])
    _stride_one(model.features[2].conv[1][0])  # depthwise conv of the first 24-channel block
    replace_activations(model, act_factory)
    return model


def shufflenet_v2(num_classes: int, act_factory: ActFactory, width: float = 1.0) -> nn.Module:
    """ShuffleNetV2 1.0× (widths scaled) with a stride-1 stem and no stem max-pool."""
    channels = [scaled(c, width, divisor=4, minimum=8) for c in SHUFFLENET_CHANNELS]
    model = ShuffleNetV2([4, 8, 4], channels, num_classes=num_classes)
    _stride_one(model.conv1[0])
    model.maxpool = nn.Identity()
    replace_activations(model, act_factory)
    return model


def efficientnet_b0(num_classes: int, act_factory: ActFactory, width: float = 1.0) -> nn.Module:
    """EfficientNet-B0 (widths scaled) with a stride-1 stem."""
    block = partial(MBConvConfig, width_mult=width, depth_mult=1.0)
    setting = [
        block(1, 3, 1, 32, 16, 1),
        block(6, 3, 2, 16, 24, 2),
        block(6, 5, 2, 24, 40, 2),
        block(6, 3, 2, 40, 80, 3),
        block(6, 5, 1, 80, 112, 3),
        block(6, 5, 2, 112, 192, 4),
        block(6, 3, 1, 192, 320, 1),
    ]
    model = EfficientNet(setting, dropout=0.2, num_classes=num_classes)
    _stride_one(model.features[0][0])
    replace_activations(model, act_factory)
    return model
