"""Vega-Lite chart specifications built from query results.

The same plain-dict specifications are drawn by Streamlit (``st.vega_lite_chart``) and
embedded in the static report, so the dashboard and ``bench report`` show identical charts.
No Altair needed: the specs are small and explicit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from dashboard.estimates import roof_line
from harness.results import MetricDef

VEGA_LITE_VERSION = "6.4"  # the major version Streamlit 1.67 draws with
VEGA_LITE_SCHEMA = "https://vega.github.io/schema/vega-lite/v6.json"
BYTE_UNITS = frozenset({"bytes", "byte", "B"})
FADED_OPACITY = 0.3


def display_unit(unit: str) -> tuple[str, float]:
    """The unit a chart shows a metric in, and the factor from the stored unit.

    Bytes are shown in MiB (2**20 bytes) and seconds in milliseconds; other units as stored.

    Args:
        unit: Unit stored with the metric (``bytes``, ``s``, ``tok/s``, ``J/token``...).

    Returns:
        (display unit, factor): display value = stored value × factor.
    """
    if unit in BYTE_UNITS:
        return "MiB", 1.0 / 2**20
    if unit == "s":
        return "ms", 1e3
    return unit, 1.0


def format_value(
    value: float | None, unit: str, low: float | None = None, high: float | None = None
) -> str:
    """A value in its display unit with its confidence interval, e.g. ``12.3 ms [12.1, 12.6]``.

    Args:
        value: Stored value, or None/NaN when unmeasured.
        unit: Stored unit.
        low: Lower bound of the 95% confidence interval, stored unit.
        high: Upper bound, stored unit.
    """
    if value is None or _isnan(value):
        return "—"
    shown, factor = display_unit(unit)
    text = f"{value * factor:.4g}"
    if shown:
        text += f" {shown}"
    if low is not None and high is not None and not _isnan(low) and not _isnan(high):
        text += f" [{low * factor:.4g}, {high * factor:.4g}]"
    return text


def axis_title(metric: str, defs: Mapping[str, MetricDef]) -> str:
    """Axis title with display unit and direction, e.g. ``latency.tpot_s (ms, lower is better)``."""
    definition = defs[metric]
    shown, _ = display_unit(definition.unit)
    direction = "higher is better" if definition.higher_is_better else "lower is better"
    return f"{metric} ({shown}, {direction})" if shown else f"{metric} ({direction})"


LOG_SPAN = 100.0
"""An axis whose positive values span more than this factor is drawn on a log scale, so that
one broken stack (2-bit perplexity in the hundred thousands) does not flatten the rest."""


def _axis(field: str, title: str, values: list[float]) -> dict[str, Any]:
    finite = [v for v in values if not _isnan(v)]
    log = bool(finite) and min(finite) > 0 and max(finite) / min(finite) > LOG_SPAN
    return {
        "field": field,
        "type": "quantitative",
        "title": f"{title}, log scale" if log else title,
        "scale": {"type": "log"} if log else {"zero": False},
    }


def frontier_spec(
    points: pd.DataFrame,
    x: str,
    y: str,
    defs: Mapping[str, MetricDef],
    facet: str | None = None,
    title: str | None = None,
    width: int = 520,
    height: int = 340,
    columns: int = 3,
    facet_title: str | None = None,
) -> dict[str, Any]:
    """A Pareto frontier chart: every point coloured by technique family, dominated points
    faded, the front joined by a line, 95% intervals as error bars. A point that failed a
    quality gate (``gated``) is drawn as a hollow cross, faded: shown, never on the front.

    Args:
        points: Output of :func:`dashboard.queries.frontier_frame`.
        x: Metric on the horizontal axis.
        y: Metric on the vertical axis.
        defs: Metric definitions (units and directions for the axis titles).
        facet: Name of the facet column (``model``/``device``) or None for one panel.
        title: Chart title; default ``"<y> vs <x>"``.
        width: Width of one panel, px.
        height: Height of one panel, px.
        columns: Panels per row before wrapping.
        facet_title: Title above the panels; default the facet column's name.

    Returns:
        A Vega-Lite v6 specification with its data inlined.
    """
    _, fx = display_unit(defs[x].unit)
    _, fy = display_unit(defs[y].unit)
    records = []
    for row in points.itertuples(index=False):
        gated = bool(getattr(row, "gated", False))
        record = {
            "technique": row.technique,
            "family": row.family,
            "model": row.model,
            "device": row.device,
            "panel": row.panel,
            "on_front": bool(row.on_front),
            "front": "gated out" if gated else "on the front" if row.on_front else "dominated",
            "x": row.x * fx,
            "y": row.y * fy,
            "x_text": format_value(row.x, defs[x].unit, row.x_low, row.x_high),
            "y_text": format_value(row.y, defs[y].unit, row.y_low, row.y_high),
        }
        for key, column, factor in (
            ("x_low", row.x_low, fx),
            ("x_high", row.x_high, fx),
            ("y_low", row.y_low, fy),
            ("y_high", row.y_high, fy),
        ):
            record[key] = None if _isnan(column) else column * factor
        records.append(record)

    x_enc = _axis("x", axis_title(x, defs), [r["x"] for r in records])
    y_enc = _axis("y", axis_title(y, defs), [r["y"] for r in records])
    tooltip = [
        {"field": "technique", "title": "stack"},
        {"field": "model"},
        {"field": "device"},
        {"field": "x_text", "title": x},
        {"field": "y_text", "title": y},
        {"field": "front", "title": "Pareto"},
    ]
    color = {
        "field": "family",
        "type": "nominal",
        "title": "technique family",
        "scale": {"scheme": "category10"},
    }
    layers: list[dict[str, Any]] = [
        {
            "transform": [{"filter": "datum.x_low != null && datum.x_high != null"}],
            "mark": {"type": "rule", "opacity": 0.5},
            "encoding": {
                "x": {**x_enc, "field": "x_low"},
                "x2": {"field": "x_high"},
                "y": y_enc,
                "color": color,
            },
        },
        {
            "transform": [{"filter": "datum.y_low != null && datum.y_high != null"}],
            "mark": {"type": "rule", "opacity": 0.5},
            "encoding": {
                "y": {**y_enc, "field": "y_low"},
                "y2": {"field": "y_high"},
                "x": x_enc,
                "color": color,
            },
        },
        {
            "transform": [{"filter": "datum.on_front"}],
            "mark": {"type": "line", "color": "#444444", "strokeWidth": 1.5},
            "encoding": {"x": x_enc, "y": y_enc, "order": {"field": "x", "type": "quantitative"}},
        },
        {
            "mark": {"type": "point", "filled": True, "size": 110},
            "encoding": {
                "x": x_enc,
                "y": y_enc,
                "color": color,
                "shape": {
                    "field": "front",
                    "type": "nominal",
                    "title": "Pareto",
                    "scale": {
                        "domain": ["on the front", "dominated", "gated out"],
                        "range": ["circle", "triangle", "cross"],
                    },
                },
                "opacity": {
                    "condition": {"test": "datum.on_front", "value": 1.0},
                    "value": FADED_OPACITY,
                },
                "tooltip": tooltip,
            },
        },
    ]
    spec: dict[str, Any] = {
        "$schema": VEGA_LITE_SCHEMA,
        "title": title or f"{y} vs {x}",
        "data": {"values": records},
    }
    if facet:
        spec["facet"] = {"field": "panel", "type": "nominal", "title": facet_title or facet}
        spec["columns"] = columns
        spec["spec"] = {"width": width, "height": height, "layer": layers}
        spec["resolve"] = {"scale": {"x": "independent", "y": "independent"}}
    else:
        spec.update(width=width, height=height, layer=layers)
    return spec


#: Colours of the verdicts in the compare view (as in ``bench compare``'s table).
VERDICT_COLOURS: dict[str, str] = {
    "regressed": "#cf222e",
    "improved": "#1a7f37",
    "unchanged": "#8c959f",
    "inconclusive": "#bf8700",
    "changed": "#8250df",
    "missing": "#24292f",
}


def ratio_spec(
    rows: pd.DataFrame, metric: str, threshold: float, width: int = 640
) -> dict[str, Any]:
    """Candidate / base ratios of one metric with their 95% intervals, one line per cell.

    The unchanged band [1 − threshold, 1 + threshold] is shaded; each interval is a bar
    from ``ci_low`` to ``ci_high`` and each ratio a point, coloured by verdict.

    Args:
        rows: Output of :func:`dashboard.comparing.regression_frame` for that metric.
        metric: The metric, for the title.
        threshold: The unchanged band's half-width (fraction).
        width: Chart width, px.

    Returns:
        A Vega-Lite v6 specification with its data inlined.
    """
    records = []
    for row in rows.itertuples(index=False):
        if _isnan(row.ratio):
            continue
        records.append(
            {
                "cell": f"{row.technique} · {row.workload}"
                + (f" · {row.model}" if rows["model"].nunique() > 1 else ""),
                "ratio": float(row.ratio),
                "low": None if _isnan(row.ci_low) else float(row.ci_low),
                "high": None if _isnan(row.ci_high) else float(row.ci_high),
                "verdict": row.verdict,
                "interval": "-"
                if _isnan(row.ci_low)
                else f"[{float(row.ci_low):.3f}, {float(row.ci_high):.3f}]",
            }
        )
    domain = [v for v in VERDICT_COLOURS if v in {r["verdict"] for r in records}]
    colour = {
        "field": "verdict",
        "type": "nominal",
        "scale": {"domain": domain, "range": [VERDICT_COLOURS[v] for v in domain]},
    }
    x = {
        "field": "ratio",
        "type": "quantitative",
        "title": "candidate / base",
        "scale": {"zero": False},
    }
    y = {"field": "cell", "type": "nominal", "title": None, "sort": None}
    band = {"lo": 1.0 - threshold, "hi": 1.0 + threshold}
    layers: list[dict[str, Any]] = [
        {
            "data": {"values": [band]},
            "mark": {"type": "rect", "color": "#8c959f", "opacity": 0.15},
            "encoding": {"x": {"field": "lo", "type": "quantitative"}, "x2": {"field": "hi"}},
        },
        {
            "data": {"values": [{"one": 1.0}]},
            "mark": {"type": "rule", "color": "#57606a", "strokeDash": [4, 3]},
            "encoding": {"x": {"field": "one", "type": "quantitative"}},
        },
        {
            "transform": [{"filter": "datum.low != null && datum.high != null"}],
            "mark": {"type": "rule", "strokeWidth": 2},
            "encoding": {
                "x": {**x, "field": "low"},
                "x2": {"field": "high"},
                "y": y,
                "color": colour,
            },
        },
        {
            "mark": {"type": "point", "filled": True, "size": 90},
            "encoding": {
                "x": x,
                "y": y,
                "color": colour,
                "tooltip": [
                    {"field": "cell"},
                    {"field": "ratio", "format": ".3f"},
                    {"field": "interval", "title": "95% CI"},
                    {"field": "verdict"},
                ],
            },
        },
    ]
    return {
        "$schema": VEGA_LITE_SCHEMA,
        "title": f"{metric}: candidate / base, 95% CI (shaded: ±{threshold:.3g} unchanged band)",
        "data": {"values": records},
        "width": width,
        "height": max(60, 28 * len(records)),
        "layer": layers,
    }


def roofline_spec(points: pd.DataFrame, roofs: pd.DataFrame, width: int = 640) -> dict[str, Any]:
    """Achieved FLOP/s against arithmetic intensity, both log scales, with each device's
    roof min(peak FLOP/s, intensity × bandwidth) drawn as a line (seed 003 §2.3).

    Args:
        points: Output of :func:`dashboard.estimates.roofline_points`.
        roofs: Output of :func:`dashboard.estimates.roofs`.
        width: Chart width, px.

    Returns:
        A Vega-Lite v6 specification with its data inlined.
    """
    records = [
        {
            "stack": row.technique,
            "workload": row.workload,
            "model": row.model,
            "device": row.device,
            "phase": row.phase,
            "intensity": float(row.intensity),
            "flops": float(row.flops),
        }
        for row in points.itertuples(index=False)
    ]
    spread = [r["intensity"] for r in records] + [float(x) for x in roofs.get("ridge", [])]
    low, high = (min(spread) / 2, max(spread) * 2) if spread else (0.1, 1000.0)
    line = [
        {"device": roof.device, **point}
        for roof in roofs.itertuples(index=False)
        for point in roof_line(roof, low, high)
    ]
    x = {
        "field": "intensity",
        "type": "quantitative",
        "title": "arithmetic intensity (operations / byte), log scale",
        "scale": {"type": "log"},
    }
    y = {
        "field": "flops",
        "type": "quantitative",
        "title": "achieved FLOP/s, log scale",
        "scale": {"type": "log"},
    }
    return {
        "$schema": VEGA_LITE_SCHEMA,
        "title": "Roofline: each cell's prefill and decode step against its device's roof",
        "width": width,
        "height": 360,
        "layer": [
            {
                "data": {"values": line},
                "mark": {"type": "line", "color": "#57606a", "strokeDash": [4, 3]},
                "encoding": {"x": x, "y": y, "detail": {"field": "device"}},
            },
            {
                "data": {"values": records},
                "mark": {"type": "point", "filled": True, "size": 70},
                "encoding": {
                    "x": x,
                    "y": y,
                    "color": {"field": "phase", "type": "nominal"},
                    "shape": {"field": "device", "type": "nominal"},
                    "tooltip": [
                        {"field": "stack"},
                        {"field": "workload"},
                        {"field": "model"},
                        {"field": "phase"},
                        {"field": "intensity", "format": ".3g"},
                        {"field": "flops", "format": ".3s", "title": "FLOP/s"},
                    ],
                },
            },
        ],
    }


def boundary_spec(rows: pd.DataFrame, axis: str, width: int = 640) -> dict[str, Any]:
    """The largest value that fitted (bar) and the estimate's seed (tick) per stack.

    Args:
        rows: Rows of :func:`dashboard.estimates.boundary_frame` for one ``axis``.
        axis: ``max_prompt_tokens`` or ``max_batch_size``, for the title.
        width: Chart width, px.
    """
    records = [
        {
            "stack": f"{row.technique} · {row.model} · {row.device}",
            "measured": None if _isnan(row.measured) else float(row.measured),
            "predicted": None if _isnan(row.predicted) else float(row.predicted),
        }
        for row in rows.itertuples(index=False)
    ]
    y = {"field": "stack", "type": "nominal", "title": None, "sort": None}
    return {
        "$schema": VEGA_LITE_SCHEMA,
        "title": f"{axis}: largest value that ran (bar) and the estimate's seed (tick)",
        "data": {"values": records},
        "width": width,
        "height": max(60, 28 * len(records)),
        "layer": [
            {
                "transform": [{"filter": "datum.measured != null"}],
                "mark": {"type": "bar", "color": "#0969da"},
                "encoding": {
                    "x": {"field": "measured", "type": "quantitative", "title": axis},
                    "y": y,
                    "tooltip": [{"field": "stack"}, {"field": "measured"}, {"field": "predicted"}],
                },
            },
            {
                "transform": [{"filter": "datum.predicted != null"}],
                "mark": {"type": "tick", "color": "#cf222e", "thickness": 3},
                "encoding": {"x": {"field": "predicted", "type": "quantitative"}, "y": y},
            },
        ],
    }


def _isnan(value: Any) -> bool:
    """True for None, NaN and pandas NA."""
    if value is None or value is pd.NA:
        return True
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return False
