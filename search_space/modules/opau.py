"""Orthogonal-Padé activation (Biswas et al., arXiv 2106.09693) over six polynomial bases."""

from __future__ import annotations

from . import functional
from .base import ActivationModule, ParamValues
from .functional import Kernel, in_fp32
from .pau import coefficients_or_fit, lift_zeros


class OPAU(ActivationModule):
    """[Σ c_i f_i(x)] / [1 + Σ |d_j|·|f_j(x)|] for an orthogonal basis {f_i}."""

    family = "opau"

    def setup(self, params: ParamValues | None) -> None:
        basis, k, dl = str(self.options["basis"]), int(self.options["k"]), int(self.options["l"])
        c, d = coefficients_or_fit(params, ("c", "d"), "opau", basis, (k, dl))
        if len(c) != k + 1 or len(d) != dl:
            raise ValueError(
                f"OPAU (k={k}, l={dl}) needs {k + 1} numerator and {dl} denominator coefficients, "
                f"got {len(c)} and {len(d)}"
            )
        self._add_vector("c", c, self.trainable["c"])
        self._add_vector("d", lift_zeros(d), self.trainable["d"], first_index=1)

    def make_kernel(self) -> Kernel:
        return in_fp32(functional.opau_kernel(str(self.options["basis"])))
