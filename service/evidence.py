"""Statistics behind every comparison of families (docs/evidence.md, EVIDENCE.md). Pure Python.

What each number is:
- a family's mean accuracy over its trainings with the 95 % Student t interval of that mean;
- against the baseline family: the difference of means (Δ), its 95 % Welch–Satterthwaite
  interval and Welch's two-sided t-test (unequal variances);
- p-values corrected with Holm's step-down method across the families compared in one study
  (or one confirm study), and a verdict at α = 0.05.

Verdicts. Search-time numbers (the study that chose the configurations) are optimistic: a
significant gain there is *promising* at most. Only trainings that took no part in the choice (a
confirm study's fresh seeds) can be *better* or *worse*. Fewer than two trainings on either side:
*too few runs*, with no interval and no p-value.

No scipy, no numpy: the t distribution comes from the regularized incomplete beta function, so
the API and the CLI pay nothing at import; tests check every number against scipy.stats.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

ALPHA = 0.05
LEVEL = 0.95  # of every interval

Stage = Literal["search", "confirm"]

BASELINE = "baseline"
TOO_FEW = "too few runs"
NO_EVIDENCE = "no evidence"
PROMISING = "promising"
BETTER = "better"
WORSE = "worse"
VERDICTS = (BASELINE, TOO_FEW, NO_EVIDENCE, PROMISING, BETTER, WORSE)


# -- the t distribution ------------------------------------------------------------------------
def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 10_000):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            step = c * d
            result *= step
        if abs(step - 1.0) < 1e-15:
            break
    return result


def incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b), for a, b > 0 and 0 ≤ x ≤ 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
        + a * math.log(x) + b * math.log1p(-x)
    )  # fmt: skip
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def t_sf2(t: float, df: float) -> float:
    """Two-sided tail probability P(|T| ≥ |t|) of Student's t with df degrees of freedom."""
    if math.isinf(t):
        return 0.0
    return incomplete_beta(df / 2.0, 0.5, df / (df + t * t))


def t_pdf(t: float, df: float) -> float:
    """Density of Student's t."""
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return math.exp(log_norm - (df + 1) / 2 * math.log1p(t * t / df))


def t_critical(df: float, level: float = LEVEL) -> float:
    """The t with P(|T| ≤ t) = level: the half-width of an interval in standard errors.

    Newton's method on the two-sided tail from the Cornish–Fisher expansion (two or three
    steps), kept inside a bracket of the root."""
    tail = 1.0 - level
    z = NormalDist().inv_cdf(1.0 - tail / 2.0)
    t = z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
    t += (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)
    low, high = 0.0, math.inf
    for _ in range(200):
        excess = t_sf2(t, df) - tail  # decreasing in t
        if excess > 0:
            low = t
        else:
            high = t
        newton = t + excess / (2.0 * t_pdf(t, df))  # d/dt of the two-sided tail is -2·pdf
        if abs(newton - t) <= 1e-13 * t or high - low <= 1e-14 * t:
            return newton
        inside = low < newton < high
        t = newton if inside else (low + high) / 2.0 if high < math.inf else 2.0 * t
    return t


# -- samples, intervals and tests --------------------------------------------------------------
@dataclass(frozen=True)
class Summary:
    """A sample by its size, mean and unbiased variance (None below two values)."""

    n: int
    mean: float | None
    var: float | None


EMPTY = Summary(0, None, None)


def summarize(values: Sequence[float]) -> Summary:
    """Size, mean and sample variance (two passes, compensated sums)."""
    n = len(values)
    if n == 0:
        return EMPTY
    mean = math.fsum(values) / n
    return from_moments(n, mean, math.fsum((v - mean) ** 2 for v in values))


def from_moments(n: int, mean: float | None, squares: float | None) -> Summary:
    """A summary from size, mean and the sum of squared deviations from that mean."""
    if n == 0 or mean is None:
        return EMPTY
    if n < 2 or squares is None:
        return Summary(n, mean, None)
    return Summary(n, mean, max(squares, 0.0) / (n - 1))


def merge(a: Summary, b: Summary) -> Summary:
    """The summary of two samples together (Chan et al.'s pairwise update)."""
    if a.n == 0 or a.mean is None:
        return b
    if b.n == 0 or b.mean is None:
        return a
    n = a.n + b.n
    delta = b.mean - a.mean
    squares = (a.var or 0.0) * (a.n - 1) + (b.var or 0.0) * (b.n - 1) + delta**2 * a.n * b.n / n
    return from_moments(n, a.mean + delta * b.n / n, squares)


@dataclass(frozen=True)
class Interval:
    """A confidence interval."""

    low: float
    high: float

    @property
    def half_width(self) -> float:
        """Half its width: the ± of "mean ± half-width"."""
        return (self.high - self.low) / 2.0


