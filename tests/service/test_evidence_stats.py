"""service.evidence against scipy.stats on fixed data: every value, bound, p-value and Holm step."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from scipy import stats

from service.evidence import (
    BASELINE,
    BETTER,
    NO_EVIDENCE,
    PROMISING,
    TOO_FEW,
    VERDICTS,
    WORSE,
    compare_families,
    from_moments,
    holm,
    mean_interval,
    merge,
    summarize,
    t_critical,
    t_sf2,
    welch,
)

REL = 1e-9

# Accuracies of trainings (fractions): seed noise of about ±0.4 points, as on the proxy network.
RELU = [0.8112, 0.8154, 0.8089, 0.8131, 0.8170, 0.8102]
SMU = [0.8301, 0.8267, 0.8335, 0.8290, 0.8318]  # about +1.8 points: clearly better
GELU = [0.8120, 0.8160, 0.8071, 0.8149]  # about the baseline's
PAU = [0.8040, 0.7991, 0.8025, 0.8062, 0.8003, 0.8031, 0.8017]  # about −1 point
ELU = [0.8199]  # one training


@pytest.mark.parametrize("df", [1, 1.7, 2, 3, 4.5, 7, 12.3, 30, 99.9, 400])
def test_t_quantiles_and_tails_match_scipy(df: float) -> None:
    assert t_critical(df) == pytest.approx(stats.t.ppf(0.975, df), rel=1e-12)
    assert t_critical(df, 0.99) == pytest.approx(stats.t.ppf(0.995, df), rel=1e-12)
    for t in (0.0, 0.003, 0.5, 1.0, 2.1, 4.0, 9.5, 30.0):
        assert t_sf2(t, df) == pytest.approx(2 * stats.t.sf(t, df), rel=1e-11)
        assert t_sf2(-t, df) == t_sf2(t, df)


@pytest.mark.parametrize("values", [RELU, SMU, GELU, PAU])
def test_mean_and_its_interval_match_scipy(values: list[float]) -> None:
    summary = summarize(values)
    assert summary.n == len(values)
    assert summary.mean == pytest.approx(stats.tmean(values), rel=1e-15)
    assert summary.var == pytest.approx(stats.tvar(values), rel=1e-12)
    low, high = stats.t.interval(
        0.95, len(values) - 1, loc=stats.tmean(values), scale=stats.sem(values)
    )
    interval = mean_interval(summary)
    assert interval is not None
    assert (interval.low, interval.high) == (
        pytest.approx(low, rel=REL),
        pytest.approx(high, rel=REL),
    )
    assert interval.half_width == pytest.approx((high - low) / 2, rel=1e-8)


def test_summaries_merge_and_come_from_moments_like_the_pooled_sample() -> None:
    pooled = summarize(RELU + SMU)
    merged = merge(summarize(RELU), summarize(SMU))
    assert merged.n == pooled.n == len(RELU) + len(SMU)
    assert merged.mean == pytest.approx(stats.tmean(RELU + SMU), rel=1e-14)
    assert merged.var == pytest.approx(stats.tvar(RELU + SMU), rel=1e-12)
    assert merge(summarize([]), summarize(ELU)) == summarize(ELU)
    squares = sum((v - stats.tmean(GELU)) ** 2 for v in GELU)
    assert from_moments(4, stats.tmean(GELU), squares).var == pytest.approx(stats.tvar(GELU))
    assert from_moments(1, 0.8, None).var is None and from_moments(0, None, None).mean is None


def test_below_two_values_there_is_no_interval_and_no_test() -> None:
    assert summarize([]).mean is None
    assert summarize(ELU).var is None
    assert mean_interval(summarize(ELU)) is None
    assert welch(summarize(ELU), summarize(RELU)) is None
    assert welch(summarize(RELU), summarize(ELU)) is None


@pytest.mark.parametrize("family", [SMU, GELU, PAU])
def test_welch_matches_scipy(family: list[float]) -> None:
    expected = stats.ttest_ind(family, RELU, equal_var=False)
    ci = expected.confidence_interval(0.95)
    found = welch(summarize(family), summarize(RELU))
    assert found is not None and found.interval is not None
    assert found.delta == pytest.approx(stats.tmean(family) - stats.tmean(RELU), rel=1e-12)
    assert found.t == pytest.approx(expected.statistic, rel=REL)
    assert found.df == pytest.approx(expected.df, rel=REL)
    assert found.p == pytest.approx(expected.pvalue, rel=REL)
    assert found.interval.low == pytest.approx(ci.low, rel=REL)
    assert found.interval.high == pytest.approx(ci.high, rel=REL)


def _holm_by_hand(raw: dict[str, float]) -> dict[str, float]:
    """Holm's step-down adjustment written out: sort, multiply by m − i, keep the running max."""
    names = sorted(raw, key=raw.__getitem__)
    m = len(names)
    out, running = {}, 0.0
    for i, name in enumerate(names):
        running = max(running, min(1.0, (m - i) * raw[name]))
        out[name] = running
    return out


