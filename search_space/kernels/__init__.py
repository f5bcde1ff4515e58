"""Fused Triton kernels (forward and backward) for the learnable activation families.

The functional API takes the *constrained* parameter values as plain tensors (e.g. SMU's mu
already > 0); autograd chains through any parametrisation the caller applies outside. The
PyTorch modules in `search_space.modules` stay the reference and the CPU path; they call these
functions when `available(x)` is true. See README.md beside this file for the exact shapes.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Mapping

import torch

from search_space.kernels._ops import (
    MAX_DEGREE,
    OPAU_BASES,
    PAU_FORMS,
    FusedActivation,
    OpSpec,
)

__all__ = [
    "MAX_DEGREE",
    "OPAU_BASES",
    "PAU_FORMS",
    "available",
    "module_kernel",
    "opau",
    "pau",
    "smu",
    "swish",
]

Kernel = Callable[..., torch.Tensor]

_SMU_VARIANTS = {"smu": 0, "smu1": 1, "smu-1": 1, "smu_1": 1}


def _triton_importable() -> bool:
    return importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    """True when Triton's CPU interpreter is on (TRITON_INTERPRET=1, set before import)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def available(x: torch.Tensor) -> bool:
    """Whether the fused kernels can run on x: CUDA tensor, triton importable, ACTSEARCH_FUSED != 0.

    Under Triton's interpreter (TRITON_INTERPRET=1) CPU tensors qualify too, so tests can run
    the kernels through the modules on the CPU.
    """
    if os.environ.get("ACTSEARCH_FUSED", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if not (x.is_cuda or (x.device.type == "cpu" and interpreting())):
        return False
    if x.dtype not in (torch.float32, torch.bfloat16, torch.float16):
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
    return FusedActivation.apply(x, OpSpec(family, 0, 0, 0, (1, 1)), alpha, mu)


def swish(x: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Swish x * sigmoid(beta * x); beta: shape (1,) or (C,)."""
    return FusedActivation.apply(x, OpSpec(2, 0, 0, 0, (1,)), beta)


def pau(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, form: str = "A") -> torch.Tensor:
    """Padé unit P(x)/Q(x); a: (m+1,) or (C, m+1); b: (n,) or (C, n) for forms A/B, n+1 for C."""
    key = form.upper()
    if key not in PAU_FORMS:
        raise ValueError(f"unknown PAU form {form!r}: use one of {sorted(PAU_FORMS)}")
    m = a.shape[-1] - 1
    n = b.shape[-1] - 1 if key == "C" else b.shape[-1]
    _check_degrees("PAU", m, n, minimum_n=0 if key == "C" else 1)
    spec = OpSpec(3, PAU_FORMS[key], m, n, (m + 1, b.shape[-1]))
    return FusedActivation.apply(x, spec, a, b)


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
    return FusedActivation.apply(x, spec, c, d)


def _check_degrees(name: str, m: int, n: int, minimum_n: int) -> None:
    if not (0 <= m <= MAX_DEGREE and minimum_n <= n <= MAX_DEGREE):
        raise ValueError(
            f"{name} degrees ({m}, {n}) are outside what the fused kernel supports "
            f"(numerator 0..{MAX_DEGREE}, denominator {minimum_n}..{MAX_DEGREE}); "
            "use the PyTorch module path for these"
        )


# -- adapter for search_space.modules -------------------------------------------------------------


def _flat_scalar(p: torch.Tensor) -> torch.Tensor:
    """A module's broadcast-shaped scalar parameter (() or (C, 1, 1)) as (1,) or (C,)."""
    return p.reshape(-1)


def _table(p: torch.Tensor) -> torch.Tensor:
    """A module's coefficient tensor ((K,) or (K, C, 1, 1), index leading) as (K,) or (C, K)."""
    if p.dim() <= 1:
        return p
    return p.reshape(p.shape[0], -1).t()


def module_kernel(family: str, options: Mapping[str, str | int] | None = None) -> Kernel | None:
    """A fused replacement for a module's `fn` (x, *module.kernel_args(x)) -> y, or None.

    None when the fused kernels do not cover the family or options (e.g. PAU form "unsafe",
    degrees above MAX_DEGREE); the module then keeps its reference function.
    """
    opts = dict(options or {})
    name = family.lower()
    if name in ("smu", "smu1"):

        def smu_fn(x: torch.Tensor, alpha: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
            return smu(x, _flat_scalar(alpha), _flat_scalar(mu), variant=name)

        return smu_fn
    if name == "swish":

        def swish_fn(x: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
            return swish(x, _flat_scalar(beta))

        return swish_fn
    if name == "pau":
        form = str(opts.get("form", "A")).upper()
        if form not in PAU_FORMS or not _degrees_ok(opts, "m", "n", 5, 4):
            return None

        def pau_fn(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return pau(x, _table(a), _table(b), form=form)

        return pau_fn
    if name == "opau":
        basis = str(opts.get("basis", "hermite_h")).lower()
        if basis not in OPAU_BASES or not _degrees_ok(opts, "k", "l", 5, 4):
            return None

        def opau_fn(x: torch.Tensor, c: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
            return opau(x, _table(c), _table(d), basis=basis)

        return opau_fn
    return None


def _degrees_ok(opts: Mapping[str, str | int], num: str, den: str, dnum: int, dden: int) -> bool:
    return (
        0 <= int(opts.get(num, dnum)) <= MAX_DEGREE and 0 <= int(opts.get(den, dden)) <= MAX_DEGREE
    )
