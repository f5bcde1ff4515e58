"""FReLU (Ma et al., arXiv 2007.11824): max(x, BN(depthwise 3×3 conv(x)))."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import ActivationModule, ParamValues


class FReLU(ActivationModule):
    """max(x, T(x)) with T a per-channel 3×3 depthwise conv followed by BatchNorm."""

    family = "frelu"
    pointwise = False

    def setup(self, params: ParamValues | None) -> None:
        self.conv = nn.Conv2d(self.channels, self.channels, 3, padding=1, groups=self.channels)
        self.bn = nn.BatchNorm2d(self.channels)

    def forward(self, x: Tensor) -> Tensor:
        # (N, C) inputs (MLP head) are 1×1 maps: only the centre tap applies.
        spatial = x if x.dim() == 4 else x.reshape(x.shape[0], x.shape[1], 1, -1)
        funnel = self.bn(self.conv(spatial.to(self.conv.weight.dtype))).reshape(x.shape)
        # max is exact in any dtype; conv/BN follow autocast like every other layer.
        return torch.maximum(x, funnel.to(x.dtype))

    def parameter_values(self) -> dict[str, list[float]]:
        """The per-channel affine map s·x + t that conv+BN (eval) apply to a constant input."""
        bn = self.bn
        assert bn.running_var is not None and bn.running_mean is not None
        inv = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().double()
        conv_bias = self.conv.bias if self.conv.bias is not None else torch.zeros_like(bn.weight)
        scale = inv * self.conv.weight.detach().double().sum(dim=(1, 2, 3))
        shift = (
            inv * (conv_bias.detach().double() - bn.running_mean.double())
            + bn.bias.detach().double()
        )
        return {"scale": scale.cpu().tolist(), "shift": shift.cpu().tolist()}
