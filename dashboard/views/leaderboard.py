"""Leaderboard page: one row per technique stack of a model, device and workload."""

from __future__ import annotations

from collections.abc import Mapping

import streamlit as st

from dashboard.data import Snapshot
from dashboard.queries import (
    KEY_METRICS,
    busiest_workload,
    leaderboard,
    measured_metrics,
    metrics_of_kind,
)
from dashboard.views.common import display_frame, number_columns, pick, style_deltas
from harness.results import MetricDef

TITLE = "Leaderboard"


def default_metrics(available: list[str], defs: Mapping[str, MetricDef]) -> list[str]:
    """Key metrics present, then the metrics whose definitions are of kind ``accuracy``."""
    keys = [m for m in KEY_METRICS if m in available]
    return keys + [m for m in metrics_of_kind(available, defs, "accuracy") if m not in keys]


def render(snapshot: Snapshot) -> None:
    """Draws the page from the loaded snapshot."""
    st.title(TITLE)
    cells = snapshot.cells
    if cells.empty:
        st.info("No cells match the filters in the sidebar.")
        return
    left, middle, right = st.columns(3)
    model = pick("Model", sorted(cells["model"].unique()), key="lb_model", container=left)
    here = cells[cells["model"] == model]
    device = pick("Device", sorted(here["device"].unique()), key="lb_device", container=middle)
    here = here[here["device"] == device]
    workloads = sorted(here["workload"].unique())
    workload = pick(
        "Workload", workloads, busiest_workload(here), key="lb_workload", container=right
    )

    available = measured_metrics(cells)
    metrics = st.multiselect(
        "Metrics", available, default=default_metrics(available, snapshot.defs), key="lb_metrics"
    )
    options = ["reference first", *metrics]
    c1, c2, c3 = st.columns([2, 2, 1])
    sort_by = pick("Sort by", options, key="lb_sort", container=c1)
    text = c2.text_input("Filter techniques", key="lb_filter", placeholder="e.g. quant")
    show_failed = c3.checkbox("Failed and skipped", value=True, key="lb_failed")

    table = leaderboard(
        cells,
        model,
        device,
        workload,
        metrics,
        sort_by=None if sort_by == "reference first" else sort_by,
        defs=snapshot.defs,
    )
    if text:
        table = table[table["technique"].str.contains(text, case=False, regex=False)]
    if not show_failed:
        table = table[table["status"] == "ok"]
    if not table["reference"].any():
        st.warning(
            f"No cell of the reference stack for {model} on {device} with this workload: "
            "add the suite's `reference:` stack (default `baseline`) to its techniques to "
            "get deltas."
        )
    st.caption(
        f"{len(table)} technique stacks. Δ% = 100·(value − reference)/reference for the same "
        "model, device and workload; green is better, red worse (direction from the metric "
        "definitions). Click a column header to sort. The CSV keeps stored units (bytes, s)."
    )
    shown = display_frame(table, snapshot.defs, metrics).drop(columns=["family"])
    shown = shown[[c for c in shown.columns if c != "reason"] + ["reason"]]
    st.dataframe(
        style_deltas(shown, snapshot.defs),
        hide_index=True,
        column_config=number_columns(shown),
        key="lb_table",
    )
    st.download_button(
        "Download CSV",
        table.to_csv(index=False).encode(),
        file_name=f"leaderboard-{model}-{device}.csv".replace("/", "_"),
        mime="text/csv",
        key="lb_csv",
    )
