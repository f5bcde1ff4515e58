"""SMU and SMU-1 (Biswas et al., arXiv 2111.04682): smooth approximations of max(x, αx)."""

from __future__ import annotations

from . import functional
from .base import ActivationModule
from .functional import Kernel, in_fp32


class SMU(ActivationModule):
    """½[(1+α)x + (1−α)·x·erf(μ(1−α)x)]; μ stored as log μ, exponentiated in fp32.

    μ = 1e6 works for fp16 inputs and after `module.half()` (log μ then fp16, μ within 0.4%).
    """

    family = "smu"

    def make_kernel(self) -> Kernel:
        return in_fp32(functional.smu)


class SMU1(ActivationModule):
    """½[(1+α)x + √((1−α)²x² + μ²)]; μ stored as log μ, exponentiated in fp32.

    μ ≈ 4e-9 works for fp16 inputs and after `module.half()` (log μ then fp16, μ within 0.8%).
    """

    family = "smu1"

    def make_kernel(self) -> Kernel:
        return in_fp32(functional.smu1)
