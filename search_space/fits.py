"""Least-squares initial coefficients for PAU and OPAU, and the tables shipped with the package.

`python -m tools.fits` recomputes `search_space/fit_tables.json`: PAU forms A, B, C and
the six OPAU bases at the degrees in TABLE_DEGREES, fitted to each of FIT_TARGETS on the
default interval [-3, 3]. Other degrees / intervals / the unsafe form are fitted on demand by
`initial_coefficients` and cached in-process.

How a fit is made: minimise Σ (F(x_i) − t(x_i))² over FIT_POINTS uniform points of the interval
with Levenberg–Marquardt (scipy.optimize.least_squares), from several starts (a linearised
solution, matching registry presets, seeded random points); the lowest RMS wins.

Form-A fits hold the odd-power denominator coefficients b_1, b_3, ... at 0 (SMOOTH_FORM_A). The
form-A denominator is a function of |x|, so odd powers put a kink at x = 0; the published
LeakyReLU(0.01) coefficients (ACTIVATIONS.md §2) have b_1, b_3 ≈ 1e-6, and this restricted fit
reproduces their curve to ~1e-5. The unrestricted optimum for that target has a lower error
(RMS 0.00503 vs 0.00554) but a kink at 0 and deviates from the published curve by 8.4e-3:
`fit_pau(..., smooth_denominator=False)` gives it.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from search_space.registry import (
    DEFAULT_FIT_INTERVAL,
    FAMILIES,
    FIT_TARGETS,
    OPAU_BASES,
    PAU_FORMS,
)

log = logging.getLogger(__name__)

Array = NDArray[np.float64]

TABLE_PATH = Path(__file__).with_name("fit_tables.json")
TABLE_DEGREES: tuple[tuple[int, int], ...] = ((3, 2), (4, 4), (5, 4), (6, 5), (7, 6), (8, 8))
TABLE_FORMS: tuple[str, ...] = ("A", "B", "C")
FIT_POINTS = 601  # uniform, step 0.01 on [-3, 3]
MAX_EVALUATIONS = 400  # per start
SMOOTH_FORM_A = True
RANDOM_STARTS = 3


def _gelu(x: Array) -> Array:
    from scipy.special import erf

    return np.asarray(0.5 * x * (1.0 + erf(x / math.sqrt(2.0))), dtype=np.float64)


TARGETS: dict[str, Callable[[Array], Array]] = {
    "relu": lambda x: np.maximum(x, 0.0),
    "leaky_relu": lambda x: np.where(x >= 0, x, 0.01 * x),
    "gelu": _gelu,
    "silu": lambda x: x / (1.0 + np.exp(-x)),
    "tanh": np.tanh,
}
assert tuple(TARGETS) == FIT_TARGETS


@dataclass(frozen=True)
class Fit:
    """Fitted coefficients with the fit's max-abs and RMS error on its interval."""

    coefficients: dict[str, list[float]]
    max_abs: float
    rms: float

    def to_json(self) -> dict[str, Any]:
        """The table entry: coefficients plus errors."""
        return {**self.coefficients, "max_abs": self.max_abs, "rms": self.rms}


# -- evaluation (float64 numpy) -------------------------------------------------------------
def pau_value(x: Array, a: ArrayLike, b: ArrayLike, form: str) -> Array:
    """PAU F(x) in float64 (b holds b_1..b_n, or b_0..b_n for form C)."""
    numerator = np.polynomial.polynomial.polyval(x, np.asarray(a, dtype=np.float64))
    bb = np.asarray(b, dtype=np.float64)
    if form == "A":
        powers = np.abs(x)[:, None] ** np.arange(1, len(bb) + 1)
        return np.asarray(numerator / (1.0 + powers @ np.abs(bb)), dtype=np.float64)
    if form == "C":
        return np.asarray(
            numerator / (0.1 + np.abs(np.polynomial.polynomial.polyval(x, bb))), dtype=np.float64
        )
    tail = np.polynomial.polynomial.polyval(x, np.concatenate([[0.0], bb]))
    if form == "B":
        return np.asarray(numerator / (1.0 + np.abs(tail)), dtype=np.float64)
    if form == "unsafe":
        return np.asarray(numerator / (1.0 + tail), dtype=np.float64)
    raise ValueError(f"unknown PAU form {form!r}; valid: {', '.join(PAU_FORMS)}")


