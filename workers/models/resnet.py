"""ResNet-18 and pre-activation ResNet-18/34 for 32×32 inputs (3×3 stem, no max-pool)."""

from __future__ import annotations

from torch import Tensor, nn

from workers.models.common import ActFactory, conv_bn, scaled

STAGE_WIDTHS = (64, 128, 256, 512)


class BasicBlock(nn.Module):
    """conv-BN-act-conv-BN, plus shortcut, then act (He et al., 2016)."""

    def __init__(self, c_in: int, c_out: int, stride: int, act_factory: ActFactory) -> None:
        super().__init__()
        self.conv1, self.bn1 = conv_bn(c_in, c_out, stride)
        self.act1 = act_factory(c_out)
        self.conv2, self.bn2 = conv_bn(c_out, c_out)
        # Zero-initialised last BN scale: each block starts as (activated) identity, which
        # trains faster and better at large batch (Goyal et al., 2017).
        nn.init.zeros_(self.bn2.weight)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(*conv_bn(c_in, c_out, stride, kernel=1))
        self.act2 = act_factory(c_out)

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class PreActBlock(nn.Module):
    """BN-act-conv-BN-act-conv with an identity path (He et al., 2016, "identity mappings")."""

    def __init__(self, c_in: int, c_out: int, stride: int, act_factory: ActFactory) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.act1 = act_factory(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.act2 = act_factory(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(x))
        # The projection sees the activated input, as in the paper's full pre-activation unit.
        identity = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(self.act2(self.bn2(out)))
        return out + identity


class ResNet(nn.Module):
    """CIFAR ResNet: 3×3 stem, four stages (strides 1, 2, 2, 2), global average pool, linear."""

    def __init__(
        self,
        blocks: tuple[int, int, int, int],
        num_classes: int,
        act_factory: ActFactory,
        width: float = 1.0,
        preact: bool = False,
    ) -> None:
        super().__init__()
        widths = [scaled(c, width) for c in STAGE_WIDTHS]
        self.preact = preact
        self.stem = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        self.stem_bn: nn.Module = nn.Identity() if preact else nn.BatchNorm2d(widths[0])
        self.stem_act: nn.Module = nn.Identity() if preact else act_factory(widths[0])
        block = PreActBlock if preact else BasicBlock
        stages: list[nn.Module] = []
        c_in = widths[0]
        for i, (count, c_out) in enumerate(zip(blocks, widths, strict=True)):
            layers = []
            for j in range(count):
                stride = 2 if i > 0 and j == 0 else 1
                layers.append(block(c_in, c_out, stride, act_factory))
                c_in = c_out
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        # Pre-activation nets end with BN-act before pooling (their blocks end in a raw sum).
        self.final_bn: nn.Module = nn.BatchNorm2d(c_in) if preact else nn.Identity()
        self.final_act: nn.Module = act_factory(c_in) if preact else nn.Identity()
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem_act(self.stem_bn(self.stem(x)))
        x = self.final_act(self.final_bn(self.stages(x)))
        return self.head(x.mean(dim=(2, 3)))


def resnet18(num_classes: int, act_factory: ActFactory, width: float = 1.0) -> nn.Module:
    """ResNet-18, CIFAR variant."""
    return ResNet((2, 2, 2, 2), num_classes, act_factory, width)


def preact_resnet18(num_classes: int, act_factory: ActFactory, width: float = 1.0) -> nn.Module:
    """Pre-activation ResNet-18."""
    return ResNet((2, 2, 2, 2), num_classes, act_factory, width, preact=True)


def preact_resnet34(num_classes: int, act_factory: ActFactory, width: float = 1.0) -> nn.Module:
    """Pre-activation ResNet-34."""
    return ResNet((3, 4, 6, 3), num_classes, act_factory, width, preact=True)