def test_holm_matches_the_step_down_procedure_on_scipys_p_values() -> None:
    raw = {
        name: float(stats.ttest_ind(values, RELU, equal_var=False).pvalue)
        for name, values in {"smu": SMU, "gelu": GELU, "pau": PAU}.items()
    }
    adjusted = holm(raw)
    assert adjusted == pytest.approx(_holm_by_hand(raw), rel=1e-12)
    # The order: smallest raw p first, times 3, then times 2, then times 1 (kept monotone).
    order = sorted(raw, key=raw.__getitem__)
    assert order == ["smu", "pau", "gelu"]
    assert adjusted["smu"] == pytest.approx(3 * raw["smu"], rel=1e-12)
    assert adjusted["pau"] == pytest.approx(max(3 * raw["smu"], 2 * raw["pau"]), rel=1e-12)
    assert adjusted["gelu"] == pytest.approx(min(1.0, max(adjusted["pau"], raw["gelu"])))
    # A made-up set where monotonicity and the cap at 1 matter.
    made_up = {"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.5, "e": 0.45}
    assert holm(made_up) == pytest.approx(_holm_by_hand(made_up))
    assert holm(made_up)["b"] == pytest.approx(0.12)  # 3·0.04 = 0.12 ≥ 4·0.03
    assert holm(made_up)["d"] == pytest.approx(0.9)  # max(2·0.45, 1·0.5)
    assert holm({}) == {}


def test_confirm_verdicts_come_from_welch_and_holm() -> None:
    samples = {"relu": RELU, "smu": SMU, "gelu": GELU, "pau": PAU, "elu": ELU}
    found = compare_families(samples, "relu", "confirm")
    raw = {
        name: float(stats.ttest_ind(samples[name], RELU, equal_var=False).pvalue)
        for name in ("smu", "gelu", "pau")  # elu has one training: not tested, not counted
    }
    adjusted = _holm_by_hand(raw)
    assert found["relu"].verdict == BASELINE and found["relu"].delta is None
    assert found["elu"].verdict == TOO_FEW
    assert found["elu"].p_value is None and found["elu"].delta_interval is None
    assert found["elu"].interval is None
    for name in raw:
        assert found[name].p_raw == pytest.approx(raw[name], rel=REL)
        assert found[name].p_value == pytest.approx(adjusted[name], rel=REL)
    assert adjusted["smu"] < 0.05 and found["smu"].verdict == BETTER
    assert adjusted["pau"] < 0.05 and found["pau"].verdict == WORSE
    assert adjusted["gelu"] > 0.05 and found["gelu"].verdict == NO_EVIDENCE


def test_search_time_gains_are_promising_at_most() -> None:
    found = compare_families({"relu": RELU, "smu": SMU, "pau": PAU}, "relu", "search")
    assert found["smu"].verdict == PROMISING  # significant, but chosen on these numbers
    assert found["pau"].verdict == NO_EVIDENCE  # never "worse" at search time either
    assert {f.verdict for f in found.values()} <= {BASELINE, PROMISING, NO_EVIDENCE, TOO_FEW}


def test_without_a_baseline_sample_nothing_is_tested() -> None:
    found = compare_families({"smu": SMU}, "relu", "confirm")
    assert found["smu"].verdict == TOO_FEW and found["smu"].delta is None
    interval = found["smu"].interval
    assert interval is not None and math.isclose(
        interval.low, stats.t.interval(0.95, 4, stats.tmean(SMU), stats.sem(SMU))[0], rel_tol=REL
    )


def test_no_spread_on_either_side_is_no_evidence_without_a_p_value() -> None:
    found = compare_families({"relu": [0.8, 0.8], "smu": [0.81, 0.81]}, "relu", "confirm")
    assert found["smu"].verdict == NO_EVIDENCE
    assert found["smu"].p_value is None and found["smu"].delta == pytest.approx(0.01)


def test_the_docs_name_every_verdict_and_the_confirm_command() -> None:
    root = Path(__file__).resolve().parents[2]
    evidence = (root / "docs" / "evidence.md").read_text()
    assert all(f"`{verdict}`" in evidence for verdict in VERDICTS)
    commands = (root / "README.md").read_text().split("## Commands", 1)[1].split("\n## ", 1)[0]
    assert "`actsearch confirm ID [--top K] [--seeds N]`" in commands