def basis_matrix(x: Array, basis: str, degree: int) -> Array:
    """Columns f_0(x)..f_degree(x) of an orthogonal basis (scipy.special), float64."""
    from scipy import special

    evaluate = {
        "chebyshev_t": special.eval_chebyt,
        "chebyshev_u": special.eval_chebyu,
        "hermite_h": special.eval_hermite,
        "hermite_he": special.eval_hermitenorm,
        "laguerre": special.eval_laguerre,
        "legendre": special.eval_legendre,
    }
    if basis not in evaluate:
        raise ValueError(f"unknown OPAU basis {basis!r}; valid: {', '.join(OPAU_BASES)}")
    return np.stack([evaluate[basis](n, x) for n in range(degree + 1)], axis=1)


def opau_value(x: Array, c: ArrayLike, d: ArrayLike, basis: str) -> Array:
    """OPAU F(x) in float64 (c holds c_0..c_k, d holds d_1..d_l)."""
    cc, dd = np.asarray(c, dtype=np.float64), np.asarray(d, dtype=np.float64)
    f = basis_matrix(x, basis, max(len(cc) - 1, len(dd), 1))
    numerator = f[:, : len(cc)] @ cc
    return np.asarray(numerator / (1.0 + np.abs(f[:, 1 : len(dd) + 1]) @ np.abs(dd)), np.float64)


# -- fitting --------------------------------------------------------------------------------
def _grid(interval: tuple[float, float]) -> Array:
    return np.linspace(interval[0], interval[1], FIT_POINTS)


def _target(name: str) -> Callable[[Array], Array]:
    if name not in TARGETS:
        raise ValueError(f"unknown fit target {name!r}; valid: {', '.join(TARGETS)}")
    return TARGETS[name]


Denominator = Callable[[Array], Array]  # denominator parameters -> Q on the grid


def _solve_numerator(columns_p: Array, q: Array, t: Array) -> Array:
    """The numerator coefficients minimising Σ (P/Q − t)² for a fixed Q (linear least squares)."""
    design = columns_p / q[:, None]
    solution, *_ = np.linalg.lstsq(design, t, rcond=None)
    return np.asarray(solution, dtype=np.float64)


def _best_fit(
    columns_p: Array,
    denominator: Denominator,
    t: Array,
    starts: list[Array],
    nonnegative: bool,
) -> tuple[Array, Array]:
    """Variable projection: optimise the denominator; the numerator is solved exactly inside.

    For a fixed denominator the numerator is a linear least-squares problem, so only the few
    denominator coefficients are searched (trust-region reflective; bounded to ≥ 0 where only
    |b| enters). Every start is tried; the lowest sum of squares wins.
    """
    from scipy.optimize import least_squares

    def residual(b: Array) -> Array:
        q = denominator(b)
        if not np.all(np.isfinite(q)) or np.any(q == 0):
            return np.full_like(t, 1e6)
        a = _solve_numerator(columns_p, q, t)
        return np.asarray(columns_p @ a / q - t, dtype=np.float64)

    bounds = (0.0, np.inf) if nonnegative else (-np.inf, np.inf)
    best_b, best_cost = starts[0], math.inf
    for start in starts:
        b0 = np.abs(start) if nonnegative else start
        if b0.size == 0:
            best_b = b0
            break
        result = least_squares(
            residual,
            b0,
            method="trf",
            bounds=bounds,
            x_scale="jac",
            xtol=1e-12,
            ftol=1e-12,
            gtol=1e-12,
            max_nfev=MAX_EVALUATIONS,
        )
        cost = float(np.sum(result.fun**2))
        if cost < best_cost:
            best_b, best_cost = result.x, cost
    q = denominator(best_b)
    return _solve_numerator(columns_p, q, t), np.asarray(best_b, dtype=np.float64)


def _linearised_start(columns_p: Array, columns_q: Array, t: Array, q0: float) -> Array:
    """Denominator coefficients of P ≈ t·(q0 + columns_q·b) solved linearly in (a, b)."""
    design = np.concatenate([columns_p, -t[:, None] * columns_q], axis=1)
    solution, *_ = np.linalg.lstsq(design, t * q0, rcond=None)
    return np.asarray(solution[columns_p.shape[1] :], dtype=np.float64)


