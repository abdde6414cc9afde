"""Compare page: two runs, or two technique stacks, metric by metric."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard.data import Snapshot, describe_run
from dashboard.queries import compare_frames, is_reference
from dashboard.views.common import cached_snapshot, number_columns, pick, verdict_style

TITLE = "Compare"
MODES = ("Two runs", "Two stacks")


def render(snapshot: Snapshot) -> None:
    """Draws the page from the loaded snapshot."""
    st.title(TITLE)
    mode = st.radio("Compare", MODES, horizontal=True, key="cmp_mode") or MODES[0]
    if mode == MODES[0]:
        table, names = _runs(snapshot)
    else:
        table, names = _stacks(snapshot)
    if table is None:
        return
    if table.empty:
        st.info(f"{names[0]} and {names[1]} have no cell in common.")
        return
    significant = table[table["significant"] == True]  # noqa: E712 (object column)
    better = int((significant["better"] == True).sum())  # noqa: E712
    worse = int((significant["better"] == False).sum())  # noqa: E712
    st.markdown(
        f"**A** = {names[0]}  \n**B** = {names[1]}  \n"
        f"{len(table)} metric values compared; **{len(significant)}** changed significantly "
        f"({better} better, {worse} worse). Significant = the two 95% confidence intervals "
        "do not overlap; blank when a value has no interval."
    )
    only = st.checkbox("Only significant changes", key="cmp_only")
    shown = significant if only else table
    styler = shown.style.apply(
        lambda row: [
            verdict_style(row["better"]) if c in ("better", "change_%") else "" for c in row.index
        ],
        axis=1,
    )
    st.dataframe(styler, hide_index=True, column_config=number_columns(shown), key="cmp_table")
    st.download_button(
        "Download CSV",
        shown.to_csv(index=False).encode(),
        file_name="compare.csv",
        mime="text/csv",
        key="cmp_csv",
    )


def _runs(snapshot: Snapshot) -> tuple[pd.DataFrame | None, tuple[str, str]]:
    runs = snapshot.runs
    if len(runs) < 2:
        st.info("Only one run so far: run a suite again (or on another machine) to compare runs.")
        return None, ("", "")
    ids = [int(i) for i in runs["id"]]
    labels = {int(r["id"]): describe_run(r) for _, r in runs.iterrows()}
    left, right = st.columns(2)
    a = pick("Run A", ids, default=ids[-2], key="cmp_run_a", container=left, format_func=labels.get)
    b = pick(
        "Run B", ids, default=ids[-1], key="cmp_run_b", container=right, format_func=labels.get
    )
    cells_a = cached_snapshot(snapshot.url, a, None).cells
    cells_b = cached_snapshot(snapshot.url, b, None).cells
    on = ["model", "device", "technique", "workload"]
    table = compare_frames(cells_a, cells_b, on, snapshot.defs)
    if table.empty and set(cells_a["device"]) != set(cells_b["device"]):
        st.caption("The runs used different devices: cells matched on model, stack and workload.")
        on.remove("device")
        table = compare_frames(cells_a, cells_b, on, snapshot.defs)
    return table, (labels[a], labels[b])


def _stacks(snapshot: Snapshot) -> tuple[pd.DataFrame | None, tuple[str, str]]:
    cells = snapshot.cells
    if cells.empty:
        st.info("No cells match the filters in the sidebar.")
        return None, ("", "")
    c1, c2, c3 = st.columns(3)
    model = pick("Model", sorted(cells["model"].unique()), key="cmp_model", container=c1)
    here = cells[cells["model"] == model]
    device = pick("Device", sorted(here["device"].unique()), key="cmp_device", container=c2)
    here = here[here["device"] == device]
    workload = pick("Workload", sorted(here["workload"].unique()), key="cmp_workload", container=c3)
    here = here[here["workload"] == workload]
    stacks = sorted(here["technique"].unique())
    if len(stacks) < 2:
        st.info(f"Only one stack ({stacks[0]}) for this model, device and workload.")
        return None, ("", "")
    ok = set(here.loc[here["status"] == "ok", "technique"])
    references = set(here.loc[is_reference(here), "technique"])
    reference = next(iter(sorted(references)), stacks[0])
    others = [s for s in stacks if s != reference and s in ok] or [
        s for s in stacks if s != reference
    ]
    left, right = st.columns(2)
    a = pick("Stack A", stacks, default=reference, key="cmp_stack_a", container=left)
    b = pick("Stack B", stacks, default=others[0], key="cmp_stack_b", container=right)
    on = ["model", "device", "workload"]
    table = compare_frames(
        here[here["technique"] == a], here[here["technique"] == b], on, snapshot.defs
    )
    return table, (a, b)
