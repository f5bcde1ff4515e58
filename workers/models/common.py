"""Pieces shared by the model builders."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

ActFactory = Callable[[int], nn.Module]


def scaled(channels: int, width: float, divisor: int = 1, minimum: int = 4) -> int:
    """A channel count scaled by width, rounded to a multiple of divisor, at least minimum."""
    value = max(minimum, round(channels * width / divisor) * divisor)
    return max(value, divisor)


class ChannelAct(nn.Module):
    """Runs an activation on N×C features as if they were N×C×1×1 maps.

    Activation families are written for conv feature maps (per-channel parameters broadcast
    over N×C×H×W); this lets the same modules serve fully connected layers too.
    """

    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        self.act = act

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 2:
            return self.act(x[:, :, None, None]).flatten(1)
        return self.act(x)


def conv_bn(
    c_in: int, c_out: int, stride: int = 1, kernel: int = 3
) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    """A bias-free conv (padding keeps size at stride 1) followed by BatchNorm."""
    conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False)
    return conv, nn.BatchNorm2d(c_out)
