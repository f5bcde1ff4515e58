"""Padé Activation Unit (Molina et al., arXiv 1907.06732): F(x) = P(x)/Q(x)."""

from __future__ import annotations

from collections.abc import Sequence

from search_space.registry import DEFAULT_FIT_INTERVAL, DEFAULT_FIT_TARGET

from . import functional
from .base import ActivationModule, ParamValues
from .functional import Kernel, in_fp32

# |b| has gradient 0 at b = 0 under autograd (torch.abs), so a denominator coefficient that
# starts at exactly 0 would never train. Exact zeros start at this value instead: the gradient
# is then the full sign(b)·∂F/∂|b|, while the curve moves by < 3e-4·|F| on [-3, 3] (worst case
# 3^7·1e-7 for the degree-7 term of a form-A (m, 8) fit). Representable in fp16, too.
DENOMINATOR_FLOOR = 1e-7


def lift_zeros(values: Sequence[float]) -> list[float]:
    """Replace exact zeros by DENOMINATOR_FLOOR so that |·| keeps a gradient."""
    return [DENOMINATOR_FLOOR if float(v) == 0.0 else float(v) for v in values]


def coefficient_pair(
    params: ParamValues | None, names: tuple[str, str]
) -> tuple[list[float], list[float]] | None:
    """Both coefficient vectors from `params`, or None when neither is given."""
    given = dict(params or {})
    present = [name for name in names if name in given]
    if not present:
        return None
    if len(present) == 1:
        raise ValueError(f"give both coefficient vectors {names[0]!r} and {names[1]!r}, or neither")
    first, second = given[names[0]], given[names[1]]
    if not isinstance(first, Sequence) or not isinstance(second, Sequence):
        raise ValueError(f"coefficients {names[0]!r} and {names[1]!r} must be lists of numbers")
    return [float(v) for v in first], [float(v) for v in second]


def coefficients_or_fit(
    params: ParamValues | None,
    names: tuple[str, str],
    family: str,
    variant: str,
    degrees: tuple[int, int],
) -> tuple[list[float], list[float]]:
    """The given coefficient vectors, else the default least-squares fit (PAU and OPAU)."""
    pair = coefficient_pair(params, names)
    if pair is not None:
        return pair
    from search_space.fits import initial_coefficients

    fitted = initial_coefficients(
        family, variant, *degrees, DEFAULT_FIT_TARGET, DEFAULT_FIT_INTERVAL
    )
    return list(fitted[names[0]]), list(fitted[names[1]])


class PAU(ActivationModule):
    """P(x)/Q(x) with numerator a_0..a_m and a safe denominator (forms A, B, C) by default."""

    family = "pau"

    def setup(self, params: ParamValues | None) -> None:
        m, n, form = int(self.options["m"]), int(self.options["n"]), str(self.options["form"])
        a, b = coefficients_or_fit(params, ("a", "b"), "pau", form, (m, n))
        n_b = n + 1 if form == "C" else n
        if len(a) != m + 1 or len(b) != n_b:
            raise ValueError(
                f"PAU form {form} (m={m}, n={n}) needs {m + 1} numerator and {n_b} denominator "
                f"coefficients, got {len(a)} and {len(b)}"
            )
        self._add_vector("a", a, self.trainable["a"])
        self._add_vector(
            "b", lift_zeros(b), self.trainable["b"], first_index=0 if form == "C" else 1
        )

    def make_kernel(self) -> Kernel:
        return in_fp32(functional.PAU_FORMS[str(self.options["form"])])
