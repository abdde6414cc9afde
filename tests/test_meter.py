from __future__ import annotations

import math
import statistics
import subprocess
import sys
from math import comb

import pytest

from harness import meter
from harness.meter import Stats, clock, median_ci_coverage, median_ci_ranks, summarize, sync


def _coverage(n: int, j: int) -> float:
    """P(j <= B < n + 1 - j) for B ~ Bin(n, 1/2), written out from the definition."""
    return sum(comb(n, i) for i in range(j, n + 1 - j)) / 2**n


# ---------------------------------------------------------------- ranks worked by hand
#
# n=5:  j=1 covers 1 - 2/32 = 0.9375 < 0.95, so no interval reaches 95% → [min, max].
# n=6:  j=1 covers 1 - 2/64 = 0.96875 >= 0.95; j=2 covers 1 - 2·(1+6)/64 = 0.78125.
# n=10: j=2 covers 1 - 2·(1+10)/1024 = 0.978515625; j=3: 1 - 2·(1+10+45)/1024 = 0.890625.
# n=20: P(B<=5) = (1+20+190+1140+4845+15504)/2^20 = 21700/1048576 → j=6 covers 0.95861;
#       adding C(20,6) = 38760 gives 60460/1048576 → j=7 covers only 0.88468.


@pytest.mark.parametrize(
    ("n", "ranks", "coverage"),
    [
        (5, (1, 5), 1 - 2 / 32),
        (6, (1, 6), 1 - 2 / 64),
        (10, (2, 9), 1 - 22 / 1024),
        (20, (6, 15), 1 - 2 * 21700 / 1048576),
    ],
)
def test_ranks_by_hand(n: int, ranks: tuple[int, int], coverage: float) -> None:
    assert median_ci_ranks(n) == ranks
    assert median_ci_coverage(n) == pytest.approx(coverage, abs=1e-15)


def test_hand_ranks_are_the_narrowest_reaching_95() -> None:
    assert _coverage(6, 1) >= 0.95 > _coverage(6, 2)
    assert _coverage(10, 2) >= 0.95 > _coverage(10, 3)
    assert _coverage(20, 6) >= 0.95 > _coverage(20, 7)


def test_summarize_n5_uses_min_max() -> None:
    stats = summarize([5.0, 1.0, 4.0, 2.0, 3.0])
    assert stats == Stats(
        median=3.0,
        ci_low=1.0,
        ci_high=5.0,
        n=5,
        mean=3.0,
        stdev=statistics.stdev([1, 2, 3, 4, 5]),
        cv=statistics.stdev([1, 2, 3, 4, 5]) / 3.0,
    )


def test_summarize_n6() -> None:
    stats = summarize([6.0, 2.0, 5.0, 1.0, 4.0, 3.0])
    assert (stats.median, stats.ci_low, stats.ci_high, stats.n) == (3.5, 1.0, 6.0, 6)


def test_summarize_n10_picks_2nd_and_9th() -> None:
    samples = [float(x) for x in (10, 30, 20, 90, 50, 70, 40, 100, 60, 80)]
    stats = summarize(samples)
    assert (stats.median, stats.ci_low, stats.ci_high) == (55.0, 20.0, 90.0)
    assert stats.mean == 55.0


def test_summarize_n20_picks_6th_and_15th() -> None:
    samples = [float(x) for x in range(20, 0, -1)]  # 20, 19, ..., 1
    stats = summarize(samples)
    assert (stats.median, stats.ci_low, stats.ci_high, stats.n) == (10.5, 6.0, 15.0, 20)


def test_single_sample() -> None:
    assert summarize([0.25]) == Stats(0.25, 0.25, 0.25, 1, 0.25, 0.0, 0.0)
    assert median_ci_coverage(1) == 0.0


def test_constant_samples() -> None:
    assert summarize([2.0] * 7) == Stats(2.0, 2.0, 2.0, 7, 2.0, 0.0, 0.0)


def test_cv() -> None:
    assert summarize([1.0, 3.0]).cv == pytest.approx(math.sqrt(2) / 2)
    assert summarize([-1.0, 1.0]).cv == math.inf  # mean 0, spread > 0
    assert summarize([-2.0, -4.0]).cv == pytest.approx(math.sqrt(2) / 3)  # stdev / |mean|


