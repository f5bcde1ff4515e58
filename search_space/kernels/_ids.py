"""The numbers the kernels' FAMILY and OPT arguments take, named once.

`_triton_math` turns these into the `tl.constexpr`s the kernels compare against; the launch
side (`OpSpec`, `module_kernel`) passes them. Plain Python: importing this module imports
neither torch nor triton.
"""

from __future__ import annotations

from enum import IntEnum


class Op(IntEnum):
    """Which activation a kernel computes (the FAMILY argument)."""

    SMU = 0
    SMU1 = 1
    SWISH = 2
    PAU = 3
    OPAU = 4


class PauForm(IntEnum):
    """PAU denominator form (the OPT argument of Op.PAU); the unsafe form has no kernel."""

    A = 0
    B = 1
    C = 2


class OpauBasis(IntEnum):
    """OPAU's orthogonal polynomial basis (the OPT argument of Op.OPAU)."""

    CHEBYSHEV_T = 0
    CHEBYSHEV_U = 1
    HERMITE_H = 2
    HERMITE_HE = 3
    LAGUERRE = 4
    LEGENDRE = 5


# By the registry's names (search_space.families): family, PAU form, OPAU basis.
FAMILY_IDS: dict[str, Op] = {op.name.lower(): op for op in Op}
PAU_FORMS: dict[str, PauForm] = {form.name: form for form in PauForm}
OPAU_BASES: dict[str, OpauBasis] = {basis.name.lower(): basis for basis in OpauBasis}
# Highest numerator / denominator degree the kernels support (registers per thread).
MAX_DEGREE = 8
# Parameters of the scalar families, one table row each, in the modules' order.
SCALAR_WIDTHS: dict[Op, tuple[int, ...]] = {Op.SMU: (1, 1), Op.SMU1: (1, 1), Op.SWISH: (1,)}
