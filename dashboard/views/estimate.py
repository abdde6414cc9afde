"""Measured vs predicted page: each cell beside its estimate, the roofline, the OOM boundary.

The predictions are the ones stored with each cell (``estimate.*``, docs/estimate.md); a
stack without an estimate shows "no estimate", never a number.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard.charts import boundary_spec, roofline_spec
from dashboard.data import Snapshot
from dashboard.estimates import (
    BOUNDARY_AXES,
    boundary_frame,
    prediction_frame,
    roofline_points,
    roofs,
)

TITLE = "Measured vs predicted"
NO_ESTIMATE = "no estimate"
SEARCH_HINT = "search: {max_prompt_tokens: {up_to: 32768}}"


def missing_text(column: str) -> str:
    """What a missing number of ``column`` means."""
    if column == "measured":  # a boundary search
        return "nothing fitted"
    predicted = column.endswith((" predicted", " ratio")) or column.startswith("roofline.")
    return NO_ESTIMATE if predicted or column == "predicted" else "—"


def shown(frame: pd.DataFrame) -> pd.DataFrame:
    """Numbers with 4 significant digits, a missing one as what it means (never 0)."""
    out = frame.copy()
    for column in out.columns:
        if pd.api.types.is_numeric_dtype(out[column]):
            gap = missing_text(str(column))
            out[column] = [gap if pd.isna(v) else f"{v:.4g}" for v in out[column]]
    return out


def render(snapshot: Snapshot) -> None:
    """Draws the page from the loaded snapshot."""
    st.title(TITLE)
    cells = snapshot.cells
    table = prediction_frame(cells)
    if table.empty:
        st.info(
            "No ok cell carries a prediction yet: cells measured by this version of bench "
            "store their estimate (`estimate.*`). Run a suite, e.g. `bench run "
            "suites/smoke.yaml`."
        )
    else:
        st.caption(
            "Each ratio is measured / predicted; a roofline fraction is predicted time at the "
            "roofline / measured time (1 = at the hardware's limit). docs/estimate.md"
        )
        st.dataframe(shown(table), hide_index=True, key="es_table")
        points = roofline_points(cells)
        if points.empty:
            st.info("No cell has both a predicted operation count and a measured time.")
        else:
            st.vega_lite_chart(roofline_spec(points, roofs(cells)), key="es_roofline")

    st.subheader("Largest context and batch that fit")
    found = boundary_frame(cells)
    if found.empty:
        st.info(
            "No out-of-memory boundary search in these results. Add a `search:` key to a "
            f"suite, e.g. `{SEARCH_HINT}`, with `policy: {{memory_limit_gib: ...}}` to search "
            "under a cap (docs/estimate.md)."
        )
        return
    for axis in BOUNDARY_AXES:
        rows = found[found["axis"] == axis]
        if rows.empty:
            continue
        st.vega_lite_chart(boundary_spec(rows, axis), key=f"es_boundary_{axis}")
        st.dataframe(
            shown(rows.drop(columns=["axis"])), hide_index=True, key=f"es_boundary_t_{axis}"
        )
