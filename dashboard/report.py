"""``bench report``: the leaderboards and frontier charts in one static HTML file.

The file needs no server and no network to view. The charts are the dashboard's Vega-Lite
specifications, embedded as JSON and drawn by the Vega libraries inlined into the page
(from ``vl-convert-python``, about 0.9 MB); each chart also carries a hand-written SVG
rendering in ``<noscript>``. Without ``vl-convert-python`` the charts are the SVG
renderings only.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import Literal

import pandas as pd
from sqlalchemy.engine import make_url

from dashboard.charts import VEGA_LITE_VERSION, axis_title, format_value, frontier_spec
from dashboard.data import Snapshot, describe_run, load_snapshot
from dashboard.queries import (
    DELTA_SUFFIX,
    EMPTY_DB_HINT,
    KEY_METRICS,
    default_axes,
    delta_is_better,
    directed_metrics,
    failed_cells,
    frontier_frame,
    leaderboard,
    measured_metrics,
    metrics_of_kind,
)
from dashboard.svg import frontier_svg
from harness.errors import BenchError
from harness.results import MetricDef

Renderer = Literal["auto", "vega", "svg"]
REPORT_MODE = 0o644  # mkstemp creates 0600; a report is meant to be shared
TARGET = "target"  # synthetic facet column: "model · device"

CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto;
       max-width: 1400px; padding: 0 1rem; color: #1f2328; }
h1 { margin-bottom: 0.2rem; } .meta { color: #59636e; margin-top: 0; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; font-size: 13px; }
th, td { border-bottom: 1px solid #d1d9e0; padding: 4px 8px; text-align: right; }
th { background: #f6f8fa; position: sticky; top: 0; }
td.text, th.text { text-align: left; }
.better { color: #1a7f37; } .worse { color: #cf222e; } .muted { color: #8c959f; }
.chart { margin: 1rem 0 2rem; } .legend-item { margin-right: 1rem; font-size: 12px; }
.swatch { display: inline-block; width: 10px; height: 10px; margin-right: 4px;
          border-radius: 50%; }
.svg-chart svg { margin-right: 1rem; }
"""


def write_report(
    db_url: str, path: Path, run_id: int | None = None, *, renderer: Renderer = "auto"
) -> Path:
    """Writes the static report of a run (or of the latest result of every cell).

    The file is written under a temporary name beside ``path`` and renamed into place, so
    a failure never leaves half a report.

    Args:
        db_url: SQLAlchemy URL of the results database (opened read-only).
        path: The HTML file to write; its folder is created.
        run_id: Only this run; None for the latest result of every cell over all runs.
        renderer: ``vega`` (inline Vega libraries; needs ``vl-convert-python``), ``svg``
            (hand-written SVG only) or ``auto`` (vega when available).

    Returns:
        ``path``.

    Raises:
        BenchError: The database holds no results (the message names the command that
            fills it), the run does not exist, or the file cannot be written.
    """
    snapshot = load_snapshot(db_url, run_id=run_id)
    if snapshot.empty or snapshot.cells.empty:
        where = make_url(db_url).render_as_string(hide_password=True)
        raise BenchError(f"{where}: no results to report yet. Run '{EMPTY_DB_HINT}' first.")
    html = build_report(snapshot, run_id, renderer=renderer)
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(html)
        os.chmod(temp, REPORT_MODE)
        os.replace(temp, path)
    except OSError as exc:
        raise BenchError(
            f"{path}: cannot write the report ({exc.strerror}). Pass -o PATH."
        ) from exc
    return path


def build_report(snapshot: Snapshot, run_id: int | None, *, renderer: Renderer = "auto") -> str:
    """The report's HTML text for already loaded data (see :func:`write_report`)."""
    bundle = _vega_bundle() if renderer in ("auto", "vega") else None
    if renderer == "vega" and bundle is None:
        raise BenchError(
            "report renderer 'vega' needs vl-convert-python: pip install 'bench[dashboard]', "
            "or use the svg renderer."
        )
    cells, defs = snapshot.cells, snapshot.defs
    runs = snapshot.runs
    shown_runs = runs[runs["id"].isin(cells["run_id"].unique())]
    if run_id is not None:
        source = f"run {describe_run(runs[runs['id'] == run_id].iloc[0])}"
    else:
        source = f"latest result of every cell over {len(shown_runs)} run(s)"
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    where = make_url(snapshot.url).render_as_string(hide_password=True)

    body = [
        "<h1>bench report</h1>",
        f'<p class="meta">{escape(source)} · database <code>{escape(where)}</code> · '
        f"generated {generated}</p>",
        "<h2>Runs</h2>",
        _table(
            pd.DataFrame(
                {
                    "run": shown_runs["id"],
                    "suite": shown_runs["suite_name"],
                    "machine": shown_runs["machine"],
                    "gpu": shown_runs["gpu"].fillna("—"),
                    "started (UTC)": shown_runs["started_at"].dt.strftime("%Y-%m-%d %H:%M"),
                    "cells": shown_runs["cells"],
                    "ok": shown_runs["ok"],
                    "failed": shown_runs["failed"],
                }
            ),
            text_columns=("suite", "machine", "gpu", "started (UTC)"),
        ),
    ]
    chart_id = 0
    for workload in sorted(cells["workload"].unique()):
        here = cells[cells["workload"] == workload].copy()
        here[TARGET] = here["model"] + " · " + here["device"]
        body.append(f"<h2>Workload <code>{escape(workload)}</code></h2>")
        pairs = default_axes(directed_metrics(here[here["status"] == "ok"], defs), defs)
        facet = TARGET if here[TARGET].nunique() > 1 else None
        for x, y in pairs:
            points = frontier_frame(here, x, y, defs, facet=facet)
            if points.empty:
                continue
            chart_id += 1
            body.append(_chart(points, x, y, defs, facet, chart_id, bundle is not None))
        for (model, device), _ in here.groupby(["model", "device"], sort=True):
            body.append(f"<h3>Leaderboard: {escape(model)} on {escape(device)}</h3>")
            body.append(_leaderboard_html(here, model, device, workload, defs))
    failed = failed_cells(cells)
    if not failed.empty:
        body.append("<h2>Skipped and failed cells</h2>")
        body.append(_table(failed, text_columns=tuple(failed.columns)))
    body.append("<h2>Metric definitions</h2>")
    body.append(_definitions_html(measured_metrics(cells), defs))

    scripts = f"<script>{bundle}</script>" if bundle is not None else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>bench report</title><style>{CSS}</style>{scripts}</head>"
        f"<body>{''.join(body)}</body></html>\n"
    )


