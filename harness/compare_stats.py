"""The statistics of ``bench compare``: the ratio of two measurements, its 95% interval, a verdict.

For one metric of one matched cell, ``ratio = candidate / base`` of the stored values
(medians for repeated metrics). Its 95% confidence interval comes, in order of preference:

1. ``bootstrap``: both values keep the samples they summarise (``Value.samples``, at least
   2 each) and each is their median (or their mean). Percentile bootstrap (Efron &
   Tibshirani, *An Introduction to the Bootstrap*, 1993, §13.3): each side is resampled with
   replacement, independently, ``resamples`` times (default 10,000); the 2.5th and 97.5th
   percentiles of the resampled statistic ratios bound the interval. Seeded: the generator
   is numpy's PCG64 seeded from ``seed`` and the pair's cell keys and metric name, so a
   comparison gives the same interval every time and regardless of which other metrics are
   shown. With few samples the interval is coarse (with 3 repeats a side it is close to
   [min/max, max/min]) and its coverage is below nominal: few repeats mean wide intervals,
   hence inconclusive verdicts, which is the honest answer.
2. ``intervals``: no samples, but both values carry a stored 95% interval (values measured
   before samples were kept, order-statistic intervals such as the ITL percentiles').
   The interval of the ratio is [c_low / b_high, c_high / b_low]; with independent sides
   it covers the ratio with probability at least 0.95² ≈ 90%.
3. ``exact``: values measured once without an interval that count rather than time
   (byte counts, perplexity, passkey accuracy): :func:`is_exact`. The interval is the
   ratio itself; any change beyond the threshold is real.
4. ``none``: anything else measured once (peak RSS, a speedup, a single timing): no
   interval; the verdict is inconclusive.

Methods 1 and 2 see only the noise *within* one run: its repeats run back to back in one
worker process. Between two processes a timing can move further (on a shared 2-core VM,
hqq 3-bit TPOT took 64-137 ms in six processes, each tight within itself). When a side
names several runs, every value that is not exact is compared by ``runs`` first
(:func:`runs_ci`): a pooled two-sample t interval over the runs' stored values, which
sees the noise between processes because each run is one sample of it. Other runs of the
same cells on the same software (``spread``) add to that pool, so that one run a side is
compared by ``runs`` too.

Verdicts (:func:`verdict`), with the unchanged band [1 − t, 1 + t] (t the threshold):
``unchanged`` when the interval lies inside the band (bounds included), ``regressed`` or
``improved`` when it lies entirely beyond one edge (by the metric's direction),
``inconclusive`` otherwise; ``changed`` replaces the last two for a metric of unknown
direction.

Every interval may be asked for at another ``level`` than 95%: a row judged again among
many (:func:`fcr_level`) takes the level's bootstrap percentiles or t quantile; a stored
95% interval is widened as if normal in the log. :func:`relative` divides a timing's ratio
by the machine's own. This module imports numpy and scipy only; nothing here reads a
database.
"""

from __future__ import annotations

import hashlib
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from scipy import stats

Method = Literal["runs", "bootstrap", "intervals", "exact", "none"]
Verdict = Literal["regressed", "improved", "unchanged", "inconclusive", "changed", "missing"]

#: Default number of bootstrap resamples per ratio.
RESAMPLES = 10_000
#: The intervals' coverage for one row on its own.
LEVEL = 0.95
#: Two-sided 95%: the bootstrap percentiles bounding the interval.
QUANTILES = (0.025, 0.975)
#: Relative slack on the band edges, so a ratio of exactly 1.05 is inside a 5% band.
EDGE_SLACK = 1e-12
#: An interval that would have to shrink more than this (a million times the samples) to
#: settle is reported as unsettleable: the ratio sits on the band's edge.
MIN_SHRINK = 1e-3
#: Units of timed or rate values: measured once, they have unknown noise (never exact).
TIMED_UNITS = frozenset({"s", "ms", "tok/s", "FLOP/s", "W", "J", "J/token", "runs"})
#: Metrics measured once whose value varies from run to run although their unit counts:
#: process-level memory (the one-time costs' peaks are the RSS probe's on a CPU) and ratios
#: of timings.
UNCERTAIN_METRICS = frozenset(
    {
        "memory.peak_rss_bytes",
        "memory.device_used_bytes",
        "cost.load_peak_bytes",
        "cost.prepare_peak_bytes",
        "latency.speedup",
    }
)


