"""Plain PyTorch formulas of the fused families, written independently of the Triton code.

Used as the float64 reference by the kernel checks (autograd supplies the gradients, with
torch.abs's convention sign(0) = 0) and as the eager PyTorch path in `bench/activations.py`.
Parameters follow the kernel API's shapes (see README.md): shared (K,) or per-channel (C, K)
coefficient tables; scalar parameters (1,) or (C,). Math runs in at least float32.
"""

from __future__ import annotations

import torch


def _sum(terms: list[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """Sum of tensors (zeros shaped like `like` when there are none)."""
    total = torch.zeros_like(like)
    for t in terms:
        total = total + t
    return total


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


def _chan(p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A scalar parameter of shape (1,) or (C,) shaped to broadcast over dim 1 of x."""
    p = p.to(x.dtype).reshape(-1)
    if p.numel() == 1:
        return p.reshape(())
    return p.reshape((1, -1) + (1,) * (x.ndim - 2))


def _coef(table: torch.Tensor, j: int, x: torch.Tensor) -> torch.Tensor:
    """Coefficient j of a (K,) or (C, K) table, shaped to broadcast over dim 1 of x."""
    return _chan(table.reshape(-1, table.shape[-1])[:, j], x)


def smu(
    x: torch.Tensor, alpha: torch.Tensor, mu: torch.Tensor, variant: str = "smu"
) -> torch.Tensor:
    """SMU / SMU-1 as ACTIVATIONS.md section 1 writes them."""
    z = x.to(_compute_dtype(x))
    a, m = _chan(alpha, z), _chan(mu, z)
    if variant == "smu":
        y = 0.5 * ((1 + a) * z + (1 - a) * z * torch.erf(m * (1 - a) * z))
    else:
        y = 0.5 * ((1 + a) * z + torch.sqrt((1 - a) ** 2 * z * z + m * m))
    return y.to(x.dtype)


def swish(x: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """x * sigmoid(beta * x)."""
    z = x.to(_compute_dtype(x))
    return (z * torch.sigmoid(_chan(beta, z) * z)).to(x.dtype)


def pau(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, form: str = "A") -> torch.Tensor:
    """Padé P(x)/Q(x) with denominator form A, B or C (ACTIVATIONS.md section 2)."""
    z = x.to(_compute_dtype(x))
    m, nb = a.shape[-1] - 1, b.shape[-1]
    pw = _powers(z, max(m, nb))
    num = _sum([_coef(a, j, z) * pw[j] for j in range(m + 1)], z)
    if form == "A":
        apw = _powers(torch.abs(z), nb)
        den = 1 + _sum([torch.abs(_coef(b, k - 1, z)) * apw[k] for k in range(1, nb + 1)], z)
    elif form == "B":
        den = 1 + torch.abs(_sum([_coef(b, k - 1, z) * pw[k] for k in range(1, nb + 1)], z))
    else:
        den = 0.1 + torch.abs(_sum([_coef(b, k, z) * pw[k] for k in range(nb)], z))
    return (num / den).to(x.dtype)


def _powers(z: torch.Tensor, degree: int) -> list[torch.Tensor]:
    """[1, z, z^2, ..., z^degree] by repeated products (no pow: clean gradients at 0)."""
    pw = [torch.ones_like(z)]
    for _ in range(degree):
        pw.append(pw[-1] * z)
    return pw


def basis(x: torch.Tensor, degree: int, name: str) -> list[torch.Tensor]:
    """f_0..f_degree of an orthogonal basis by its three-term recurrence."""
    one = torch.ones_like(x)
    first = {"chebyshev_u": 2 * x, "hermite_h": 2 * x, "laguerre": 1 - x}.get(name, x)
    fs = [one, first]
    for n in range(1, degree):
        f, fm = fs[-1], fs[-2]
        if name in ("chebyshev_t", "chebyshev_u"):
            g = 2 * x * f - fm
        elif name == "hermite_h":
            g = 2 * x * f - 2 * n * fm
        elif name == "hermite_he":
            g = x * f - n * fm
        elif name == "laguerre":
            g = ((2 * n + 1 - x) * f - n * fm) / (n + 1)
        elif name == "legendre":
            g = ((2 * n + 1) * x * f - n * fm) / (n + 1)
        else:
            raise ValueError(f"unknown basis {name!r}")
        fs.append(g)
    return fs[: degree + 1]


def opau(
    x: torch.Tensor, c: torch.Tensor, d: torch.Tensor, basis_name: str = "hermite_h"
) -> torch.Tensor:
    """Orthogonal-Padé [sum c_i f_i] / [1 + sum |d_j||f_j|] (ACTIVATIONS.md section 3)."""
    z = x.to(_compute_dtype(x))
    k, l = c.shape[-1] - 1, d.shape[-1]  # noqa: E741
    fs = basis(z, max(k, l, 1), basis_name)
    num = _sum([_coef(c, i, z) * fs[i] for i in range(k + 1)], z)
    den = 1 + _sum([torch.abs(_coef(d, j - 1, z)) * torch.abs(fs[j]) for j in range(1, l + 1)], z)
    return (num / den).to(x.dtype)
