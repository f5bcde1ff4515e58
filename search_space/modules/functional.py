"""Reference forward functions of the learnable families: one function per family.

Each takes the input `x` and the family's *constrained* parameters (μ itself, not log μ), already
shaped to broadcast against `x` (a scalar tensor, or (C, 1, 1) for a per-channel (N, C, H, W)
input). Coefficient vectors carry their index as the leading dimension: `a[j]` broadcasts
against `x`. The functions are plain differentiable PyTorch in the dtype they are given; the
modules run them in fp32 through `in_fp32`. A fused kernel with the same signature and the same
dtype contract (any input dtype in, that dtype out, fp32 math inside) can replace any of them:
set `module.fn` (see search_space.modules.base).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable

import torch
from torch import Tensor

Kernel = Callable[..., Tensor]


def run_fp32(fn: Kernel, x: Tensor, *params: Tensor) -> Tensor:
    """fn(x, *params) computed in fp32 (fp64 stays fp64), returned in x's dtype."""
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    # Autocast would cast some ops back to half precision inside; the op owns its precision.
    guard = (
        torch.autocast(x.device.type, enabled=False)
        if torch.is_autocast_enabled(x.device.type)
        else contextlib.nullcontext()
    )
    with guard:
        y = fn(x.to(dtype), *(p.to(dtype) for p in params))
    return y.to(x.dtype)


def in_fp32(fn: Kernel) -> Kernel:
    """Wrap a reference function so that it runs through `run_fp32`."""
    return functools.wraps(fn)(functools.partial(run_fp32, fn))


def smu(x: Tensor, alpha: Tensor, mu: Tensor) -> Tensor:
    """SMU: ½[(1+α)x + (1−α)·x·erf(μ(1−α)x)]."""
    one_minus = 1 - alpha
    return 0.5 * ((1 + alpha) * x + one_minus * x * torch.erf(mu * one_minus * x))


def smu1(x: Tensor, alpha: Tensor, mu: Tensor) -> Tensor:
    """SMU-1: ½[(1+α)x + √((1−α)²x² + μ²)], the root as hypot so tiny μ cannot underflow."""
    return 0.5 * ((1 + alpha) * x + torch.hypot((1 - alpha) * x, mu))


def swish(x: Tensor, beta: Tensor) -> Tensor:
    """Swish: x·σ(βx)."""
    return x * torch.sigmoid(beta * x)


def prelu(x: Tensor, a: Tensor) -> Tensor:
    """PReLU: x if x ≥ 0 else a·x."""
    return torch.where(x >= 0, x, a * x)


def acon_c(x: Tensor, p1: Tensor, p2: Tensor, beta: Tensor) -> Tensor:
    """ACON-C: (p1−p2)·x·σ(β(p1−p2)x) + p2·x."""
    dpx = (p1 - p2) * x
    return dpx * torch.sigmoid(beta * dpx) + p2 * x


def _horner(coefficients: Tensor, x: Tensor) -> Tensor:
    """Σ_j c[j]·x^j by Horner's rule (c[j] broadcasts against x)."""
    acc = coefficients[-1] * torch.ones_like(x)
    for j in range(coefficients.shape[0] - 2, -1, -1):
        acc = acc * x + coefficients[j]
    return acc


def pau_a(x: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """PAU form A: P(x) / (1 + Σ_{k=1..n} |b_k|·|x|^k); b[k-1] holds b_k."""
    ax = x.abs()
    tail = _horner(b.abs(), ax) * ax  # Σ |b_k| |x|^k = |x|·Σ |b_k| |x|^(k−1)
    return _horner(a, x) / (1 + tail)


def pau_b(x: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """PAU form B ("safe PAU"): P(x) / (1 + |Σ_{k=1..n} b_k x^k|)."""
    return _horner(a, x) / (1 + (_horner(b, x) * x).abs())


def pau_c(x: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """PAU form C: P(x) / (0.1 + |Σ_{k=0..n} b_k x^k|); b[k] holds b_k."""
    return _horner(a, x) / (0.1 + _horner(b, x).abs())


def pau_unsafe(x: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """PAU without the safety absolute values: P(x) / (1 + Σ_{k=1..n} b_k x^k); has poles."""
    return _horner(a, x) / (1 + _horner(b, x) * x)


PAU_FORMS: dict[str, Kernel] = {"A": pau_a, "B": pau_b, "C": pau_c, "unsafe": pau_unsafe}


def basis_values(x: Tensor, basis: str, degree: int) -> list[Tensor]:
    """f_0(x)..f_degree(x) of an orthogonal polynomial basis by its three-term recurrence."""
    one = torch.ones_like(x)
    first = {
        "chebyshev_t": x,
        "chebyshev_u": 2 * x,
        "hermite_h": 2 * x,
        "hermite_he": x,
        "laguerre": 1 - x,
        "legendre": x,
    }
    if basis not in first:
        raise ValueError(f"unknown OPAU basis {basis!r}; valid: {', '.join(first)}")
    values = [one, first[basis]]
    for n in range(1, degree):
        cur, prev = values[n], values[n - 1]
        if basis in ("chebyshev_t", "chebyshev_u"):
            nxt = 2 * x * cur - prev
        elif basis == "hermite_h":
            nxt = 2 * x * cur - 2 * n * prev
        elif basis == "hermite_he":
            nxt = x * cur - n * prev
        elif basis == "laguerre":
            nxt = ((2 * n + 1 - x) * cur - n * prev) / (n + 1)
        else:  # legendre
            nxt = ((2 * n + 1) * x * cur - n * prev) / (n + 1)
        values.append(nxt)
    return values[: degree + 1]


def opau(x: Tensor, c: Tensor, d: Tensor, basis: str) -> Tensor:
    """OPAU: [Σ_{i=0..k} c_i f_i(x)] / [1 + Σ_{j=1..l} |d_j|·|f_j(x)|] (f_0 = 1)."""
    k, dl = c.shape[0] - 1, d.shape[0]
    f = basis_values(x, basis, max(k, dl, 1))
    numerator = c[0] * f[0]
    for i in range(1, k + 1):
        numerator = numerator + c[i] * f[i]
    denominator = torch.ones_like(x)
    for j in range(1, dl + 1):
        denominator = denominator + d[j - 1].abs() * f[j].abs()
    return numerator / denominator


def opau_kernel(basis: str) -> Kernel:
    """The OPAU reference function with its basis bound: (x, c, d) -> y."""
    return functools.partial(opau, basis=basis)