@dataclass(frozen=True)
class Measured:
    """One side's stored value of one metric.

    Attributes:
        value: the stored value (a median for repeated metrics); the geometric mean of
            ``runs`` when there are several and the value is not exact.
        low: lower bound of its stored 95% interval, NaN without one (or with runs).
        high: upper bound, NaN without one.
        n: how many samples it summarises (``Value.n``).
        samples: the stored samples (``Value.samples``), possibly empty.
        exact: it counts rather than times (:func:`is_exact`).
        runs: the stored value of every run of the side that measured it (this one first),
            when the side names several runs; empty otherwise.
    """

    value: float
    low: float = math.nan
    high: float = math.nan
    n: int = 1
    samples: tuple[float, ...] = ()
    exact: bool = False
    runs: tuple[float, ...] = ()

    @property
    def has_interval(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)


@dataclass(frozen=True)
class Ratio:
    """``candidate / base`` with its 95% interval and how it was obtained.

    Attributes:
        ratio: the point ratio of the stored values; NaN when undefined (a non-positive
            value).
        low: lower bound of the interval; NaN without one.
        high: upper bound; NaN without one.
        method: ``runs``, ``bootstrap``, ``intervals``, ``exact`` or ``none`` (module
            docstring).
        n: the smaller side's sample count (for ``runs``: its run count), for
            :func:`repeats_to_settle`.
        df: the degrees of freedom of a ``runs`` interval (all runs less two, and those of
            other runs' ``spread``); 0 otherwise.
        spread_df: how many of ``df`` came from other runs' ``spread``.
    """

    ratio: float
    low: float
    high: float
    method: Method
    n: int
    df: int = 0
    spread_df: int = 0


def is_exact(name: str, unit: str, n: int, has_interval: bool, samples: int) -> bool:
    """Whether a value measured once is exact: it counts (bytes, tokens, a perplexity, a
    share of passkeys) rather than times, so the same inputs and software give the same
    number. Timed and rate units (:data:`TIMED_UNITS`) and :data:`UNCERTAIN_METRICS` are
    never exact; neither is a value with an interval or samples (its noise is known)."""
    if has_interval or samples >= 2:
        return False
    return unit not in TIMED_UNITS and name not in UNCERTAIN_METRICS


def statistic(value: float, samples: Sequence[float]) -> Literal["median", "mean"] | None:
    """Which statistic of ``samples`` the stored ``value`` is: ``median``, ``mean``, or None
    (not recognised: then the samples are not resampled)."""
    xs = [x for x in samples if math.isfinite(x)]
    if len(xs) < 2 or len(xs) != len(samples):
        return None
    if math.isclose(statistics.median(xs), value, rel_tol=1e-9, abs_tol=1e-300):
        return "median"
    if math.isclose(statistics.fmean(xs), value, rel_tol=1e-9, abs_tol=1e-300):
        return "mean"
    return None


