"""Fused Triton kernels (forward and backward) for the learnable activation families.

The functional API takes the *constrained* parameter values as plain tensors (e.g. SMU's mu
already > 0); autograd chains through any parametrisation the caller applies outside. The
PyTorch modules in `search_space.modules` stay the reference and the CPU path; they call these
functions when `available(x)` is true. See README.md beside this file for the exact shapes.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from search_space.kernels._ids import (
    FAMILY_IDS,
    MAX_DEGREE,
    OPAU_BASES,
    PAU_FORMS,
    SCALAR_WIDTHS,
    Op,
    PauForm,
)
from search_space.kernels._ops import fused_apply
from search_space.kernels._plan import BWD_VARIANTS, OpSpec, backward_variant

__all__ = [
    "BWD_VARIANTS",
    "MAX_DEGREE",
    "OPAU_BASES",
    "PAU_FORMS",
    "FusedKernel",
    "Kernel",
    "available",
    "backward_variant",
    "module_kernel",
    "opau",
    "pau",
    "smu",
    "swish",
]

Kernel = Callable[..., torch.Tensor]

_SMU_VARIANTS = {"smu": Op.SMU, "smu1": Op.SMU1, "smu-1": Op.SMU1, "smu_1": Op.SMU1}


_FUSED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_OFF = ("0", "false", "no", "off")
_TRITON_IMPORTABLE: list[bool] = []  # found once: the answer cannot change within a process


def _triton_importable() -> bool:
    if not _TRITON_IMPORTABLE:
        _TRITON_IMPORTABLE.append(importlib.util.find_spec("triton") is not None)
    return _TRITON_IMPORTABLE[0]


def interpreting() -> bool:
    """True when Triton's CPU interpreter is on (TRITON_INTERPRET=1, set before import)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def available(x: torch.Tensor) -> bool:
    """Whether the fused kernels can run on x: CUDA tensor, triton importable, ACTSEARCH_FUSED != 0.

    Under Triton's interpreter (TRITON_INTERPRET=1) CPU tensors qualify too, so tests can run
    the kernels through the modules on the CPU.
    """
    # cheapest checks first: this runs on every forward of every activation module
    if x.dtype not in _FUSED_DTYPES:
        return False
    if not (x.is_cuda or (x.device.type == "cpu" and interpreting())):
        return False
    if os.environ.get("ACTSEARCH_FUSED", "1").strip().lower() in _OFF:
        return False
    return _triton_importable()


def smu(
    x: torch.Tensor, alpha: torch.Tensor, mu: torch.Tensor, variant: str = "smu"
) -> torch.Tensor:
    """SMU (variant "smu") or SMU-1 ("smu1"); alpha, mu: shape (1,) or (C,), mu > 0."""
    try:
        family = _SMU_VARIANTS[variant.lower()]
    except KeyError:
        raise ValueError(f"unknown SMU variant {variant!r}: use 'smu' or 'smu1'") from None
    return fused_apply(x, _SCALAR_SPECS[family], alpha, mu)


