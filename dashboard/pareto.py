"""Pareto frontier of a table of measurements.

A row is on the front when no other row is at least as good in every objective and strictly
better in one. Used by the dashboard's frontier page and by the static report.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def pareto_front(
    df: pd.DataFrame,
    minimize: Sequence[str] = (),
    maximize: Sequence[str] = (),
) -> pd.Series:
    """Marks the non-dominated rows of ``df``.

    Row ``a`` dominates row ``b`` when ``a`` is no worse than ``b`` in every objective and
    strictly better in at least one (lower for ``minimize`` columns, higher for ``maximize``
    columns). Identical rows do not dominate each other, so ties are all on the front. A row
    with NaN in any objective is never on the front and dominates nothing.

    Cost is O(n² · k) for n rows and k objectives, vectorised per row; the dashboard's
    tables have at most a few thousand rows.

    Args:
        df: One row per candidate; objective columns must be numeric.
        minimize: Columns where lower is better (e.g. ``memory.peak_alloc_bytes``).
        maximize: Columns where higher is better (e.g. ``accuracy.passkey``).

    Returns:
        A boolean Series aligned with ``df.index``: True for rows on the front.

    Raises:
        ValueError: No objective was given, a column is named twice, or a column is missing.
    """
    minimize, maximize = list(minimize), list(maximize)
    objectives = minimize + maximize
    if not objectives:
        raise ValueError("pareto_front: give at least one column in minimize or maximize")
    if len(set(objectives)) != len(objectives):
        raise ValueError(f"pareto_front: a column is named twice in {objectives}")
    missing = [c for c in objectives if c not in df.columns]
    if missing:
        raise ValueError(f"pareto_front: columns {missing} not in {list(df.columns)}")

    # Turn every objective into "lower is better".
    cost = np.column_stack(
        [pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=float) for c in minimize]
        + [-pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=float) for c in maximize]
    )
    valid = ~np.isnan(cost).any(axis=1)
    front = valid.copy()
    candidates = cost[valid]
    for i in np.flatnonzero(valid):
        no_worse = (candidates <= cost[i]).all(axis=1)
        better = (candidates < cost[i]).any(axis=1)
        if (no_worse & better).any():
            front[i] = False
    return pd.Series(front, index=df.index, dtype=bool, name="on_front")
