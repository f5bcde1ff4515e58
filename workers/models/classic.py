"""LeNet-5 and VGG-11/16 (with BatchNorm) for 32×32 inputs."""

from __future__ import annotations

from torch import Tensor, nn

from workers.models.common import ActFactory, ChannelAct, conv_bn, scaled

VGG_LAYOUTS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"],
}  # fmt: skip


class LeNet(nn.Module):
    """LeNet-5: two 5×5 conv-act-pool stages and three fully connected layers."""

    def __init__(self, num_classes: int, act_factory: ActFactory, width: float = 1.0) -> None:
        super().__init__()
        c1, c2 = scaled(6, width), scaled(16, width)
        f1, f2 = scaled(120, width), scaled(84, width)
        # Maxout-style activations take k inputs per output: widen the layer before each site.
        k = int(getattr(act_factory, "width_factor", 1))
        self.features = nn.Sequential(
            nn.Conv2d(3, c1 * k, 5), act_factory(c1), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2 * k, 5), act_factory(c2), nn.MaxPool2d(2),
        )  # fmt: skip
        self.classifier = nn.Sequential(
            nn.Linear(c2 * 5 * 5, f1 * k), ChannelAct(act_factory(f1)),
            nn.Linear(f1, f2 * k), ChannelAct(act_factory(f2)),
            nn.Linear(f2, num_classes),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).flatten(1))


class VGG(nn.Module):
    """VGG with BatchNorm after every conv; five max-pools take 32×32 to 1×1, then one linear."""

    def __init__(
        self, layout: list[int | str], num_classes: int, act_factory: ActFactory, width: float
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for item in layout:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            c_out = scaled(int(item), width)
            layers += [*conv_bn(c_in, c_out), act_factory(c_out)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).flatten(1))


def lenet(num_classes: int, act_factory: ActFactory, width: float = 1.0) -> nn.Module:
    """LeNet-5."""
    return LeNet(num_classes, act_factory, width)


def vgg11(num_classes: int, act_factory: ActFactory, width: float = 1.0) -> nn.Module:
    """VGG-11 with BatchNorm."""
    return VGG(VGG_LAYOUTS["vgg11"], num_classes, act_factory, width)


def vgg16(num_classes: int, act_factory: ActFactory, width: float = 1.0) -> nn.Module:
    """VGG-16 with BatchNorm."""
    return VGG(VGG_LAYOUTS["vgg16"], num_classes, act_factory, width)
