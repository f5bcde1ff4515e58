"""Families without trainable parameters (plus PReLU), built on PyTorch's own kernels."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from . import functional
from .base import ActivationModule
from .functional import Kernel, in_fp32, run_fp32


class ReLU(ActivationModule):
    """max(0, x); exact in any dtype, so no upcast."""

    family = "relu"

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x)


class ReLU6(ActivationModule):
    """min(max(0, x), 6); exact in any dtype."""

    family = "relu6"

    def forward(self, x: Tensor) -> Tensor:
        return F.relu6(x)


class LeakyReLU(ActivationModule):
    """x if x ≥ 0 else s·x."""

    family = "leaky_relu"

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x, self.initial["negative_slope"])


class PReLU(ActivationModule):
    """x if x ≥ 0 else a·x with a trainable (shared / per-layer / per-channel)."""

    family = "prelu"

    def make_kernel(self) -> Kernel:
        return in_fp32(functional.prelu)


class RReLU(ActivationModule):
    """Random slope U(l, u) per negative element in training, (l + u)/2 in eval."""

    family = "rrelu"

    def forward(self, x: Tensor) -> Tensor:
        lower, upper = sorted((self.initial["lower"], self.initial["upper"]))
        return _fp32(x, lambda v: F.rrelu(v, lower, upper, training=self.training))


class ELU(ActivationModule):
    """x if x > 0 else α(eˣ − 1)."""

    family = "elu"

    def forward(self, x: Tensor) -> Tensor:
        return _fp32(x, lambda v: F.elu(v, self.initial["alpha"]))


class SELU(ActivationModule):
    """λ·ELU(x; α) with the self-normalising constants."""

    family = "selu"

    def forward(self, x: Tensor) -> Tensor:
        return _fp32(x, F.selu)


class CELU(ActivationModule):
    """max(0, x) + min(0, α(e^(x/α) − 1))."""

    family = "celu"

    def forward(self, x: Tensor) -> Tensor:
        return _fp32(x, lambda v: F.celu(v, self.initial["alpha"]))


class Softplus(ActivationModule):
    """(1/β)·log(1 + e^(βx)), computed as logaddexp(βx, 0)/β: exact, no linear cut-off."""

    family = "softplus"

    def forward(self, x: Tensor) -> Tensor:
        beta = self.initial["beta"]
        return _fp32(x, lambda v: torch.logaddexp(beta * v, torch.zeros_like(v)) / beta)


class Sigmoid(ActivationModule):
    """1/(1 + e^(−x))."""

    family = "sigmoid"

    def forward(self, x: Tensor) -> Tensor:
        return _fp32(x, torch.sigmoid)


class Tanh(ActivationModule):
    """tanh(x)."""

    family = "tanh"

    def forward(self, x: Tensor) -> Tensor:
        return _fp32(x, torch.tanh)


class HSigmoid(ActivationModule):
    """ReLU6(x + 3)/6."""

    family = "hsigmoid"

    def forward(self, x: Tensor) -> Tensor:
        return _fp32(x, lambda v: F.relu6(v + 3) / 6)


class HSwish(ActivationModule):
    """x·ReLU6(x + 3)/6."""

    family = "hswish"

    def forward(self, x: Tensor) -> Tensor:
        return _fp32(x, lambda v: v * F.relu6(v + 3) / 6)


class GELU(ActivationModule):
    """x·Φ(x), or its tanh approximation (option `approximate`)."""

    family = "gelu"

    def forward(self, x: Tensor) -> Tensor:
        approximate = str(self.options["approximate"])
        return _fp32(x, lambda v: F.gelu(v, approximate=approximate))


class Mish(ActivationModule):
    """x·tanh(softplus(x))."""

    family = "mish"

    def forward(self, x: Tensor) -> Tensor:
        return _fp32(x, F.mish)


def _fp32(x: Tensor, op: Kernel) -> Tensor:
    return run_fp32(op, x)