@functools.cache
def _vega_bundle() -> str | None:
    """Vega, Vega-Lite and vega-embed as one script, or None without vl-convert-python."""
    try:
        import vl_convert
    except ImportError:
        return None
    bundle: str = vl_convert.javascript_bundle(vl_version=VEGA_LITE_VERSION)  # type: ignore[call-arg]
    return bundle.replace("</script", "<\\/script")


def _chart(
    points: pd.DataFrame,
    x: str,
    y: str,
    defs: Mapping[str, MetricDef],
    facet: str | None,
    chart_id: int,
    vega: bool,
) -> str:
    title = f"Pareto frontier: {y} vs {x}"
    svg = frontier_svg(points, x, y, defs, title=title, width=420, height=300)
    if not vega:
        return f'<div class="chart" id="chart-{chart_id}">{svg}</div>'
    spec = frontier_spec(
        points,
        x,
        y,
        defs,
        facet=facet,
        title=title,
        width=400,
        height=280,
        facet_title="model · device",
    )
    spec_json = json.dumps(spec, allow_nan=False).replace("</", "<\\/")
    return (
        f'<div class="chart vega-chart" id="chart-{chart_id}"></div>'
        f'<script type="application/json" id="spec-{chart_id}">{spec_json}</script>'
        f"<script>vegaEmbed('#chart-{chart_id}', JSON.parse(document.getElementById("
        f"'spec-{chart_id}').textContent), {{actions: false, renderer: 'svg'}});</script>"
        f"<noscript>{svg}</noscript>"
    )


def _leaderboard_html(
    cells: pd.DataFrame, model: str, device: str, workload: str, defs: Mapping[str, MetricDef]
) -> str:
    available = measured_metrics(cells[(cells["model"] == model) & (cells["device"] == device)])
    metrics = [m for m in KEY_METRICS if m in available]
    metrics += metrics_of_kind(available, defs, "accuracy")
    table = leaderboard(cells, model, device, workload, metrics, defs=defs)
    head = ["technique", "status", *metrics]
    rows = []
    for record in table.to_dict(orient="records"):
        status = str(record["status"])
        if record.get("gate") == "failed":
            status += " ✗ gated out"
        cells_html = [
            f'<td class="text">{escape(str(record["technique"]))}</td>',
            f'<td class="text{" worse" if record.get("gate") == "failed" else ""}">'
            f"{escape(status)}</td>",
        ]
        for metric in metrics:
            unit = defs[metric].unit if metric in defs else ""
            value = format_value(record[metric], unit)
            delta = record[metric + DELTA_SUFFIX]
            if not record["reference"] and not pd.isna(delta):
                verdict = delta_is_better(delta, metric, defs)
                css = {True: "better", False: "worse"}.get(verdict, "muted")  # type: ignore[arg-type]
                value += f' <span class="{css}">({delta:+.1f}%)</span>'
            cells_html.append(f"<td>{value}</td>")
        rows.append("<tr>" + "".join(cells_html) + "</tr>")
    header = "".join(
        f'<th class="{"text" if h in ("technique", "status") else ""}">'
        f"{escape(axis_title(h, defs) if h in defs else h)}</th>"
        for h in head
    )
    note = (
        '<p class="meta">Deltas against the reference stack of the same model, device and '
        "workload; green is better, red worse. ✗ gated out: the cell failed a quality gate "
        "of its suite (drawn as a cross on the frontier, never on the front).</p>"
    )
    return f"<table><tr>{header}</tr>{''.join(rows)}</table>{note}"


def _definitions_html(metrics: Sequence[str], defs: Mapping[str, MetricDef]) -> str:
    rows = [
        {
            "metric": m,
            "unit": defs[m].unit,
            "better": "higher" if defs[m].higher_is_better else "lower",
            "description": defs[m].description,
        }
        for m in metrics
        if m in defs
    ]
    frame = pd.DataFrame(rows, columns=["metric", "unit", "better", "description"])
    return _table(frame, text_columns=tuple(frame.columns))


def _table(frame: pd.DataFrame, text_columns: Sequence[str] = ()) -> str:
    """A plain HTML table; cells escaped; NaN shown as an em dash."""
    head = "".join(
        f'<th class="{"text" if c in text_columns else ""}">{escape(str(c))}</th>'
        for c in frame.columns
    )
    body = []
    for row in frame.itertuples(index=False):
        body.append(
            "<tr>"
            + "".join(
                f'<td class="{"text" if c in text_columns else ""}">'
                f"{'—' if pd.isna(v) else escape(str(v))}</td>"
                for c, v in zip(frame.columns, row, strict=True)
            )
            + "</tr>"
        )
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"
