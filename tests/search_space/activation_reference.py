"""Independent float64 NumPy/SciPy formulas for every pointwise family: f, ∂f/∂x, ∂f/∂params.

Written from ACTIVATIONS.md, not from the modules under test. Bases come from
numpy.polynomial (their own construction, not our recurrences). Each reference takes the
points x and the *constrained* parameter values and returns (f, dfdx, {param: dfdp}) per point;
coefficient vectors report one derivative per coefficient under the names a0, a1, ..., b1, ...
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from numpy.polynomial import Chebyshev, Hermite, HermiteE, Laguerre, Legendre
from scipy.special import erf, expit

Array = np.ndarray
Result = tuple[Array, Array, dict[str, Array]]
Reference = Callable[[Array, Mapping[str, Any], Mapping[str, Any]], Result]

SELU_ALPHA = 1.6732632423543772
SELU_SCALE = 1.0507009873554805


def _no_params(f: Array, df: Array) -> Result:
    return f, df, {}


def relu(x: Array, p: Mapping[str, Any], o: Mapping[str, Any]) -> Result:
    return _no_params(np.maximum(x, 0), (x > 0).astype(float))


def relu6(x: Array, p: Mapping[str, Any], o: Mapping[str, Any]) -> Result:
    return _no_params(np.clip(x, 0, 6), ((x > 0) & (x < 6)).astype(float))


def leaky_relu(x: Array, p: Mapping[str, Any], o: Mapping[str, Any]) -> Result:
    s = p["negative_slope"]
    return _no_params(np.where(x >= 0, x, s * x), np.where(x > 0, 1.0, s))


def prelu(x: Array, p: Mapping[str, Any], o: Mapping[str, Any]) -> Result:
    a = p["a"]
    return np.where(x >= 0, x, a * x), np.where(x >= 0, 1.0, a), {"a": np.where(x >= 0, 0.0, x)}


def rrelu(x: Array, p: Mapping[str, Any], o: Mapping[str, Any]) -> Result:
    slope = (p["lower"] + p["upper"]) / 2  # eval mode
    return _no_params(np.where(x >= 0, x, slope * x), np.where(x > 0, 1.0, slope))


def elu(x: Array, p: Mapping[str, Any], o: Mapping[str, Any]) -> Result:
    a = p["alpha"]
    return _no_params(np.where(x > 0, x, a * np.expm1(x)), np.where(x > 0, 1.0, a * np.exp(x)))


def selu(x: Array, p: Mapping[str, Any], o: Mapping[str, Any]) -> Result:
    f = SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(x))
    return _no_params(f, SELU_SCALE * np.where(x > 0, 1.0, SELU_ALPHA * np.exp(x)))


def celu(x: Array, p: Mapping[str, Any], o: Mapping[str, Any]) -> Result:
    a = p["alpha"]
    f = np.maximum(x, 0) + np.minimum(0, a * np.expm1(x / a))
    return _no_params(f, np.where(x > 0, 1.0, np.exp(x / a)))


def softplus(x: Array, p: Mapping[str, Any], o: Mapping[str, Any]) -> Result:
    b = p["beta"]
    return _no_params(np.logaddexp(0, b * x) / b, expit(b * x))


def sigmoid(x: Array, p: Mapping[str, Any], o: Mapping[str, Any]) -> Result:
    s = expit(x)
    return _no_params(s, s * (1 - s))


def tanh(x: Array, p: Mapping[str, Any], o: Mapping[str, Any]) -> Result:
    t = np.tanh(x)
    return _no_params(t, 1 - t**2)


def hsigmoid(x: Array, p: Mapping[str, Any], o: Mapping[str, Any]) -> Result:
    return _no_params(np.clip(x + 3, 0, 6) / 6, ((x > -3) & (x < 3)) / 6.0)


def hswish(x: Array, p: Mapping[str, Any], o: Mapping[str, Any]) -> Result:
    df = np.where(x >= 3, 1.0, np.where(x <= -3, 0.0, (2 * x + 3) / 6))
    return _no_params(x * np.clip(x + 3, 0, 6) / 6, df)


def gelu(x: Array, p: Mapping[str, Any], o: Mapping[str, Any]) -> Result:
    if o.get("approximate", "none") == "tanh":
        k = math.sqrt(2 / math.pi)
        t = np.tanh(k * (x + 0.044715 * x**3))
        df = 0.5 * (1 + t) + 0.5 * x * (1 - t**2) * k * (1 + 3 * 0.044715 * x**2)
        return _no_params(0.5 * x * (1 + t), df)
    cdf = 0.5 * (1 + erf(x / math.sqrt(2)))
    pdf = np.exp(-(x**2) / 2) / math.sqrt(2 * math.pi)
    return _no_params(x * cdf, cdf + x * pdf)


def swish(x: Array, p: Mapping[str, Any], o: Mapping[str, Any]) -> Result:
    b = p["beta"]
    s = expit(b * x)
    return x * s, s + b * x * s * (1 - s), {"beta": x**2 * s * (1 - s)}


def mish(x: Array, p: Mapping[str, Any], o: Mapping[str, Any]) -> Result:
    t = np.tanh(np.logaddexp(0, x))
    return _no_params(x * t, t + x * (1 - t**2) * expit(x))


def acon_c(x: Array, p: Mapping[str, Any], o: Mapping[str, Any]) -> Result:
    p1, p2, b = p["p1"], p["p2"], p["beta"]
    d = p1 - p2
    s = expit(b * d * x)
    ds = s * (1 - s)
    f = d * x * s + p2 * x
    dfd = x * s + d * x * ds * b * x  # ∂f/∂(p1 − p2) at fixed p2·x term
    return (
        f,
        d * s + d * x * ds * b * d + p2,
        {"p1": dfd, "p2": -dfd + x, "beta": (d * x) ** 2 * ds},
    )


def smu(x: Array, p: Mapping[str, Any], o: Mapping[str, Any]) -> Result:
    a, mu = p["alpha"], p["mu"]
    u = mu * (1 - a) * x
    g = np.exp(-(u**2))
    f = 0.5 * ((1 + a) * x + (1 - a) * x * erf(u))
    dfdx = 0.5 * ((1 + a) + (1 - a) * erf(u) + (2 / math.sqrt(math.pi)) * (1 - a) * u * g)
    dfdmu = (1 - a) ** 2 * x**2 * g / math.sqrt(math.pi)
    dfda = 0.5 * (x - x * erf(u) - (2 / math.sqrt(math.pi)) * (1 - a) * mu * x**2 * g)
    return f, dfdx, {"alpha": dfda, "mu": dfdmu}


def smu1(x: Array, p: Mapping[str, Any], o: Mapping[str, Any]) -> Result:
    a, mu = p["alpha"], p["mu"]
    r = np.sqrt((1 - a) ** 2 * x**2 + mu**2)
    f = 0.5 * ((1 + a) * x + r)
    return (
        f,
        0.5 * ((1 + a) + (1 - a) ** 2 * x / r),
        {"alpha": 0.5 * (x - (1 - a) * x**2 / r), "mu": mu / (2 * r)},
    )


def pau(x: Array, p: Mapping[str, Any], o: Mapping[str, Any]) -> Result:
    a = np.asarray(p["a"], dtype=float)
    b = np.asarray(p["b"], dtype=float)
    form = o["form"]
    P = sum(a[j] * x**j for j in range(len(a)))
    R = sum(j * a[j] * x ** (j - 1) for j in range(1, len(a)))
    grads: dict[str, Array] = {}
    if form == "A":
        Q = 1 + sum(abs(b[k - 1]) * np.abs(x) ** k for k in range(1, len(b) + 1))
        S = np.sign(x) * sum(k * abs(b[k - 1]) * np.abs(x) ** (k - 1) for k in range(1, len(b) + 1))
        for k in range(1, len(b) + 1):
            grads[f"b{k}"] = -(P / Q**2) * np.sign(b[k - 1]) * np.abs(x) ** k
    else:
        first = 0 if form == "C" else 1
        powers = range(first, first + len(b))
        s = sum(b[i] * x**k for i, k in enumerate(powers))
        ds = sum(k * b[i] * x ** (k - 1) for i, k in enumerate(powers) if k > 0)
        if form == "unsafe":
            Q, S, sgn = 1 + s, ds, 1.0
        else:
            q0 = 0.1 if form == "C" else 1.0
            Q, S, sgn = q0 + np.abs(s), np.sign(s) * ds, np.sign(s)
        for _i, k in enumerate(powers):
            grads[f"b{k}"] = -(P / Q**2) * sgn * x**k
    for j in range(len(a)):
        grads[f"a{j}"] = x**j / Q
    return P / Q, R / Q - S * P / Q**2, grads


BASIS_CLASSES = {
    "chebyshev_t": Chebyshev,
    "hermite_h": Hermite,
    "hermite_he": HermiteE,
    "laguerre": Laguerre,
    "legendre": Legendre,
}


def basis_polynomial(basis: str, n: int) -> Any:
    """f_n as a numpy.polynomial object (U_n = T'_{n+1}/(n+1))."""
    if basis == "chebyshev_u":
        return Chebyshev.basis(n + 1).deriv() / (n + 1)
    return BASIS_CLASSES[basis].basis(n)


def opau(x: Array, p: Mapping[str, Any], o: Mapping[str, Any]) -> Result:
    c = np.asarray(p["c"], dtype=float)
    d = np.asarray(p["d"], dtype=float)
    basis = o["basis"]
    f = [basis_polynomial(basis, n)(x) for n in range(max(len(c), len(d) + 1))]
    df = [basis_polynomial(basis, n).deriv()(x) for n in range(max(len(c), len(d) + 1))]
    N = sum(c[i] * f[i] for i in range(len(c)))
    dN = sum(c[i] * df[i] for i in range(len(c)))
    D = 1 + sum(abs(d[j - 1]) * np.abs(f[j]) for j in range(1, len(d) + 1))
    dD = sum(abs(d[j - 1]) * np.sign(f[j]) * df[j] for j in range(1, len(d) + 1))
    grads = {f"c{i}": f[i] / D for i in range(len(c))}
    for j in range(1, len(d) + 1):
        grads[f"d{j}"] = -(N / D**2) * np.sign(d[j - 1]) * np.abs(f[j])
    return N / D, dN / D - N * dD / D**2, grads


def basis_roots(basis: str, degree: int) -> Array:
    """Real roots of f_1..f_degree (where |f_j| has kinks)."""
    roots = [basis_polynomial(basis, n).roots() for n in range(1, degree + 1)]
    flat = np.concatenate(roots) if roots else np.array([])
    return np.real(flat[np.abs(np.imag(flat)) < 1e-12])


REFERENCES: dict[str, Reference] = {
    "relu": relu,
    "relu6": relu6,
    "leaky_relu": leaky_relu,
    "prelu": prelu,
    "rrelu": rrelu,
    "elu": elu,
    "selu": selu,
    "celu": celu,
    "softplus": softplus,
    "sigmoid": sigmoid,
    "tanh": tanh,
    "hsigmoid": hsigmoid,
    "hswish": hswish,
    "gelu": gelu,
    "swish": swish,
    "mish": mish,
    "acon_c": acon_c,
    "smu": smu,
    "smu1": smu1,
    "pau": pau,
    "opau": opau,
}

# Points where ∂f/∂x is not defined (one-sided derivatives differ), per family and settings.
KINKS: dict[str, Callable[[Mapping[str, Any], Mapping[str, Any]], list[float]]] = {
    "relu": lambda p, o: [0.0],
    "relu6": lambda p, o: [0.0, 6.0],
    "leaky_relu": lambda p, o: [0.0],
    "prelu": lambda p, o: [0.0],
    "rrelu": lambda p, o: [0.0],
    "elu": lambda p, o: [0.0],
    "celu": lambda p, o: [0.0],
    "selu": lambda p, o: [0.0],
    "hsigmoid": lambda p, o: [-3.0, 3.0],
    "hswish": lambda p, o: [-3.0, 3.0],
    "pau": lambda p, o: [0.0] if o["form"] == "A" else _pau_kinks(p, o),
    "opau": lambda p, o: list(basis_roots(o["basis"], len(p["d"]))),
}


def _pau_kinks(p: Mapping[str, Any], o: Mapping[str, Any]) -> list[float]:
    """Real roots of the denominator's inner sum (forms B, C), poles (unsafe)."""
    b = np.asarray(p["b"], dtype=float)
    coefficients = (
        b if o["form"] == "C" else np.concatenate([[1.0 if o["form"] == "unsafe" else 0.0], b])
    )
    roots = np.polynomial.polynomial.polyroots(coefficients) if np.any(coefficients[1:]) else []
    return [float(np.real(r)) for r in roots if abs(np.imag(r)) < 1e-12]


def away_from_kinks(
    family: str, p: Mapping[str, Any], o: Mapping[str, Any], x: Array, margin: float = 1e-6
) -> Array:
    """Boolean mask of points at least `margin` away from every kink."""
    kinks = KINKS.get(family, lambda p, o: [])(p, o)
    mask = np.ones_like(x, dtype=bool)
    for k in kinks:
        mask &= np.abs(x - k) > margin
    return mask
