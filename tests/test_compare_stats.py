"""The ratio, its 95% interval and the verdict of ``bench compare``, at their boundaries."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from harness.compare_stats import (
    Measured,
    Ratio,
    fcr_level,
    is_exact,
    pair_seed,
    ratio_ci,
    relative,
    repeats_to_settle,
    runs_ci,
    statistic,
    t_quantile,
    verdict,
)


def exact(value: float) -> Measured:
    return Measured(value, exact=True)


def repeats(*samples: float) -> Measured:
    xs = sorted(samples)
    mid = len(xs) // 2
    median = xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2
    return Measured(median, min(xs), max(xs), len(xs), tuple(samples))


def point(r: float) -> Ratio:
    return Ratio(r, r, r, "exact", 1)


# ---------------------------------------------------------------- verdicts at the band edges


@pytest.mark.parametrize(
    ("ratio", "expected"),
    [
        (1.05, "unchanged"),  # on the edge: inside the band
        (1.0500001, "regressed"),
        (0.95, "unchanged"),
        (0.9499999, "improved"),
        (1.0, "unchanged"),
    ],
)
def test_exact_ratio_at_the_edges_of_a_5_percent_band(ratio: float, expected: str) -> None:
    assert verdict(point(ratio), 0.05, higher_is_better=False) == expected


def test_exact_ratio_from_stored_values_on_the_edge() -> None:
    # 105 / 100 is the float nearest 1.05, and 1 + 0.05 may round either way: the edge
    # has a relative slack of 1e-12 so that +5% exactly is inside a ±5% band.
    r = ratio_ci(exact(100.0), exact(105.0))
    assert (r.ratio, r.low, r.high, r.method) == (1.05, 1.05, 1.05, "exact")
    assert verdict(r, 0.05, higher_is_better=False) == "unchanged"
    assert verdict(ratio_ci(exact(100.0), exact(105.001)), 0.05, False) == "regressed"


def test_direction_decides_improved_or_regressed() -> None:
    assert verdict(point(1.2), 0.05, higher_is_better=True) == "improved"
    assert verdict(point(1.2), 0.05, higher_is_better=False) == "regressed"
    assert verdict(point(0.8), 0.05, higher_is_better=True) == "regressed"
    assert verdict(point(0.8), 0.05, higher_is_better=None) == "changed"


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        (0.96, 1.04, "unchanged"),  # inside ±5%
        (0.95, 1.05, "unchanged"),  # bounds on the edges count as inside
        (1.03, 1.07, "inconclusive"),  # straddles the upper edge
        (0.90, 1.10, "inconclusive"),  # straddles both
        (1.051, 1.30, "regressed"),  # entirely beyond +5%
        (1.01, 1.04, "unchanged"),  # worse, but by less than the threshold
        (0.70, 0.949, "improved"),
    ],
)
def test_interval_against_the_band(low: float, high: float, expected: str) -> None:
    r = Ratio((low + high) / 2, low, high, "intervals", 5)
    assert verdict(r, 0.05, higher_is_better=False) == expected


def test_no_interval_is_inconclusive_whatever_the_ratio() -> None:
    assert verdict(Ratio(1.0, math.nan, math.nan, "none", 1), 0.05, False) == "inconclusive"
    assert verdict(Ratio(3.0, math.nan, math.nan, "none", 1), 0.05, False) == "inconclusive"


# ---------------------------------------------------------------- bootstrap with known support


def test_bootstrap_interval_of_a_two_valued_candidate() -> None:
    # Base: 6 equal repeats. Candidate: three at 1.0 and three at 1.1, so a resample's
    # median is 1.0, 1.05 or 1.1, the extremes each with probability 22/64 > 2.5%: the
    # interval is exactly [1.0, 1.1] with 10,000 resamples.
    base = repeats(1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    candidate = repeats(1.0, 1.1, 1.0, 1.1, 1.0, 1.1)
    r = ratio_ci(base, candidate, seed=pair_seed(0, "a", "b", "m"))
    assert r.method == "bootstrap"
    assert r.ratio == pytest.approx(1.05)
    assert (r.low, r.high) == (1.0, pytest.approx(1.1))
    assert verdict(r, 0.05, False) == "inconclusive"
    assert verdict(r, 0.10, False) == "unchanged"
    assert verdict(r, 0.02, True) == "inconclusive"


def test_bootstrap_of_shifted_constant_repeats_is_a_point() -> None:
    r = ratio_ci(repeats(*[2.0] * 6), repeats(*[2.2] * 6))
    assert (r.method, r.low, r.high) == ("bootstrap", pytest.approx(1.1), pytest.approx(1.1))
    assert verdict(r, 0.05, higher_is_better=False) == "regressed"
    assert verdict(r, 0.05, higher_is_better=True) == "improved"


def test_bootstrap_is_seeded() -> None:
    base = repeats(1.0, 1.3, 0.9, 1.1, 1.2, 1.05, 0.95)
    candidate = repeats(1.1, 1.0, 1.4, 1.2, 0.9, 1.15, 1.0)
    again = [ratio_ci(base, candidate, seed=7) for _ in range(2)]
    assert again[0] == again[1]
    other = ratio_ci(base, candidate, seed=8)
    assert (other.low, other.high) != (again[0].low, again[0].high)
    assert pair_seed(0, "k1", "k2", "latency.tpot_s") == pair_seed(0, "k1", "k2", "latency.tpot_s")
    assert pair_seed(0, "k1", "k2", "latency.tpot_s") != pair_seed(1, "k1", "k2", "latency.tpot_s")


def test_statistic_is_recognised_from_the_stored_value() -> None:
    assert statistic(2.0, (1.0, 2.0, 10.0)) == "median"
    assert statistic(13 / 3, (1.0, 2.0, 10.0)) == "mean"
    assert statistic(5.0, (1.0, 2.0, 10.0)) is None
    assert statistic(1.0, (1.0,)) is None  # one sample: nothing to resample
    assert statistic(1.0, (1.0, math.nan)) is None


def test_values_without_samples_fall_back_to_their_intervals() -> None:
    base = Measured(10.0, 9.0, 11.0, n=40)
    candidate = Measured(12.0, 11.5, 12.5, n=40)
    r = ratio_ci(base, candidate)
    assert r.method == "intervals"
    assert (r.low, r.high) == (pytest.approx(11.5 / 11.0), pytest.approx(12.5 / 9.0))
    assert r.n == 40


def test_exact_and_uncertain_single_values() -> None:
    assert ratio_ci(exact(4.0), exact(2.0)).method == "exact"
    single = ratio_ci(Measured(4.0), Measured(4.0))  # measured once, not exact
    assert single.method == "none" and single.ratio == 1.0
    assert math.isnan(single.low)
    # one side exact, the other with an interval: the point is its own interval
    mixed = ratio_ci(exact(10.0), Measured(11.0, 10.5, 11.5, n=20))
    assert (mixed.method, mixed.low, mixed.high) == ("intervals", 1.05, 1.15)


def test_zero_and_negative_values() -> None:
    both_zero = ratio_ci(exact(0.0), exact(0.0))
    assert (both_zero.ratio, both_zero.method) == (1.0, "exact")
    assert math.isnan(ratio_ci(exact(0.0), exact(3.0)).ratio)
    assert math.isnan(ratio_ci(exact(-1.0), exact(3.0)).ratio)


def test_what_counts_as_exact() -> None:
    assert is_exact("memory.weights_bytes", "bytes", 1, False, 0)
    assert is_exact("accuracy.perplexity", "ppl", 4096, False, 0)
    assert not is_exact("memory.peak_rss_bytes", "bytes", 1, False, 0)
    assert not is_exact("latency.speedup", "ratio", 1, False, 0)
    assert not is_exact("cost.load_peak_bytes", "bytes", 1, False, 0)  # RSS on a CPU
    assert not is_exact("roofline.decode_flops", "FLOP/s", 1, False, 0)  # a rate
    assert not is_exact("latency.itl_p90_s", "s", 35, False, 0)  # timed
    assert not is_exact("memory.weights_bytes", "bytes", 3, True, 0)  # has an interval
    assert not is_exact("kv.evicted_tokens", "tokens", 3, False, 3)  # has samples


# ---------------------------------------------------------------- repeats that would settle it


def test_repeats_to_settle_by_hand() -> None:
    # ratio 1, interval [0.9, 1.1], band ±5%, 6 samples a side. In log ratio the lower
    # half-width 0.1054 must shrink to |log 0.95| = 0.0513 (factor 0.4868) and the upper
    # 0.0953 to log 1.05 = 0.0488 (0.5119): the tighter is 0.4868, so 6 / 0.4868² = 25.3
    # samples, 26 − 6 = 20 more.
    r = Ratio(1.0, 0.9, 1.1, "bootstrap", 6)
    assert repeats_to_settle(r, 0.05) == 20
    assert verdict(r, 0.05, False) == "inconclusive"


def test_repeats_to_settle_a_ratio_beyond_the_band() -> None:
    # ratio 1.10, interval [1.02, 1.2]: to show "regressed" the lower half-width
    # log(1.1/1.02) = 0.0755 must shrink to log(1.1/1.05) = 0.0465: factor 0.616,
    # 10 / 0.616² = 26.4 → 27 samples, 17 more.
    r = Ratio(1.10, 1.02, 1.2, "intervals", 10)
    assert repeats_to_settle(r, 0.05) == 17


def test_more_runs_count_the_t_quantile_shrinking() -> None:
    # two runs a side (df 2), log interval ±0.2, band ±5%: s = log(1.05) / 0.2 = 0.2439; the
    # goal t(2) · √(1/2 + 1/2) · s = 4.3027 · 0.2439 = 1.0496. Six more runs a side give
    # t(14) · √(2/8) = 1.0724, seven t(16) · √(2/9) = 0.9993: 7. (n / s² − n says 32.)
    r = Ratio(1.0, math.exp(-0.2), math.exp(0.2), "runs", 2, df=2)
    assert repeats_to_settle(r, 0.05) == 7
    assert repeats_to_settle(replace(r, method="bootstrap"), 0.05) == 32


def test_no_number_of_repeats_settles_a_ratio_on_the_edge() -> None:
    assert repeats_to_settle(Ratio(1.05, 1.0, 1.1, "bootstrap", 6), 0.05) is None
    assert repeats_to_settle(Ratio(1.0, math.nan, math.nan, "none", 1), 0.05) is None
    assert repeats_to_settle(Ratio(1.0, 0.99, 1.01, "bootstrap", 6), 0.05) is None  # settled


# ---------------------------------------------------------------- several runs a side


def test_runs_interval_by_hand() -> None:
    # logs: base ln 1, ln 1; candidate ln 2, ln 2·e^0.2 → d = ln 2 + 0.1, pooled
    # s² = (0.1² + 0.1²) / 2 = 0.01, half-width t(2) · 0.1 · √(1/2 + 1/2) = 0.430265
    # (t(2) = 4.302653).
    r = runs_ci((1.0, 1.0), (2.0, 2.0 * math.exp(0.2)))
    assert r is not None and r.method == "runs" and r.n == 2
    assert r.ratio == pytest.approx(2 * math.exp(0.1))
    assert r.low == pytest.approx(2 * math.exp(0.1 - 0.430265))
    assert r.high == pytest.approx(2 * math.exp(0.1 + 0.430265))
    # at 99%: t(2) = 9.924843
    wider = runs_ci((1.0, 1.0), (2.0, 2.0 * math.exp(0.2)), level=0.99)
    assert wider is not None and wider.low == pytest.approx(2 * math.exp(0.1 - 0.9924843))


def test_runs_need_three_values_and_positive_ones() -> None:
    assert runs_ci((1.0,), (1.1,)) is None  # no spread to estimate
    assert runs_ci((1.0, 1.0), ()) is None
    assert runs_ci((1.0, 0.0), (1.0,)) is None
    r = runs_ci((1.0,), (1.0, 1.0))
    assert r is not None and (r.low, r.ratio, r.high) == (1.0, 1.0, 1.0)


def test_runs_see_the_noise_between_processes() -> None:
    # Each run tight within itself (its repeats agree to 0.1%), the runs far apart: one run
    # a side calls it a regression, the runs' spread makes it inconclusive.
    fast, slow = repeats(0.0640, 0.0641, 0.0639), repeats(0.1370, 0.1371, 0.1369)
    alone = ratio_ci(fast, slow, seed=1)
    assert alone.method == "bootstrap" and verdict(alone, 0.02, False) == "regressed"
    both = ratio_ci(
        Measured(fast.value, n=3, samples=fast.samples, runs=(fast.value, 0.1140)),
        Measured(slow.value, n=3, samples=slow.samples, runs=(slow.value, 0.0711)),
    )
    assert both.method == "runs" and verdict(both, 0.02, False) == "inconclusive"
    assert repeats_to_settle(both, 0.02) is not None


def test_exact_values_stay_exact_with_several_runs() -> None:
    r = ratio_ci(
        Measured(100.0, exact=True, runs=(100.0, 100.0)),
        Measured(110.0, exact=True, runs=(110.0, 110.0)),
    )
    assert (r.method, r.low, r.high) == ("exact", pytest.approx(1.1), pytest.approx(1.1))


@pytest.mark.parametrize(
    ("df", "t"), [(1, 12.706), (2, 4.303), (30, 2.042), (40, 2.021), (120, 1.980)]
)
def test_t_quantiles(df: int, t: float) -> None:
    assert t_quantile(0.95, df) == pytest.approx(t, abs=1e-3)


# ---------------------------------------------------------------- many rows, the machine


@pytest.mark.parametrize(
    ("selected", "noisy", "level"),
    [(0, 100, 0.95), (100, 100, 0.95), (10, 100, 0.995), (1, 1000, 0.99995)],
)
def test_fcr_level(selected: int, noisy: int, level: float) -> None:
    assert fcr_level(selected, noisy) == pytest.approx(level)


def test_stored_intervals_widen_as_normal_in_the_log() -> None:
    base, candidate = Measured(1.0, 0.9, 1.1), Measured(2.0, 1.8, 2.2)
    at_95 = ratio_ci(base, candidate)
    at_99 = ratio_ci(base, candidate, level=0.99)
    assert at_95.method == at_99.method == "intervals"
    assert (at_95.low, at_95.high) == (pytest.approx(1.8 / 1.1), pytest.approx(2.2 / 0.9))
    widen = 2.5758293 / 1.9599640  # z(0.995) / z(0.975)
    assert math.log(at_99.low / 2) == pytest.approx(math.log(1.8 / 1.1 / 2) * widen)
    assert math.log(at_99.high / 2) == pytest.approx(math.log(2.2 / 0.9 / 2) * widen)


def test_bootstrap_interval_widens_with_the_level() -> None:
    base, candidate = (
        Measured(10.0, samples=(9.0, 10.0, 11.0, 10.0, 10.5)),
        Measured(11.0, samples=(10.0, 11.0, 12.0, 11.0, 11.5)),
    )
    at_95, at_999 = ratio_ci(base, candidate), ratio_ci(base, candidate, level=0.999)
    assert at_999.low < at_95.low and at_999.high > at_95.high


def test_relative_to_the_machine() -> None:
    timing = Ratio(1.21, 1.21 * math.exp(-0.03), 1.21 * math.exp(0.04), "runs", 2)
    machine = Ratio(1.1, 1.1 * math.exp(-0.04), 1.1 * math.exp(0.03), "runs", 30)
    slower = relative(timing, machine, 1)  # a time: divided by the machine's ratio
    assert slower.ratio == pytest.approx(1.1)
    assert math.log(slower.ratio / slower.low) == pytest.approx(0.05)  # hypot(0.03, 0.04)
    assert math.log(slower.high / slower.ratio) == pytest.approx(0.05)
    rate = relative(Ratio(1 / 1.21, 0.8, 0.85, "runs", 2), machine, -1)  # tok/s: multiplied
    assert rate.ratio == pytest.approx(1 / 1.1) and rate.method == "runs"
    assert relative(Ratio(1.2, math.nan, math.nan, "none", 1), machine, 1).ratio == pytest.approx(
        1.2 / 1.1
    )
