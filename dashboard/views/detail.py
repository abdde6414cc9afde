"""Run and cell detail page: environment, statuses and every stored metric of a cell."""

from __future__ import annotations

import json
from datetime import datetime

import pandas as pd
import streamlit as st

from dashboard.charts import format_value
from dashboard.data import Snapshot, cell_detail, describe_run, run_detail
from dashboard.queries import failed_cells, flatten, status_summary
from dashboard.views.common import cached_snapshot, pick, plain

TITLE = "Run and cell detail"


def render(snapshot: Snapshot) -> None:
    """Draws the page from the loaded snapshot."""
    st.title(TITLE)
    runs = snapshot.runs
    ids = [int(i) for i in runs["id"]]
    labels = {int(r["id"]): describe_run(r) for _, r in runs.iterrows()}
    requested = st.query_params.get("run")
    default = int(requested) if requested and requested.isdigit() else ids[-1]
    run_id = pick("Run", ids, default=default, key="cd_run", format_func=labels.get)
    run = run_detail(snapshot.url, run_id)
    cells = cached_snapshot(snapshot.url, run_id, None).cells

    st.subheader("Run")
    info = {
        "suite": f"{run['suite_name']} ({run['suite_path']}, hash {run['suite_hash'][:12]})",
        "machine": f"{run['hostname']} · {run['cpu']} ×{run['cpu_count']} · "
        f"{run['ram_bytes'] / 2**30:.1f} GiB RAM",
        "gpu": f"{run['gpu'] or 'none'} ×{run['gpu_count']} (driver {run['driver'] or '—'})",
        "harness": f"{run['harness_version']} (git {run['git_commit'] or 'unknown'})",
        "started": _when(run["started_at"]),
        "ended": _when(run["ended_at"]) or "unfinished (interrupted or still running)",
    }
    st.table(pd.DataFrame({"": list(info), "value": list(info.values())}).set_index(""))
    left, right = st.columns([1, 3])
    left.dataframe(status_summary(cells), hide_index=True, key="cd_status")
    with right.expander("Environment (library versions, settings)"):
        st.dataframe(flatten(run["environment"] or {}), hide_index=True, key="cd_env")
    failed = failed_cells(cells)
    if not failed.empty:
        st.subheader("Skipped and failed cells")
        st.dataframe(failed, hide_index=True, key="cd_failed")

    st.subheader("Cell")
    if cells.empty:
        st.info("This run recorded no cell yet.")
        return
    keys = list(cells["cell_key"])
    names = {
        r.cell_key: f"{r.technique} · {r.model} · {r.device} · {r.workload} · {r.status}"
        for r in cells.itertuples()
    }
    wanted = st.query_params.get("cell")
    key = pick("Cell", keys, default=wanted, key="cd_cell", format_func=names.get)
    cell, metrics = cell_detail(snapshot.url, run_id, key)
    status = cell.get("status", "?")
    technique, model, device = (plain(cell.get(k)) for k in ("technique", "model", "device"))
    text = f"**{technique}** on {model} / {device}: "
    text += f"status `{status}`, {cell.get('duration_s', 0.0):.1f} s, key `{key}`"
    if status == "ok":
        st.success(text)
    elif status == "skipped":
        st.warning(f"{text}  \nreason: {plain(cell.get('reason'))}")
    else:
        st.error(f"{text}  \nreason: {plain(cell.get('reason'))}")
    shown = metrics.assign(
        shown=[format_value(r.value, r.unit, r.ci_low, r.ci_high) for r in metrics.itertuples()]
    )[["name", "shown", "value", "unit", "ci_low", "ci_high", "n", "source", "reason"]]
    st.dataframe(
        shown.rename(columns={"shown": "value [95% CI]", "value": "stored value"}),
        hide_index=True,
        key="cd_metrics",
    )
    with st.expander("Stack and workload (as stored)"):
        st.code(
            json.dumps({"stack": cell.get("stack"), "workload": cell.get("workload")}, indent=2),
            language="json",
        )


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment is not None else ""
