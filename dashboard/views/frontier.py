"""Pareto frontier page: any two metrics, directions from the metric definitions."""

from __future__ import annotations

import streamlit as st

from dashboard.charts import format_value, frontier_spec
from dashboard.data import Snapshot
from dashboard.queries import (
    busiest_workload,
    default_axes,
    directed_metrics,
    frontier_frame,
    metrics_of_kind,
)
from dashboard.views.common import pick, plain

TITLE = "Pareto frontier"
FACETS = {"none": None, "model": "model", "device": "device"}


def render(snapshot: Snapshot) -> None:
    """Draws the page from the loaded snapshot."""
    st.title(TITLE)
    cells = snapshot.cells
    ok = cells[cells["status"] == "ok"] if not cells.empty else cells
    if ok.empty:
        st.info("No ok cells match the filters in the sidebar.")
        return
    c1, c2, c3, c4 = st.columns([3, 2, 2, 1])
    workloads = sorted(ok["workload"].unique())
    workload = pick("Workload", workloads, busiest_workload(ok), key="pf_workload", container=c1)
    here = ok[ok["workload"] == workload]
    all_models = sorted(here["model"].unique())
    models = c2.multiselect("Models", all_models, default=all_models, key="pf_models")
    all_devices = sorted(here["device"].unique())
    devices = c3.multiselect("Devices", all_devices, default=all_devices, key="pf_devices")
    several = "model" if len(all_models) > 1 else "device" if len(all_devices) > 1 else "none"
    facet_name = c4.radio(
        "Facet by", list(FACETS), index=list(FACETS).index(several), key="pf_facet"
    )
    facet = FACETS[facet_name or "none"]
    here = here[here["model"].isin(models) & here["device"].isin(devices)]

    metrics = directed_metrics(here, snapshot.defs)
    pairs = default_axes(metrics, snapshot.defs)
    if not pairs:
        st.info(
            "A frontier needs two measured metrics with definitions; these cells have "
            f"{len(metrics)}: {', '.join(metrics) or 'none'}."
        )
        return
    if not metrics_of_kind(metrics, snapshot.defs, "accuracy"):
        st.caption(
            "No accuracy metric measured yet: showing memory vs latency. "
            "Add an `accuracy:` section to the suite for accuracy frontiers."
        )
    for i, (x_default, y_default) in enumerate(pairs):
        left, right = st.columns(2)
        x = pick("X axis", metrics, default=x_default, key=f"pf_x{i}", container=left)
        y = pick("Y axis", metrics, default=y_default, key=f"pf_y{i}", container=right)
        if x == y:
            st.warning("Pick two different metrics.")
            continue
        points = frontier_frame(here, x, y, snapshot.defs, facet=facet)
        if points.empty:
            st.info(f"No ok cell has both {plain(x)} and {plain(y)}.")
            continue
        spec = frontier_spec(
            points,
            x,
            y,
            snapshot.defs,
            facet=facet,
            width=330 if facet else 640,
            height=300,
            columns=2,
        )
        st.vega_lite_chart(spec, key=f"pf_chart{i}")
        front = points[points["on_front"]]
        st.caption(
            f"{len(front)} of {len(points)} stacks on the front; faded triangles are dominated, "
            "crosses failed a quality gate of their suite (never on the front)."
        )
        table = front.assign(
            **{
                x: [
                    format_value(r.x, snapshot.defs[x].unit, r.x_low, r.x_high)
                    for r in front.itertuples()
                ],
                y: [
                    format_value(r.y, snapshot.defs[y].unit, r.y_low, r.y_high)
                    for r in front.itertuples()
                ],
            }
        )
        columns = ["technique", "model", "device", x, y]
        table = table[["panel", *columns] if facet else columns]
        with st.expander("Frontier points", expanded=i == 0):
            st.dataframe(table, hide_index=True, key=f"pf_table{i}")