@pytest.mark.parametrize("bad", [[], [1.0, math.nan], [math.inf]])
def test_rejects_empty_and_non_finite(bad: list[float]) -> None:
    with pytest.raises(ValueError, match="summarize"):
        summarize(bad)


def test_rejects_n0_ranks() -> None:
    with pytest.raises(ValueError, match="n >= 1"):
        median_ci_ranks(0)


@pytest.mark.parametrize("n", range(1, 6))
def test_small_n_coverage_formula(n: int) -> None:
    assert median_ci_ranks(n) == (1, n)
    assert median_ci_coverage(n) == 1 - 2 * 0.5**n


def test_every_n_reaches_95_and_is_narrowest() -> None:
    for n in range(6, 301):
        j, k = median_ci_ranks(n)
        assert k == n + 1 - j
        assert _coverage(n, j) >= 0.95, n
        assert _coverage(n, j + 1) < 0.95, n


def test_float_path_agrees_with_exact_path() -> None:
    for n in range(1, 1001):
        assert meter._ranks_float(n) == meter._ranks_exact(n), n
    # The value usually tabulated for n=100: the 40th and 61st order statistics.
    assert median_ci_ranks(100) == (40, 61)


def test_large_n_uses_float_path_and_keeps_coverage() -> None:
    n = 5001
    j, k = median_ci_ranks(n)
    assert k == n + 1 - j
    assert 0.95 <= median_ci_coverage(n) < 0.96
    assert j == meter._ranks_exact(n)


def test_sync_and_clock_on_cpu() -> None:
    sync("cpu")  # nothing to wait for
    first = clock("cpu")
    second = clock("cpu")
    assert second >= first  # perf_counter is monotonic


@pytest.mark.gpu
def test_sync_and_clock_on_cuda() -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    x = torch.ones(1024, 1024, device="cuda:0")
    before = clock("cuda:0")
    (x @ x).sum()
    assert clock("cuda:0") >= before


def test_statistics_do_not_import_torch() -> None:
    code = (
        "import sys, harness; pre = 'torch' in sys.modules; "
        "import harness.meter as m; m.summarize([1.0, 2.0]); "
        "print(pre or 'torch' not in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    assert out.strip() == "True"


# ---------------------------------------------------------------- quantiles (ITL tails)


def _binom_cdf(n: int, q: float, k: int) -> float:
    """P(B <= k) for B ~ Bin(n, q), from the definition."""
    return sum(comb(n, i) * q**i * (1 - q) ** (n - i) for i in range(k + 1))


def test_quantile_ranks_of_the_median_are_the_median_ranks() -> None:
    for n in range(6, 400):
        assert meter.quantile_ci_ranks(n, 0.5) == median_ci_ranks(n), n
    for n in range(1, 6):
        assert meter.quantile_ci_ranks(n, 0.5) is None  # no 95% interval below 6 samples


@pytest.mark.parametrize(("n", "q"), [(50, 0.9), (100, 0.9), (200, 0.95), (500, 0.99)])
def test_quantile_ranks_cut_each_tail_at_most_2_5_percent(n: int, q: float) -> None:
    ranks = meter.quantile_ci_ranks(n, q)
    assert ranks is not None
    j, k = ranks
    assert _binom_cdf(n, q, j - 1) <= 0.025 < _binom_cdf(n, q, j)  # the largest such j
    assert 1 - _binom_cdf(n, q, k - 1) <= 0.025 < 1 - _binom_cdf(n, q, k - 2)  # smallest k


def test_a_p99_upper_bound_needs_368_samples() -> None:
    # 0.99^367 = 0.02502 > 2.5%: even the maximum may lie below the true p99.
    assert meter.quantile_ci_ranks(367, 0.99) is None
    assert meter.quantile_ci_ranks(368, 0.99) == (360, 368)


def test_min_samples_for_percentile() -> None:
    assert [meter.min_samples_for_percentile(p) for p in (50, 90, 95, 99)] == [2, 10, 20, 100]
    with pytest.raises(ValueError):
        meter.min_samples_for_percentile(100)
