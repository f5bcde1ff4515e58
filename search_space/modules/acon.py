"""ACON-C and Meta-ACON (Ma et al., arXiv 2009.04759)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from . import functional
from .base import ActivationModule, ParamValues
from .functional import Kernel, in_fp32


class AconC(ActivationModule):
    """(p1−p2)·x·σ(β(p1−p2)x) + p2·x with p1, p2, β trainable (per channel by default)."""

    family = "acon_c"

    def make_kernel(self) -> Kernel:
        return in_fp32(functional.acon_c)


class MetaAcon(ActivationModule):
    """ACON-C whose β is generated per sample: σ(conv1×1(conv1×1(mean_hw(x))))."""

    family = "meta_acon"
    pointwise = False
    channel_separable = False

    def setup(self, params: ParamValues | None) -> None:
        r = int(self.options["r"])
        hidden = max(r, self.channels // r)
        self.fc1 = nn.Conv2d(self.channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, self.channels, 1)

    def make_kernel(self) -> Kernel:
        return in_fp32(functional.acon_c)

    def beta(self, x: Tensor) -> Tensor:
        """β per sample and channel, shaped to broadcast against x."""
        context = x.mean(dim=tuple(range(2, x.dim())), keepdim=True) if x.dim() > 2 else x
        n, c = x.shape[0], x.shape[1]
        hidden = self.fc1(context.reshape(n, c, 1, 1).to(self.fc1.weight.dtype))
        logits = self.fc2(hidden)
        # σ in fp32 even when the 1×1 convs ran in half precision under autocast.
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        return torch.sigmoid(logits).reshape(n, c, *([1] * (x.dim() - 2)))

    def kernel_args(self, x: Tensor) -> list[Tensor]:
        return [self.broadcast("p1", x), self.broadcast("p2", x), self.beta(x)]