def pair_seed(seed: int, *parts: str) -> int:
    """A 64-bit seed from the user's ``seed`` and the pair's names (cell keys, metric)."""
    digest = hashlib.sha256("\0".join((str(seed), *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def ratio_ci(
    base: Measured,
    candidate: Measured,
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
    level: float = LEVEL,
    spread: tuple[float, int] = (0.0, 0),
) -> Ratio:
    """The ratio ``candidate / base`` and its interval (module docstring, methods 1-4).

    Args:
        base: the base side's value.
        candidate: the candidate side's value.
        resamples: bootstrap resamples.
        seed: seeds the bootstrap (use :func:`pair_seed`).
        level: the interval's coverage; above 0.95 for rows selected among many
            (:func:`fcr_level`). Stored 95% intervals (``intervals``) are widened to it as
            if normal in the log.
        spread: what other runs say of the spread between runs: the sum of the squared
            deviations of their log values from their group's mean, and its degrees of
            freedom (:func:`runs_ci`). With some, values that are not exact are compared
            by ``runs`` even with one run a side.
    """
    n = min(max(base.n, len(base.samples)), max(candidate.n, len(candidate.samples)))
    if base.value <= 0 or candidate.value <= 0:
        if base.value == 0 and candidate.value == 0:
            return Ratio(1.0, 1.0, 1.0, "exact", n)
        return Ratio(math.nan, math.nan, math.nan, "none", n)
    if (base.runs or candidate.runs or spread[1]) and not (base.exact and candidate.exact):
        by_runs = runs_ci(
            base.runs or (base.value,),
            candidate.runs or (candidate.value,),
            level=level,
            spread=spread,
        )
        if by_runs is not None:
            return by_runs
    point = candidate.value / base.value
    kind_b, kind_c = (
        statistic(base.value, base.samples),
        statistic(candidate.value, candidate.samples),
    )
    if kind_b is not None and kind_b == kind_c:
        low, high = _bootstrap(base.samples, candidate.samples, kind_b, resamples, seed, level)
        if math.isfinite(low) and math.isfinite(high):
            return Ratio(point, min(low, point), max(high, point), "bootstrap", n)
    if base.exact and candidate.exact:
        return Ratio(point, point, point, "exact", n)
    b_low, b_high = _bounds(base)
    c_low, c_high = _bounds(candidate)
    if math.isfinite(b_low) and math.isfinite(c_low) and b_low > 0 and c_low > 0:
        widen = _z(level) / _z(LEVEL)
        low = point * (c_low / b_high / point) ** widen
        high = point * (c_high / b_low / point) ** widen
        return Ratio(point, low, high, "intervals", n)
    return Ratio(point, math.nan, math.nan, "none", n)


def _z(level: float) -> float:
    return float(stats.norm.ppf(0.5 + level / 2))


def t_quantile(level: float, df: int) -> float:
    """The two-sided ``level`` quantile of Student's t with ``df`` degrees of freedom
    (12.706 for 95% and one degree)."""
    return float(stats.t.ppf(0.5 + level / 2, df))


def runs_ci(
    base: Sequence[float],
    candidate: Sequence[float],
    *,
    level: float = LEVEL,
    spread: tuple[float, int] = (0.0, 0),
) -> Ratio | None:
    """The ratio and its interval (95% unless ``level`` says) from several runs a side, or
    None when the runs cannot give one (no degree of freedom: fewer than three runs in all
    and no ``spread``, or a non-positive value).

    Each run's stored value is one sample of what a run measures, noise between processes
    included. On log values: the ratio is exp(mean(log c) − mean(log b)), the ratio of the
    geometric means; the interval is the pooled two-sample t interval, exp(d ± t₀.₉₇₅(k_b +
    k_c − 2) · s · √(1/k_b + 1/k_c)) with s² the pooled variance of the log values around
    their side's mean (both sides share the spread: the same cells on the same machine).
    ``spread`` adds other runs' squares and degrees of freedom to the pool: runs of the
    same cells on the same software, each group around its own mean, so that a side of
    one run still gets the spread between runs.
    """
    if not (base and candidate) or min(base) <= 0 or min(candidate) <= 0:
        return None
    logs_b, logs_c = np.log(np.asarray(base, float)), np.log(np.asarray(candidate, float))
    df = len(logs_b) + len(logs_c) - 2 + spread[1]
    if df < 1:
        return None
    squares = float(((logs_b - logs_b.mean()) ** 2).sum() + ((logs_c - logs_c.mean()) ** 2).sum())
    squares += spread[0]
    scale = math.sqrt(squares / df) * math.sqrt(1 / len(logs_b) + 1 / len(logs_c))
    half = t_quantile(level, df) * scale
    d = float(logs_c.mean() - logs_b.mean())
    n = min(len(logs_b), len(logs_c))
    low, high = math.exp(d - half), math.exp(d + half)
    return Ratio(math.exp(d), low, high, "runs", n, df, spread[1])


def fcr_level(selected: int, noisy: int, alpha: float = 1 - LEVEL) -> float:
    """The coverage that the false coverage-rate correction asks of the intervals of the
    ``selected`` rows among ``noisy`` ones: 1 − R·α/m (Benjamini & Yekutieli, "False
    Discovery Rate-Adjusted Multiple Confidence Intervals for Selected Parameters", JASA
    100, 2005). With every row selected, or none, it is one row's level."""
    if selected <= 0 or noisy <= 0:
        return 1 - alpha
    return 1 - min(selected, noisy) * alpha / noisy


def relative(ratio: Ratio, machine: Ratio, power: int) -> Ratio:
    """``ratio`` relative to the machine's own ratio: divided by ``machine ** power``.

    ``power`` is 1 for a time and -1 for a rate (a machine 10% slower takes ×1.1 the time
    and does ×1/1.1 the work per second). In logs the machine's log ratio is subtracted and
    each half-width of the interval becomes the root of the sum of the squares of the two
    (independent estimates). A ratio without a machine interval is returned as it is.
    """
    if not (ratio.ratio > 0 and machine.ratio > 0 and machine.low > 0):
        return ratio
    m = power * math.log(machine.ratio)
    m_ends = sorted(power * math.log(b) for b in (machine.low, machine.high))
    x = math.log(ratio.ratio)
    if not ratio.low > 0:
        return replace(ratio, ratio=math.exp(x - m))
    down = math.hypot(x - math.log(ratio.low), m - m_ends[0])
    up = math.hypot(math.log(ratio.high) - x, m_ends[1] - m)
    centre = x - m
    return replace(
        ratio, ratio=math.exp(centre), low=math.exp(centre - down), high=math.exp(centre + up)
    )


def _bounds(side: Measured) -> tuple[float, float]:
    """The side's interval: its stored one, the point for an exact value, else NaN."""
    if side.has_interval and side.low <= side.value <= side.high:
        return side.low, side.high
    if side.exact:
        return side.value, side.value
    return math.nan, math.nan


def _bootstrap(
    base: Sequence[float],
    candidate: Sequence[float],
    kind: Literal["median", "mean"],
    resamples: int,
    seed: int,
    level: float = LEVEL,
) -> tuple[float, float]:
    """Percentile bootstrap bounds of stat(candidate*) / stat(base*) at ``level``; NaN when
    a resampled base statistic is not positive."""
    rng = np.random.default_rng(seed)
    stat = np.median if kind == "median" else np.mean

    def resampled(xs: Sequence[float]) -> np.ndarray:
        data = np.asarray(xs, dtype=float)
        picks = rng.integers(0, len(data), size=(resamples, len(data)))
        out: np.ndarray = stat(data[picks], axis=1)
        return out

    b, c = resampled(base), resampled(candidate)
    if np.any(b <= 0) or np.any(c <= 0):
        return math.nan, math.nan
    low, high = np.quantile(c / b, ((1 - level) / 2, (1 + level) / 2))
    return float(low), float(high)


def verdict(ratio: Ratio, threshold: float, higher_is_better: bool | None) -> Verdict:
    """The verdict on ``ratio`` for the band [1 − threshold, 1 + threshold] (module docstring).

    Args:
        ratio: the ratio and its interval; without an interval, ``inconclusive``.
        threshold: the band's half-width as a fraction (0.05 for ±5%).
        higher_is_better: the metric's direction; None when unknown (then ``changed``
            instead of improved or regressed).
    """
    low, high = ratio.low, ratio.high
    if not (math.isfinite(low) and math.isfinite(high)):
        return "inconclusive"
    lower_edge = (1.0 - threshold) * (1.0 - EDGE_SLACK)
    upper_edge = (1.0 + threshold) * (1.0 + EDGE_SLACK)
    if low >= lower_edge and high <= upper_edge:
        return "unchanged"
    if low > upper_edge or high < lower_edge:
        if higher_is_better is None:
            return "changed"
        went_up = low > upper_edge
        return "improved" if went_up == higher_is_better else "regressed"
    return "inconclusive"


def repeats_to_settle(ratio: Ratio, threshold: float, level: float = LEVEL) -> int | None:
    """More repeats per side after which an inconclusive interval would likely settle.

    Assumes the spread stays as measured, so the interval's half-widths (in log ratio)
    shrink as 1/√n: the interval must shrink by a factor s until it stops straddling the
    band edge nearest to the ratio, which takes n / s² samples. A ``runs`` interval's t
    quantile (at ``level``) shrinks too as runs are added: there, the fewest more runs m a
    side with t(df + 2m) · √(1/(k_b + m) + 1/(k_c + m)) ≤ s · t(df) · √(1/k_b + 1/k_c).
    None when no number of repeats can settle it: the ratio sits on an edge (the interval
    would have to shrink below ``MIN_SHRINK`` of its width), or there is no interval.

    Returns:
        ⌈n / s²⌉ − n (at least 1), for the smaller side's n; for ``runs``, m.
    """
    if ratio.method not in ("runs", "bootstrap", "intervals") or not ratio.low > 0:
        return None
    x, low, high = math.log(ratio.ratio), math.log(ratio.low), math.log(ratio.high)
    edges = (math.log1p(-threshold), math.log1p(threshold))
    factors = []
    for edge in edges:
        if low < edge < high:
            if x > edge:
                factors.append((x - edge) / (x - low) if x > low else 0.0)
            elif x < edge:
                factors.append((edge - x) / (high - x) if high > x else 0.0)
            else:
                factors.append(0.0)
    if not factors:
        return None
    s = min(factors)
    if s <= MIN_SHRINK:
        return None
    n = max(ratio.n, 1)
    if ratio.method == "runs" and ratio.df > 0:
        return _more_runs(s, n, ratio.df - ratio.spread_df + 2 - n, ratio.spread_df, level)
    return max(1, math.ceil(n / (s * s)) - n)


def _more_runs(shrink: float, few: int, many: int, extra: int, level: float) -> int:
    """The fewest more runs a side that shrink a runs interval by ``shrink``
    (:func:`repeats_to_settle`; ``extra``: the other runs' degrees of freedom): a
    bisection, the half-width falling as runs are added."""

    def width(more: int) -> float:
        df = few + many - 2 + extra + 2 * more
        return t_quantile(level, df) * math.sqrt(1 / (few + more) + 1 / (many + more))

    goal, low, high = shrink * width(0), 0, 1
    while width(high) > goal:
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if width(middle) <= goal else (middle, high)
    return high
