"""Swish with a trainable β (Ramachandran et al., arXiv 1710.05941)."""

from __future__ import annotations

from . import functional
from .base import ActivationModule
from .functional import Kernel, in_fp32


class Swish(ActivationModule):
    """x·σ(βx); β > 0 stored as log β, exponentiated in fp32 (also after `module.half()`)."""

    family = "swish"

    def make_kernel(self) -> Kernel:
        return in_fp32(functional.swish)