def swish(x: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Swish x * sigmoid(beta * x); beta: shape (1,) or (C,)."""
    return fused_apply(x, _SCALAR_SPECS[Op.SWISH], beta)


def pau(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, form: str = "A") -> torch.Tensor:
    """Padé unit P(x)/Q(x); a: (m+1,) or (C, m+1); b: (n,) or (C, n) for forms A/B, n+1 for C."""
    key = form.upper()
    if key not in PAU_FORMS:
        raise ValueError(f"unknown PAU form {form!r}: use one of {sorted(PAU_FORMS)}")
    m = a.shape[-1] - 1
    n = b.shape[-1] - 1 if key == "C" else b.shape[-1]
    _check_degrees("PAU", m, n, minimum_n=0 if key == "C" else 1)
    spec = OpSpec(Op.PAU, PAU_FORMS[key], m, n, (m + 1, b.shape[-1]))
    return fused_apply(x, spec, _param_major(a), _param_major(b))


def opau(
    x: torch.Tensor, c: torch.Tensor, d: torch.Tensor, basis: str = "hermite_h"
) -> torch.Tensor:
    """Orthogonal-Padé [sum_i c_i f_i] / [1 + sum_j |d_j||f_j|]; c: (k+1,) or (C, k+1); d: (l,) or (C, l)."""
    key = basis.lower()
    if key not in OPAU_BASES:
        raise ValueError(f"unknown OPAU basis {basis!r}: use one of {sorted(OPAU_BASES)}")
    k = c.shape[-1] - 1
    l = d.shape[-1]  # noqa: E741
    _check_degrees("OPAU", k, l, minimum_n=0)
    spec = OpSpec(Op.OPAU, OPAU_BASES[key], k, l, (k + 1, l))
    return fused_apply(x, spec, _param_major(c), _param_major(d))


def _param_major(p: torch.Tensor) -> torch.Tensor:
    """(C, K) per-channel coefficients as the (K, C) view the table is built from; (K,) as is."""
    return p.t() if p.dim() == 2 else p


def _scalar_spec(op: Op, positive: int = 0, bounds: tuple[float, float] = (0.0, 0.0)) -> OpSpec:
    """SMU, SMU-1 (alpha, mu) and Swish (beta): one table row per parameter, stacked."""
    return OpSpec(
        op, 0, 0, 0, SCALAR_WIDTHS[op], stacked=True, positive=positive, log_bounds=bounds
    )


_SCALAR_SPECS = {op: _scalar_spec(op) for op in SCALAR_WIDTHS}  # made once: host time per call


def _degrees_supported(m: int, n: int, minimum_n: int) -> bool:
    return 0 <= m <= MAX_DEGREE and minimum_n <= n <= MAX_DEGREE


def _check_degrees(name: str, m: int, n: int, minimum_n: int) -> None:
    if not _degrees_supported(m, n, minimum_n):
        raise ValueError(
            f"{name} degrees ({m}, {n}) are outside what the fused kernel supports "
            f"(numerator 0..{MAX_DEGREE}, denominator {minimum_n}..{MAX_DEGREE}); "
            "use the PyTorch module path for these"
        )


# -- adapter for search_space.modules -------------------------------------------------------------


@dataclass(frozen=True)
class FusedKernel:
    """`(x, *params) -> y` through the fused kernels for one `OpSpec` (what `module_kernel` gives).

    A plain object rather than a closure, so a module holding it still pickles and deep-copies.
    """

    spec: OpSpec

    def __call__(self, x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        return fused_apply(x, self.spec, *params)


def module_kernel(
    family: str,
    options: Mapping[str, str | int],
    *,
    log_scale: Sequence[bool] = (),
    log_bounds: tuple[float, float] = (0.0, 0.0),
) -> FusedKernel | None:
    """A fused replacement for a module's `fn`: (x, *params) -> y, or None when not covered.

    `options`: the family's resolved options (registry defaults filled in, as
    `module.options` holds them): PAU's m, n, form; OPAU's k, l, basis; nothing for the scalar
    families. `params` in the module's order, either broadcast-shaped constrained values (what
    `module.kernel_args(x)` gives: () or (C, 1, 1); coefficients (K,) or (K, C, 1, 1)) or the
    module's stored tensors (() or (C,); (K,) or (K, C)); both are parameter-major, so they go
    into the kernels' table without a view. Where `log_scale[j]` is true, parameter j is
    log(value) and the kernels use exp(clamp(p, *log_bounds)) with its gradient (SMU's mu,
    Swish's beta as the modules store them). None when the fused kernels do not cover the
    family or options (e.g. PAU form "unsafe", degrees above MAX_DEGREE, log-scale PAU/OPAU
    coefficients); the module then keeps its reference function.
    """
    op = FAMILY_IDS.get(family.lower())
    if op is None:
        return None
    positive = sum(1 << j for j, flag in enumerate(log_scale) if flag)
    if op in SCALAR_WIDTHS:
        if positive >> len(SCALAR_WIDTHS[op]):
            return None
        bounds = (float(log_bounds[0]), float(log_bounds[1])) if positive else (0.0, 0.0)
        return FusedKernel(_scalar_spec(op, positive, bounds))
    if positive:
        return None
    spec = _pau_spec(options) if op == Op.PAU else _opau_spec(options)
    return None if spec is None else FusedKernel(spec)


def _pau_spec(options: Mapping[str, str | int]) -> OpSpec | None:
    form = PAU_FORMS.get(str(_option(options, "form")).upper())
    m, n = int(_option(options, "m")), int(_option(options, "n"))
    if form is None or not _degrees_supported(m, n, 0 if form == PauForm.C else 1):
        return None
    return OpSpec(Op.PAU, form, m, n, (m + 1, n + 1 if form == PauForm.C else n))


def _opau_spec(options: Mapping[str, str | int]) -> OpSpec | None:
    basis = OPAU_BASES.get(str(_option(options, "basis")).lower())
    k, l = int(_option(options, "k")), int(_option(options, "l"))  # noqa: E741
    if basis is None or not _degrees_supported(k, l, 0):
        return None
    return OpSpec(Op.OPAU, basis, k, l, (k + 1, l))


def _option(options: Mapping[str, str | int], name: str) -> str | int:
    try:
        return options[name]
    except KeyError:
        raise ValueError(
            f"module_kernel needs the family's resolved options (registry defaults filled in, "
            f"as module.options holds them); {name!r} is missing from {dict(options)!r}"
        ) from None
