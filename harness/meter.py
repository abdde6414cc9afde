"""Statistics of repeated measurements, device synchronization and the clock.

The statistics part imports neither torch nor numpy, so summarizing samples is cheap in
any process (the runner, the dashboard); torch is imported only inside ``sync``.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

# 95% as an exact fraction, so the coverage test below is exact integer arithmetic.
_ALPHA_NUM, _ALPHA_DEN = 1, 20  # 1 - 0.95 = 1/20

# Up to this many samples the binomial tail is summed with exact integers; above it in
# floating point via log-gamma (exact integers grow as n bits per term).
_EXACT_MAX_N = 1000

#: Fewest samples for which an order-statistic interval reaches 95% coverage: with n=6,
#: [min, max] covers the median with probability 1 - 2·0.5^6 = 0.96875.
MIN_N_FOR_95 = 6


@dataclass(frozen=True)
class Stats:
    """Summary of repeated samples of one quantity (same unit as the samples).

    Attributes:
        median: Sample median.
        ci_low: Lower bound of the distribution-free confidence interval of the median
            (95% for n >= 6; see ``median_ci_ranks`` and ``median_ci_coverage``).
        ci_high: Upper bound of that interval.
        n: Number of samples.
        mean: Arithmetic mean.
        stdev: Sample standard deviation (n - 1 in the denominator); 0 when n < 2.
        cv: Coefficient of variation, stdev / |mean|; 0 when n < 2 or when all samples
            are equal, ``inf`` when the mean is 0 but the samples differ.
    """

    median: float
    ci_low: float
    ci_high: float
    n: int
    mean: float
    stdev: float
    cv: float


def summarize(samples: Sequence[float]) -> Stats:
    """Median with a 95% confidence interval, mean, standard deviation and CV of samples.

    The interval is the distribution-free order-statistic interval of ``median_ci_ranks``:
    it assumes only independent, identically distributed samples from a continuous
    distribution (no normality), which suits skewed latency distributions.

    Args:
        samples: One or more finite numbers, in any order.

    Returns:
        The summary. For fewer than 6 samples the interval is [min, max] and its
        coverage is below 95% (``median_ci_coverage(n)``: 1 - 2·0.5^n).

    Raises:
        ValueError: ``samples`` is empty or holds NaN or an infinity.
    """
    xs = sorted(float(x) for x in samples)
    n = len(xs)
    if n == 0:
        raise ValueError("summarize() needs at least one sample, got none")
    if not all(math.isfinite(x) for x in xs):
        raise ValueError(f"summarize() needs finite samples, got {list(samples)!r}")
    low_rank, high_rank = median_ci_ranks(n)
    mean = statistics.fmean(xs)
    stdev = statistics.stdev(xs) if n >= 2 else 0.0
    if stdev == 0.0:
        cv = 0.0
    elif mean == 0.0:
        cv = math.inf
    else:
        cv = stdev / abs(mean)
    return Stats(
        median=statistics.median(xs),
        ci_low=xs[low_rank - 1],
        ci_high=xs[high_rank - 1],
        n=n,
        mean=mean,
        stdev=stdev,
        cv=cv,
    )


def median_ci_ranks(n: int) -> tuple[int, int]:
    """1-based ranks (j, k) of the order statistics bounding a 95% CI of the median.

    Method (binomial / sign-test interval; Conover, *Practical Nonparametric Statistics*,
    3rd ed., 1999, §3.2 "confidence interval for a quantile"; Hahn & Meeker, *Statistical
    Intervals*, 1991, §5.2): for i.i.d. samples from a continuous distribution, the number
    B of samples below the population median is Binomial(n, 1/2), so the interval
    [x_(j), x_(k)] of sorted samples covers the median with probability
    P(j <= B < k) = 1 - 2·P(B <= j - 1) when k = n + 1 - j. We take the largest j (the
    narrowest symmetric interval) whose coverage is still >= 95%.

    Examples: n=6 → (1, 6); n=10 → (2, 9); n=20 → (6, 15).

    For n < 6 no interval reaches 95%; then (1, n), i.e. [min, max], is returned and its
    coverage is only ``median_ci_coverage(n)`` = 1 - 2·0.5^n (0 for n=1, 0.5, 0.75,
    0.875, 0.9375 for n=5).

    Args:
        n: Number of samples, >= 1.

    Returns:
        (j, k) with 1 <= j <= k <= n and k = n + 1 - j.
    """
    if n < 1:
        raise ValueError(f"median_ci_ranks() needs n >= 1, got {n}")
    j = _ranks_exact(n) if n <= _EXACT_MAX_N else _ranks_float(n)
    return j, n + 1 - j


def median_ci_coverage(n: int) -> float:
    """Coverage probability of the interval of ``median_ci_ranks(n)``.

    ``1 - 2·P(B <= j - 1)`` for B ~ Binomial(n, 1/2); >= 0.95 for n >= 6, and
    1 - 2·0.5^n below that.
    """
    j, _ = median_ci_ranks(n)
    if n <= _EXACT_MAX_N:
        return 1.0 - 2.0 * (sum(math.comb(n, i) for i in range(j)) / 2**n)
    return 1.0 - 2.0 * math.fsum(math.exp(_log_pmf(n, i)) for i in range(_float_start(n), j))


def _ranks_exact(n: int) -> int:
    """Largest j with 1 - 2·sum_{i<j} C(n,i)/2^n >= 95%, in exact integers (1 if none).

    The condition is rewritten as ``2·20·sum <= 2^n`` so no rounding can flip it.
    """
    total = 2**n
    tail = 0  # sum_{i < j} C(n, i) for the current candidate j
    j = 0
    term = 1  # C(n, j)
    while 2 * _ALPHA_DEN * (tail + term) <= _ALPHA_NUM * total:
        tail += term
        j += 1
        term = term * (n - j + 1) // j
    return max(j, 1)


def _ranks_float(n: int) -> int:
    """``_ranks_exact`` in floating point, for large n."""
    alpha = _ALPHA_NUM / _ALPHA_DEN
    j = _float_start(n)
    tail = 0.0
    while 2.0 * (tail + math.exp(_log_pmf(n, j))) <= alpha:
        tail += math.exp(_log_pmf(n, j))
        j += 1
    return max(j, 1)


def _log_pmf(n: int, i: int) -> float:
    """log P(B = i) for B ~ Binomial(n, 1/2)."""
    return math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + n * math.log(0.5)


def _float_start(n: int) -> int:
    """First rank worth summing: the binomial mass below n/2 - 10·sqrt(n)/2 (10 standard
    deviations) is below 1e-23, far under the 0.025 tail being located."""
    return max(0, math.floor(n / 2 - 5 * math.sqrt(n)))


def min_samples_for_percentile(percent: int) -> int:
    """Fewest samples worth reporting the ``percent``-th percentile of: ⌈100 / (100 − percent)⌉.

    Below it the expected number of samples beyond the percentile is under one, so the
    number is the sample maximum in disguise: p50 needs 2, p90 10, p95 20, p99 100 samples.

    Args:
        percent: The percentile, 1..99.
    """
    if not 0 < percent < 100:
        raise ValueError(f"min_samples_for_percentile() needs 0 < percent < 100, got {percent}")
    return -(-100 // (100 - percent))


def quantile_ci_ranks(n: int, q: float) -> tuple[int, int] | None:
    """1-based ranks (j, k) of the order statistics bounding a 95% CI of the q-quantile.

    The method of ``median_ci_ranks`` for any quantile (Conover 1999, §3.2): the number B
    of samples below the population q-quantile is Binomial(n, q), and [x_(j), x_(k)] covers
    the quantile with probability P(j <= B <= k - 1). The tails are cut equally: j is the
    largest rank with P(B <= j - 1) <= 2.5%, k the smallest with P(B >= k) <= 2.5%, so the
    coverage is at least 95%. For q = 1/2 these are the ranks of ``median_ci_ranks``.

    Returns:
        (j, k) with 1 <= j < k <= n, or None when the sample is too small to bound the
        quantile on one side: the upper bound of a p99 needs n >= 368 (0.99^n <= 2.5%).

    Raises:
        ValueError: n < 1 or q outside (0, 1).
    """
    if n < 1 or not 0.0 < q < 1.0:
        raise ValueError(f"quantile_ci_ranks() needs n >= 1 and 0 < q < 1, got n={n}, q={q}")
    tail = _ALPHA_NUM / _ALPHA_DEN / 2
    cdf = 0.0  # P(B <= i - 1) before step i
    j = 0
    k = None
    for i in range(n + 1):
        if cdf <= tail:
            j = i  # P(B <= i - 1) <= tail: rank i bounds the lower tail
        cdf += math.exp(_log_binom_pmf(n, i, q))
        if k is None and 1.0 - cdf <= tail:
            k = i + 1  # P(B >= i + 1) <= tail
            break
    if j < 1 or k is None or k > n:
        return None
    return j, k


def _log_binom_pmf(n: int, i: int, q: float) -> float:
    """log P(B = i) for B ~ Binomial(n, q)."""
    return (
        math.lgamma(n + 1)
        - math.lgamma(i + 1)
        - math.lgamma(n - i + 1)
        + i * math.log(q)
        + (n - i) * math.log1p(-q)
    )


def sync(device: str) -> None:
    """Wait until all queued work on ``device`` has finished.

    ``torch.cuda.synchronize(device)`` for ``cuda`` / ``cuda:N``; nothing for other
    devices, whose operations return only when done (CPU).
    """
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)


def clock(device: str) -> float:
    """Synchronize ``device``, then read ``time.perf_counter()`` (seconds, arbitrary zero).

    Only differences of two readings are meaningful.
    """
    sync(device)
    return time.perf_counter()
