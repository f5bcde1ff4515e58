"""Fast screening network after Keller Jordan's airbench94 (github.com/KellerJordan/cifar10-airbench).

A frozen 2×2 patch-whitening conv (initialised from training images), three conv groups of widths
64/256/256 (conv, max-pool, BN, act, conv, BN, act), a 3×3 max-pool and a scaled linear head.
Every activation site goes through the activation factory. BatchNorm scales are frozen and the
convs are identity-initialised, as in airbench; the trainer calls ``init_from_data`` once with
normalised training images before the first step.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from workers.models.common import ActFactory, scaled

WHITEN_KERNEL = 2
WHITEN_WIDTH = 2 * 3 * WHITEN_KERNEL**2  # each eigen-patch and its negation
GROUP_WIDTHS = (64, 256, 256)
LOGIT_SCALE = 1 / 9
WHITEN_BIAS_EPOCHS = 3  # the whitening bias trains for the first epochs only, as in airbench


class ProxyBatchNorm(nn.BatchNorm2d):
    """BatchNorm with a frozen scale and fast-moving running statistics (airbench)."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, eps=1e-12, momentum=0.4)
        self.weight.requires_grad_(False)


class DiracConv(nn.Conv2d):
    """3×3 "same" conv whose first filters start as identities (an implicit residual)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(c_in, c_out, 3, padding="same", bias=False)

    def reset_parameters(self) -> None:
        """Default init, then identity filters for the first min(c_in, c_out) outputs."""
        super().reset_parameters()
        weight = self.weight.data
        nn.init.dirac_(weight[: min(weight.size(0), weight.size(1))])


class ConvGroup(nn.Module):
    """conv → max-pool → BN → act → conv → BN → act."""

    def __init__(self, c_in: int, c_out: int, act_factory: ActFactory) -> None:
        super().__init__()
        self.conv1 = DiracConv(c_in, c_out)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = ProxyBatchNorm(c_out)
        self.act1 = act_factory(c_out)
        self.conv2 = DiracConv(c_out, c_out)
        self.norm2 = ProxyBatchNorm(c_out)
        self.act2 = act_factory(c_out)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act1(self.norm1(self.pool(self.conv1(x))))
        return self.act2(self.norm2(self.conv2(x)))


class ProxyNet(nn.Module):
    """airbench94-class network with pluggable activations."""

    def __init__(self, num_classes: int, act_factory: ActFactory, width: float = 1.0) -> None:
        super().__init__()
        widths = [scaled(c, width, divisor=8, minimum=8) for c in GROUP_WIDTHS]
        self.whiten = nn.Conv2d(3, WHITEN_WIDTH, WHITEN_KERNEL, padding=0, bias=False)
        self.whiten.weight.requires_grad_(False)
        self.whiten_bias = nn.Parameter(torch.zeros(WHITEN_WIDTH))
        self.whiten_act = act_factory(WHITEN_WIDTH)
        self.group1 = ConvGroup(WHITEN_WIDTH, widths[0], act_factory)
        self.group2 = ConvGroup(widths[0], widths[1], act_factory)
        self.group3 = ConvGroup(widths[1], widths[2], act_factory)
        self.pool = nn.MaxPool2d(3)
        self.head = nn.Linear(widths[2], num_classes, bias=False)

    @torch.no_grad()
    def init_from_data(self, images: Tensor, eps: float = 5e-4) -> None:
        """Set the whitening filters from the covariance of 2×2 patches of normalised images."""
        c, (h, w) = images.shape[1], self.whiten.weight.shape[2:]
        patches = images.float().unfold(2, h, 1).unfold(3, w, 1)
        patches = patches.transpose(1, 3).reshape(-1, c * h * w)
        covariance = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        # Largest eigenvalues first; each filter projects onto one eigenvector, unit variance.
        filters = eigenvectors.T.flip(0).reshape(-1, c, h, w)
        filters = filters / torch.sqrt(eigenvalues.flip(0).view(-1, 1, 1, 1) + eps)
        self.whiten.weight.copy_(torch.cat((filters, -filters)).to(self.whiten.weight))

    def set_epoch(self, epoch: int) -> None:
        """Called by the trainer before each epoch: freeze the whitening bias after a while."""
        self.whiten_bias.requires_grad_(epoch < WHITEN_BIAS_EPOCHS)

    def forward(self, x: Tensor) -> Tensor:
        x = self.whiten_act(self.whiten(x) + self.whiten_bias.to(x.dtype).view(1, -1, 1, 1))
        x = self.group3(self.group2(self.group1(x)))
        return self.head(self.pool(x).flatten(1)) * LOGIT_SCALE


def proxy(num_classes: int, act_factory: ActFactory, width: float = 1.0) -> nn.Module:
    """The fast screening network."""
    return ProxyNet(num_classes, act_factory, width)