def _starts(linear: Array, seed: int, extra: Sequence[Array]) -> list[Array]:
    rng = np.random.default_rng(seed)
    starts = [linear, np.zeros_like(linear), *extra]
    starts += [rng.uniform(0.0, 1.0, linear.size) for _ in range(RANDOM_STARTS)]
    return starts


def _errors(values: Array, t: Array) -> tuple[float, float]:
    err = values - t
    return float(np.max(np.abs(err))), float(np.sqrt(np.mean(err**2)))


def fit_pau(
    target: str,
    m: int,
    n: int,
    form: str = "A",
    interval: tuple[float, float] = DEFAULT_FIT_INTERVAL,
    *,
    smooth_denominator: bool | None = None,
    seed: int = 0,
    starts: Sequence[tuple[Sequence[float], Sequence[float]]] = (),
) -> Fit:
    """Least-squares fit of PAU (m, n) in `form` to `target` on `interval`."""
    if form not in PAU_FORMS:
        raise ValueError(f"unknown PAU form {form!r}; valid: {', '.join(PAU_FORMS)}")
    smooth = (form == "A" and SMOOTH_FORM_A) if smooth_denominator is None else smooth_denominator
    if smooth and form != "A":
        raise ValueError("smooth_denominator applies to form A only")
    x = _grid(interval)
    t = _target(target)(x)
    first_power = 0 if form == "C" else 1
    n_b = n + 1 - first_power
    # Free denominator slots: all, or the even powers only (smooth form A).
    free_b = [i for i in range(n_b) if not smooth or (i + first_power) % 2 == 0]
    powers = np.arange(first_power, first_power + n_b)[free_b]
    columns_p = x[:, None] ** np.arange(m + 1)
    columns_q = np.asarray((np.abs(x) if form == "A" else x)[:, None] ** powers, np.float64)
    q0 = 0.1 if form == "C" else 1.0

    def denominator(b: Array) -> Array:
        if form == "A":
            return np.asarray(q0 + columns_q @ np.abs(b), dtype=np.float64)
        s = columns_q @ b
        return np.asarray(q0 + (s if form == "unsafe" else np.abs(s)), dtype=np.float64)

    extra = [np.asarray(b, np.float64)[free_b] for _, b in starts]
    preset = _preset_start(form, m, n, target)
    if preset is not None:
        extra.append(np.asarray(preset[1], np.float64)[free_b])
    if form == "C":
        # Also start from Q ≈ 1 + Σ b_k x^k (b_0 = 0.9), the safe-form shape.
        extra.append(
            np.concatenate([[0.9], _linearised_start(columns_p, columns_q[:, 1:], t, 1.0)])
        )
    linear = _linearised_start(columns_p, columns_q, t, q0)
    a, b_free = _best_fit(
        columns_p, denominator, t, _starts(linear, seed, extra), nonnegative=form == "A"
    )
    b = np.zeros(n_b)
    b[free_b] = b_free
    max_abs, rms = _errors(pau_value(x, a, b, form), t)
    return Fit({"a": a.tolist(), "b": b.tolist()}, max_abs, rms)


def _preset_start(form: str, m: int, n: int, target: str) -> tuple[list[float], list[float]] | None:
    """A registry preset fitted to this target with these degrees, as a starting point."""
    for name, preset in FAMILIES["pau"].presets.items():
        if (preset["form"], preset["m"], preset["n"]) == (form, m, n) and name.endswith(target):
            return list(preset["a"]), list(preset["b"])
    return None


def fit_opau(
    target: str,
    basis: str,
    k: int,
    l: int,  # noqa: E741 (the paper's name)
    interval: tuple[float, float] = DEFAULT_FIT_INTERVAL,
    *,
    seed: int = 0,
    starts: Sequence[tuple[Sequence[float], Sequence[float]]] = (),
) -> Fit:
    """Least-squares fit of OPAU (k, l) in `basis` to `target` on `interval`."""
    x = _grid(interval)
    t = _target(target)(x)
    f = basis_matrix(x, basis, max(k, l, 1))
    columns_p, columns_q = f[:, : k + 1], np.abs(f[:, 1 : l + 1])

    def denominator(d: Array) -> Array:
        return np.asarray(1.0 + columns_q @ np.abs(d), dtype=np.float64)

    extra = [np.asarray(d, np.float64) for _, d in starts]
    linear = _linearised_start(columns_p, columns_q, t, 1.0)
    c, d = _best_fit(columns_p, denominator, t, _starts(linear, seed, extra), nonnegative=True)
    max_abs, rms = _errors(opau_value(x, c, d, basis), t)
    return Fit({"c": c.tolist(), "d": d.tolist()}, max_abs, rms)


