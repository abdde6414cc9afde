"""Compare page: two runs with ``bench compare``'s verdicts, or two stacks metric by metric."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from dashboard.charts import VERDICT_COLOURS, ratio_spec
from dashboard.comparing import compare_frames, regression_frame
from dashboard.data import Snapshot, describe_run, load_comparison
from dashboard.queries import is_reference
from dashboard.views.common import number_columns, pick, pick_many, plain, verdict_style
from harness.compare import Comparison, Options
from harness.compare_render import load_line, method_line, speed_line

TITLE = "Compare"
MODES = ("Two runs", "Two stacks")


def render(snapshot: Snapshot) -> None:
    """Draws the page from the loaded snapshot."""
    st.title(TITLE)
    mode = st.radio("Compare", MODES, horizontal=True, key="cmp_mode") or MODES[0]
    if mode == MODES[0]:
        _render_runs(snapshot)
        return
    table, names = _stacks(snapshot)
    if table is None:
        return
    if table.empty:
        st.info(f"{plain(names[0])} and {plain(names[1])} have no cell in common.")
        return
    significant = table[table["significant"] == True]  # noqa: E712 (object column)
    better = int((significant["better"] == True).sum())  # noqa: E712
    worse = int((significant["better"] == False).sum())  # noqa: E712
    st.markdown(
        f"**A** = {plain(names[0])}  \n**B** = {plain(names[1])}  \n"
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


@st.cache_data(ttl=15, show_spinner="Comparing…")
def cached_comparison(
    url: str,
    base: tuple[int, ...],
    candidate: tuple[int, ...],
    threshold: float,
    across_devices: bool,
) -> Comparison:
    """:func:`dashboard.data.load_comparison`, cached for a few seconds per argument set."""
    options = Options(threshold=threshold, across_devices=across_devices)
    return load_comparison(url, base, candidate, options)


def _render_runs(snapshot: Snapshot) -> None:
    """Base and candidate runs (one or several a side): ratio, 95% CI and verdict per cell
    and metric."""
    runs = snapshot.runs
    if len(runs) < 2:
        st.info("Only one run so far: run a suite again (or on another machine) to compare runs.")
        return
    ids = [int(i) for i in runs["id"]]
    labels = {int(r["id"]): describe_run(r) for _, r in runs.iterrows()}
    left, right, band = st.columns([3, 3, 1])
    sides = [
        tuple(pick_many(label, ids, [default], key, container, labels.get))
        for label, default, key, container in (
            ("Base runs", ids[-2], "cmp_run_a", left),
            ("Candidate runs", ids[-1], "cmp_run_b", right),
        )
    ]
    base, candidate = sides
    percent = band.number_input(
        "Unchanged ±%", min_value=0.0, max_value=100.0, value=2.0, step=0.5, key="cmp_band"
    )
    threshold = float(percent) / 100.0
    if not base or not candidate:
        st.info("Pick at least one run a side; several a side show the noise between runs.")
        return
    if set(base) & set(candidate):
        st.warning("A run is on both sides: pick each run for one side only.")
        return
    comparison = cached_comparison(snapshot.url, base, candidate, threshold, False)
    if not comparison.pairs and comparison.only_base and comparison.only_candidate:
        across = cached_comparison(snapshot.url, base, candidate, threshold, True)
        if across.pairs:
            st.caption(
                "The runs used different devices: cells matched on model, stack and workload."
            )
            comparison = across
    _summary(comparison)
    if not comparison.rows:
        st.info(
            f"{plain(comparison.base)} and {plain(comparison.candidate)} have no comparable "
            "cell in common."
        )
        _notes(comparison)
        return
    frame = regression_frame(comparison)
    metrics = list(dict.fromkeys(frame["metric"]))
    by_metric, by_verdict = st.columns([3, 2])
    chosen = by_metric.multiselect("Metrics", metrics, default=metrics, key="cmp_metrics")
    verdicts = by_verdict.multiselect(
        "Verdicts", list(VERDICT_COLOURS), default=list(VERDICT_COLOURS), key="cmp_verdicts"
    )
    shown = frame[frame["metric"].isin(chosen) & frame["verdict"].isin(verdicts)]
    if chosen:
        default = "latency.tpot_s" if "latency.tpot_s" in chosen else chosen[0]
        metric = pick("Chart", chosen, default=default, key="cmp_chart_metric")
        rows = frame[frame["metric"] == metric]
        st.vega_lite_chart(ratio_spec(rows, metric, threshold), key="cmp_chart")
    styler = shown.style.apply(
        lambda row: [_verdict_style(row["verdict"]) if c == "verdict" else "" for c in row.index],
        axis=1,
    )
    config: dict[str, Any] = number_columns(shown)
    config["ratio"] = st.column_config.NumberColumn("ratio", format="%.3f")
    config["more_repeats"] = st.column_config.NumberColumn("more repeats", format="%d")
    st.dataframe(styler, hide_index=True, column_config=config, key="cmp_table")
    st.download_button(
        "Download CSV",
        shown.to_csv(index=False).encode(),
        file_name="compare.csv",
        mime="text/csv",
        key="cmp_csv",
    )
    _notes(comparison)


def _summary(comparison: Comparison) -> None:
    counts = ", ".join(f"**{n}** {v}" for v, n in comparison.counts().items() if n)
    differs = "; ".join(plain(d) for d in comparison.differences) or "nothing recorded"
    load, speed = load_line(comparison), speed_line(comparison)
    st.markdown(
        f"**Base** = {plain(comparison.base)}  \n**Candidate** = {plain(comparison.candidate)}  \n"
        f"Differs: {differs}  \n"
        + (f"Machine: {plain(load)}  \n" if load else "")
        + (f"Speed: {plain(speed)}  \n" if speed else "")
        + (counts or "")
    )
    st.caption(
        "Ratio = candidate / base with a 95% CI (bootstrap of the stored repeats, else the "
        "stored intervals; with several runs a side, a t interval over the runs). Unchanged: "
        "the CI lies inside the ± band; regressed / improved: entirely beyond it; "
        "inconclusive: it straddles an edge (more repeats would settle it). The database's "
        "other runs of the same software tell how far a value moves between runs, and the "
        "rows beyond the band are judged again at the level their number calls for. "
        + method_line(comparison)
    )


def _notes(comparison: Comparison) -> None:
    lines = [f"not comparable (other inputs): {p.label}" for p in comparison.mismatched] + [
        f"no longer ok: {p.label} ({p.candidate_status})" for p in comparison.broken
    ]
    lines += [
        f"only in {o.side}: {o.model} · {o.device} · {o.technique} · {o.workload}"
        for o in (*comparison.only_base, *comparison.only_candidate)
    ]
    if lines:
        with st.expander(f"{len(lines)} cells not compared"):
            st.markdown("\n".join(f"- {plain(line)}" for line in lines))


def _verdict_style(verdict: Any) -> str:
    colour = VERDICT_COLOURS.get(str(verdict))
    return f"color: {colour}; font-weight: 600" if colour else ""


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
        st.info(f"Only one stack ({plain(stacks[0])}) for this model, device and workload.")
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
