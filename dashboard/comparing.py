"""Query functions of the dashboard's compare page: two sides' cells side by side, and the
rows of ``bench compare`` as a frame. Pure like :mod:`dashboard.queries`: frames in, frames
out, unit-tested on hand-made frames.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from dashboard.queries import (
    CI_HIGH,
    CI_LOW,
    delta_is_better,
    latest_per_technique,
    measured_metrics,
)
from harness.compare import Comparison
from harness.results import MetricDef


def intervals_overlap(a_low: float, a_high: float, b_low: float, b_high: float) -> bool | None:
    """Whether two closed intervals overlap; None when a bound is missing."""
    bounds = (a_low, a_high, b_low, b_high)
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in bounds):
        return None
    return not (a_high < b_low or b_high < a_low)


def compare_frames(
    a: pd.DataFrame,
    b: pd.DataFrame,
    on: Sequence[str],
    defs: Mapping[str, MetricDef],
) -> pd.DataFrame:
    """Every metric of matching rows of ``a`` and ``b`` side by side.

    Rows are matched on the ``on`` columns (e.g. model, device, technique, workload). The
    change is ``100 · (b − a) / a``. A change is *significant* when both values carry a 95%
    confidence interval and the two intervals do not overlap (a conservative test); it is
    ``None`` when either interval is missing.

    Args:
        a: Cells of side A (normalised, with CI columns).
        b: Cells of side B.
        on: Columns that identify the same cell on both sides.
        defs: Metric definitions, for whether a change is better.

    Returns:
        Long frame: the ``on`` columns, ``metric``, ``unit``, ``a``, ``a_low``, ``a_high``,
        ``b``, ``b_low``, ``b_high``, ``change_%``, ``better`` (True/False/None) and
        ``significant`` (True/False/None); sorted by the ``on`` columns and metric.
    """
    on = list(on)
    columns = [*on, "metric", "unit", "a", "a_low", "a_high", "b", "b_low", "b_high"]
    columns += ["change_%", "better", "significant"]
    a = latest_per_technique(a, on)
    b = latest_per_technique(b, on)
    metrics = sorted(set(measured_metrics(a)) | set(measured_metrics(b)))
    merged = a.rename(columns={c: f"{c}|a" for c in a.columns if c not in on}).merge(
        b.rename(columns={c: f"{c}|b" for c in b.columns if c not in on}), on=on, how="inner"
    )
    records: list[dict[str, Any]] = []
    for _, row in merged.iterrows():
        for metric in metrics:
            side = {}
            for s in ("a", "b"):
                side[s] = tuple(
                    _num(row.get(f"{metric}{suffix}|{s}")) for suffix in ("", CI_LOW, CI_HIGH)
                )
            va, vb = side["a"][0], side["b"][0]
            if math.isnan(va) and math.isnan(vb):
                continue
            change = 100.0 * (vb - va) / va if va != 0.0 else math.nan
            overlap = intervals_overlap(*side["a"][1:], *side["b"][1:])
            record = {c: row[c] for c in on}
            record.update(
                metric=metric,
                unit=defs[metric].unit if metric in defs else "",
                a=va,
                a_low=side["a"][1],
                a_high=side["a"][2],
                b=vb,
                b_low=side["b"][1],
                b_high=side["b"][2],
            )
            record["change_%"] = change
            record["better"] = delta_is_better(vb - va, metric, defs)
            record["significant"] = None if overlap is None else not overlap
            records.append(record)
    frame = pd.DataFrame.from_records(records, columns=columns)
    for column in ("better", "significant"):
        frame[column] = frame[column].astype(object)
    return frame.sort_values([*on, "metric"], kind="stable").reset_index(drop=True)


#: Columns of :func:`regression_frame`.
REGRESSION_COLUMNS: tuple[str, ...] = (
    "model",
    "device",
    "technique",
    "workload",
    "metric",
    "unit",
    "base",
    "candidate",
    "ratio",
    "ci_low",
    "ci_high",
    "verdict",
    "more_repeats",
    "method",
    "note",
)


def regression_frame(comparison: Comparison, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """The rows of a ``bench compare`` result (:func:`harness.compare.compare`) as a frame.

    Args:
        comparison: The comparison of two runs.
        metrics: Only these metrics; None for all.

    Returns:
        :data:`REGRESSION_COLUMNS`: the cell's identity, the metric and its unit, base and
        candidate values (stored units), the ratio candidate / base with its 95% interval
        (NaN without one), the verdict, the repeats per side that would settle an
        inconclusive one (NaN otherwise), the interval's method and a note; in the
        comparison's order.
    """
    records = []
    for row in comparison.rows:
        if metrics is not None and row.metric not in metrics:
            continue
        ratio = row.ratio
        records.append(
            {
                "model": row.pair.model,
                "device": row.pair.device,
                "technique": row.pair.technique,
                "workload": row.pair.workload,
                "metric": row.metric,
                "unit": row.unit,
                "base": row.base.value if row.base else math.nan,
                "candidate": row.candidate.value if row.candidate else math.nan,
                "ratio": ratio.ratio if ratio else math.nan,
                "ci_low": ratio.low if ratio else math.nan,
                "ci_high": ratio.high if ratio else math.nan,
                "verdict": row.verdict,
                "more_repeats": float(row.repeats_needed) if row.repeats_needed else math.nan,
                "method": ratio.method if ratio else "",
                "note": row.note or "",
            }
        )
    return pd.DataFrame.from_records(records, columns=list(REGRESSION_COLUMNS))


def _num(value: Any) -> float:
    """A float, NaN for None/NA/non-numbers."""
    if value is None:
        return math.nan
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number