def mean_interval(sample: Summary, level: float = LEVEL) -> Interval | None:
    """The Student t interval of the mean (None below two values)."""
    if sample.n < 2 or sample.mean is None or sample.var is None:
        return None
    half = t_critical(sample.n - 1, level) * math.sqrt(sample.var / sample.n)
    return Interval(sample.mean - half, sample.mean + half)


@dataclass(frozen=True)
class Welch:
    """Welch's two-sample t-test of a − b and the Welch–Satterthwaite interval of the difference.

    `p`, `df` and `interval` are None when both samples have no spread (the test is undefined).
    """

    delta: float
    t: float | None
    df: float | None
    p: float | None
    interval: Interval | None


def welch(a: Summary, b: Summary, level: float = LEVEL) -> Welch | None:
    """Welch's test of mean(a) − mean(b), two-sided; None when either side has < 2 values."""
    if a.n < 2 or b.n < 2 or a.mean is None or b.mean is None:
        return None
    assert a.var is not None and b.var is not None
    delta = a.mean - b.mean
    va, vb = a.var / a.n, b.var / b.n
    se2 = va + vb
    if se2 <= 0.0:
        return Welch(delta, None, None, None, None)
    df = se2 * se2 / (va * va / (a.n - 1) + vb * vb / (b.n - 1))
    se = math.sqrt(se2)
    t = delta / se
    half = t_critical(df, level) * se
    return Welch(delta, t, df, t_sf2(t, df), Interval(delta - half, delta + half))


def holm(p_values: Mapping[str, float]) -> dict[str, float]:
    """Holm's step-down adjusted p-values: the i-th smallest of m is multiplied by m − i + 1,
    kept monotone and capped at 1. Reject where the adjusted p ≤ α (ties keep the given order)."""
    ordered = sorted(p_values.items(), key=lambda item: item[1])
    m = len(ordered)
    adjusted: dict[str, float] = {}
    running = 0.0
    for i, (name, p) in enumerate(ordered):
        running = max(running, min(1.0, (m - i) * p))
        adjusted[name] = running
    return adjusted


# -- families against the baseline ---------------------------------------------------------------
@dataclass(frozen=True)
class FamilyEvidence:
    """One family's sample and its comparison with the baseline family."""

    family: str
    n: int
    mean: float | None
    interval: Interval | None
    delta: float | None  # mean minus the baseline's mean (None for the baseline itself)
    delta_interval: Interval | None
    p_raw: float | None
    p_value: float | None  # Holm-adjusted across the families compared
    verdict: str


def verdict(stage: Stage, delta: float, p_adjusted: float, alpha: float = ALPHA) -> str:
    """The word for a tested difference: search-time gains are promising at most."""
    if p_adjusted > alpha:
        return NO_EVIDENCE
    if stage == "search":
        return PROMISING if delta > 0 else NO_EVIDENCE
    return BETTER if delta > 0 else WORSE


def compare_families(
    samples: Mapping[str, Sequence[float] | Summary],
    baseline: str,
    stage: Stage,
    alpha: float = ALPHA,
) -> dict[str, FamilyEvidence]:
    """Every family of `samples` (values, or their Summary) against `baseline`: means,
    intervals, Welch + Holm, verdicts.

    Holm's correction runs over the families that could be tested (two or more values on each
    side, some spread); the others say "too few runs" (or "no evidence" without spread).
    """
    summaries = {
        family: sample if isinstance(sample, Summary) else summarize(list(sample))
        for family, sample in samples.items()
    }
    base = summaries.get(baseline, EMPTY)
    tests = {
        family: welch(summary, base) for family, summary in summaries.items() if family != baseline
    }
    raw = {f: w.p for f, w in tests.items() if w is not None and w.p is not None}
    adjusted = holm(raw)
    out: dict[str, FamilyEvidence] = {}
    for family, summary in summaries.items():
        test = tests.get(family)
        if family == baseline:
            word = BASELINE
        elif test is None:
            word = TOO_FEW
        elif family not in adjusted:
            word = NO_EVIDENCE  # no spread on either side: nothing to test
        else:
            word = verdict(stage, test.delta, adjusted[family], alpha)
        delta = None
        if family != baseline and summary.mean is not None and base.mean is not None:
            delta = summary.mean - base.mean
        out[family] = FamilyEvidence(
            family=family,
            n=summary.n,
            mean=summary.mean,
            interval=mean_interval(summary),
            delta=delta,
            delta_interval=test.interval if test is not None else None,
            p_raw=raw.get(family),
            p_value=adjusted.get(family),
            verdict=word,
        )
    return out
