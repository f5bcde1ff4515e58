"""Maxout (Goodfellow et al., arXiv 1302.4389) as a group max over k pieces: MLP head only."""

from __future__ import annotations

from torch import Tensor

from .base import ActivationModule, ParamValues


class Maxout(ActivationModule):
    """y_c = max_j x_{k·c + j}: maps k·C features to C (widen the layer before it by k)."""

    family = "maxout"

    def setup(self, params: ParamValues | None) -> None:
        self.width_factor = int(self.options["k"])

    def forward(self, x: Tensor) -> Tensor:
        k = self.width_factor
        if x.shape[1] != k * self.channels:
            raise ValueError(
                f"maxout(k={k}) built for {self.channels} outputs expects {k * self.channels} "
                f"input features on dim 1, got {x.shape[1]}: widen the preceding layer by "
                "factory.width_factor"
            )
        grouped = x.reshape(x.shape[0], self.channels, k, *x.shape[2:])
        return grouped.amax(dim=2)
