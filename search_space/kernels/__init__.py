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
from dataclasses import replace

import torch

from search_space.kernels._ops import (
    BWD_VARIANTS,
    FAMILY_IDS,
    MAX_DEGREE,
    OPAU_BASES,
    PAU_FORMS,
    OpSpec,
    backward_variant,
    fused_apply,
)

__all__ = [
    "BWD_VARIANTS",
    "MAX_DEGREE",
    "OPAU_BASES",
    "PAU_FORMS",
    "available",
    "backward_variant",
    "module_kernel",
    "opau",
    "pau",
    "smu",
    "swish",
]

Kernel = Callable[..., torch.Tensor]

_SMU_VARIANTS = {"smu": 0, "smu1": 1, "smu-1": 1, "smu_1": 1}
# SMU, SMU-1 (alpha, mu) and Swish (beta): one table row per parameter, stacked
_SCALAR_SPECS = {
    0: OpSpec(0, 0, 0, 0, (1, 1), stacked=True),
    1: OpSpec(1, 0, 0, 0, (1, 1), stacked=True),
    2: OpSpec(2, 0, 0, 0, (1,), stacked=True),
}


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
    return fused_apply(x, _SCALAR_SPECS[2], beta)


def pau(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, form: str = "A") -> torch.Tensor:
    """Padé unit P(x)/Q(x); a: (m+1,) or (C, m+1); b: (n,) or (C, n) for forms A/B, n+1 for C."""
    key = form.upper()
    if key not in PAU_FORMS:
        raise ValueError(f"unknown PAU form {form!r}: use one of {sorted(PAU_FORMS)}")
    m = a.shape[-1] - 1
    n = b.shape[-1] - 1 if key == "C" else b.shape[-1]
    _check_degrees("PAU", m, n, minimum_n=0 if key == "C" else 1)
    spec = OpSpec(3, PAU_FORMS[key], m, n, (m + 1, b.shape[-1]))
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
    spec = OpSpec(4, OPAU_BASES[key], k, l, (k + 1, l))
    return fused_apply(x, spec, _param_major(c), _param_major(d))


def _param_major(p: torch.Tensor) -> torch.Tensor:
    """(C, K) per-channel coefficients as the (K, C) view the table is built from; (K,) as is."""
    return p.t() if p.dim() == 2 else p


def _check_degrees(name: str, m: int, n: int, minimum_n: int) -> None:
    if not (0 <= m <= MAX_DEGREE and minimum_n <= n <= MAX_DEGREE):
        raise ValueError(
            f"{name} degrees ({m}, {n}) are outside what the fused kernel supports "
            f"(numerator 0..{MAX_DEGREE}, denominator {minimum_n}..{MAX_DEGREE}); "
            "use the PyTorch module path for these"
        )


# -- adapter for search_space.modules -------------------------------------------------------------


def module_kernel(
    family: str,
    options: Mapping[str, str | int] | None = None,
    *,
    log_scale: Sequence[bool] = (),
    log_bounds: tuple[float, float] = (0.0, 0.0),
) -> Kernel | None:
    """A fused replacement for a module's `fn`: (x, *params) -> y, or None when not covered.

    `params` in the module's order, either broadcast-shaped constrained values (what
    `module.kernel_args(x)` gives: () or (C, 1, 1); coefficients (K,) or (K, C, 1, 1)) or the
    module's stored tensors (() or (C,); (K,) or (K, C)); both are parameter-major, so they go
    into the kernels' table without a view. Where `log_scale[j]` is true, parameter j is
    log(value) and the kernels use exp(clamp(p, *log_bounds)) with its gradient (SMU's mu,
    Swish's beta as the modules store them). None when the fused kernels do not cover the
    family or options (e.g. PAU form "unsafe", degrees above MAX_DEGREE, log-scale PAU/OPAU
    coefficients); the module then keeps its reference function.
    """
    opts = dict(options or {})
    name = family.lower()
    positive = sum(1 << j for j, flag in enumerate(log_scale) if flag)
    bounds = (float(log_bounds[0]), float(log_bounds[1])) if positive else (0.0, 0.0)
    if name in ("smu", "smu1", "swish"):
        base = _SCALAR_SPECS[FAMILY_IDS[name]]
        if positive >> len(base.widths):
            return None
        spec = replace(base, positive=positive, log_bounds=bounds)

        def scalar_fn(x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
            return fused_apply(x, spec, *params)

        return scalar_fn
    if positive or name not in ("pau", "opau"):
        return None
    if name == "pau":
        form = str(opts.get("form", "A")).upper()
        if form not in PAU_FORMS or not _degrees_ok(opts, "m", "n", 5, 4):
            return None
        m, n = int(opts.get("m", 5)), int(opts.get("n", 4))
        if form != "C" and n < 1:
            return None
        spec = OpSpec(3, PAU_FORMS[form], m, n, (m + 1, n + 1 if form == "C" else n))
    else:
        basis = str(opts.get("basis", "hermite_h")).lower()
        if basis not in OPAU_BASES or not _degrees_ok(opts, "k", "l", 5, 4):
            return None
        k, l = int(opts.get("k", 5)), int(opts.get("l", 4))  # noqa: E741
        spec = OpSpec(4, OPAU_BASES[basis], k, l, (k + 1, l))

    def coefficient_fn(x: torch.Tensor, num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
        return fused_apply(x, spec, num, den)

    return coefficient_fn


def _degrees_ok(opts: Mapping[str, str | int], num: str, den: str, dnum: int, dden: int) -> bool:
    return (
        0 <= int(opts.get(num, dnum)) <= MAX_DEGREE and 0 <= int(opts.get(den, dden)) <= MAX_DEGREE
    )