# -- tables ---------------------------------------------------------------------------------
def _degree_key(m: int, n: int) -> str:
    return f"{m},{n}"


@functools.cache
def load_tables(path: Path = TABLE_PATH) -> dict[str, Any]:
    """The shipped fit tables (parsed once per process)."""
    with open(path, encoding="utf-8") as handle:
        data: dict[str, Any] = json.load(handle)
    return data


def table_entry(
    family: str, variant: str, m: int, n: int, target: str, interval: tuple[float, float]
) -> dict[str, Any] | None:
    """The tabulated fit for these settings, or None when it must be fitted."""
    if tuple(interval) != DEFAULT_FIT_INTERVAL or not TABLE_PATH.exists():
        return None
    entry = load_tables().get(family, {}).get(variant, {}).get(_degree_key(m, n), {}).get(target)
    return dict(entry) if entry is not None else None


@functools.lru_cache(maxsize=256)
def initial_coefficients(
    family: str,
    variant: str,
    m: int,
    n: int,
    target: str,
    interval: tuple[float, float] = DEFAULT_FIT_INTERVAL,
) -> dict[str, tuple[float, ...]]:
    """Initial coefficients of PAU (variant = form) or OPAU (variant = basis): table, else a fit."""
    entry = table_entry(family, variant, m, n, target, interval)
    if entry is None:
        log.info("fitting %s %s (%d,%d) to %s on %s", family, variant, m, n, target, interval)
        if family == "pau":
            fit = fit_pau(target, m, n, variant, interval)
        elif family == "opau":
            fit = fit_opau(target, variant, m, n, interval)
        else:
            raise ValueError(f"{family!r} has no fitted coefficients (only pau and opau)")
        entry = fit.coefficients
    names = ("a", "b") if family == "pau" else ("c", "d")
    return {name: tuple(float(v) for v in entry[name]) for name in names}


def _padded(
    previous: list[tuple[list[float], list[float]]], size: int
) -> list[tuple[list[float], list[float]]]:
    return [(a, (list(b) + [0.0] * size)[:size]) for a, b in previous if len(b) <= size]


def build_tables(degrees: Sequence[tuple[int, int]] | None = None) -> dict[str, Any]:
    """Fit every tabulated (family, form/basis, degrees, target) on the default interval."""
    degrees = TABLE_DEGREES if degrees is None else degrees
    tables: dict[str, Any] = {
        "about": "Least-squares fits of PAU / OPAU to common activations; regenerate with "
        "`python -m tools.fits`. Errors are over the fit grid of the interval.",
        "interval": list(DEFAULT_FIT_INTERVAL),
        "grid_points": FIT_POINTS,
        "smooth_form_a": SMOOTH_FORM_A,
        "pau": {},
        "opau": {},
    }
    for form in TABLE_FORMS:
        for target in FIT_TARGETS:
            previous: list[tuple[list[float], list[float]]] = []
            for m, n in degrees:
                # Warm start from the previous degrees (padded with zeros): never worse than it.
                fit = fit_pau(target, m, n, form, starts=_padded(previous, n + (form == "C")))
                previous = [(fit.coefficients["a"], fit.coefficients["b"])]
                tables["pau"].setdefault(form, {}).setdefault(_degree_key(m, n), {})[target] = (
                    fit.to_json()
                )
    for basis in OPAU_BASES:
        for target in FIT_TARGETS:
            previous = []
            for k, dl in degrees:
                fit = fit_opau(target, basis, k, dl, starts=_padded(previous, dl))
                previous = [(fit.coefficients["c"], fit.coefficients["d"])]
                tables["opau"].setdefault(basis, {}).setdefault(_degree_key(k, dl), {})[target] = (
                    fit.to_json()
                )
    return tables
