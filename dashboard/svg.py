"""Hand-written inline SVG for frontier charts, used by the static report when the Vega
libraries cannot be inlined (``vl-convert-python`` not installed).

Draws the same content as :func:`dashboard.charts.frontier_spec`: points coloured by
technique family, dominated points faded, the front as a line, 95% intervals as bars, and a
native SVG ``<title>`` tooltip on every point. Needs no script and no network to view.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from html import escape

import pandas as pd

from dashboard.charts import FADED_OPACITY, axis_title, display_unit, format_value
from harness.results import MetricDef

#: Vega's "category10" palette, so both renderers colour families alike.
PALETTE = (
    "#4c78a8",
    "#f58518",
    "#e45756",
    "#72b7b2",
    "#54a24b",
    "#eeca3b",
    "#b279a2",
    "#ff9da6",
    "#9d755d",
    "#bab0ac",
)
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 70, 20, 30, 50


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high] (1, 2, 5 × 10^k steps)."""
    if not math.isfinite(low) or not math.isfinite(high):
        return []
    if high <= low:
        return [low]
    raw = (high - low) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    return ticks


def frontier_svg(
    points: pd.DataFrame,
    x: str,
    y: str,
    defs: Mapping[str, MetricDef],
    title: str | None = None,
    width: int = 520,
    height: int = 340,
) -> str:
    """One ``<svg>`` element per facet panel of a frontier, wrapped in a ``<div>``.

    Args:
        points: Output of :func:`dashboard.queries.frontier_frame`.
        x: Metric on the horizontal axis.
        y: Metric on the vertical axis.
        defs: Metric definitions (units and directions).
        title: Caption above the panels; default ``"<y> vs <x>"``.
        width: Width of one panel, px.
        height: Height of one panel, px.

    Returns:
        An HTML fragment.
    """
    families = sorted(points["family"].astype(str).unique()) if not points.empty else []
    colours = {f: PALETTE[i % len(PALETTE)] for i, f in enumerate(families)}
    parts = [f'<div class="svg-chart"><h4>{escape(title or f"{y} vs {x}")}</h4>']
    for panel, rows in points.groupby("panel", sort=True):
        parts.append(_panel(rows, str(panel), x, y, defs, colours, width, height))
    legend = " ".join(
        f'<span class="legend-item"><span class="swatch" style="background:{c}"></span>'
        f"{escape(f)}</span>"
        for f, c in colours.items()
    )
    parts.append(f'<div class="legend">{legend}</div></div>')
    return "".join(parts)


def _panel(
    rows: pd.DataFrame,
    panel: str,
    x: str,
    y: str,
    defs: Mapping[str, MetricDef],
    colours: Mapping[str, str],
    width: int,
    height: int,
) -> str:
    _, fx = display_unit(defs[x].unit)
    _, fy = display_unit(defs[y].unit)
    xs = pd.concat([rows["x"], rows["x_low"], rows["x_high"]]).astype(float) * fx
    ys = pd.concat([rows["y"], rows["y_low"], rows["y_high"]]).astype(float) * fy
    x_ticks = nice_ticks(float(xs.min()), float(xs.max()))
    y_ticks = nice_ticks(float(ys.min()), float(ys.max()))
    x0, x1 = _span(x_ticks, xs)
    y0, y1 = _span(y_ticks, ys)
    plot_w = width - MARGIN_LEFT - MARGIN_RIGHT
    plot_h = height - MARGIN_TOP - MARGIN_BOTTOM

    def px(v: float) -> float:
        return MARGIN_LEFT + (v * fx - x0) / (x1 - x0) * plot_w

    def py(v: float) -> float:
        return MARGIN_TOP + plot_h - (v * fy - y0) / (y1 - y0) * plot_h

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f'<text x="{width / 2:.1f}" y="16" text-anchor="middle" font-weight="bold">'
        f"{escape(panel)}</text>",
        f'<rect x="{MARGIN_LEFT}" y="{MARGIN_TOP}" width="{plot_w}" height="{plot_h}" '
        'fill="none" stroke="#999"/>',
    ]
    for tick in x_ticks:
        pos = MARGIN_LEFT + (tick - x0) / (x1 - x0) * plot_w
        out.append(
            f'<line x1="{pos:.1f}" x2="{pos:.1f}" y1="{MARGIN_TOP}" y2="{MARGIN_TOP + plot_h}" '
            f'stroke="#eee"/><text x="{pos:.1f}" y="{MARGIN_TOP + plot_h + 14}" '
            f'text-anchor="middle">{tick:g}</text>'
        )
    for tick in y_ticks:
        pos = MARGIN_TOP + plot_h - (tick - y0) / (y1 - y0) * plot_h
        out.append(
            f'<line x1="{MARGIN_LEFT}" x2="{MARGIN_LEFT + plot_w}" y1="{pos:.1f}" y2="{pos:.1f}" '
            f'stroke="#eee"/><text x="{MARGIN_LEFT - 6}" y="{pos + 4:.1f}" '
            f'text-anchor="end">{tick:g}</text>'
        )
    out.append(
        f'<text x="{MARGIN_LEFT + plot_w / 2:.1f}" y="{height - 10}" text-anchor="middle">'
        f"{escape(axis_title(x, defs))}</text>"
        f'<text transform="translate(14,{MARGIN_TOP + plot_h / 2:.1f}) rotate(-90)" '
        f'text-anchor="middle">{escape(axis_title(y, defs))}</text>'
    )
    front = rows[rows["on_front"]].sort_values(["x", "y"])
    if len(front) > 1:
        path = " ".join(f"{px(r.x):.1f},{py(r.y):.1f}" for r in front.itertuples())
        out.append(f'<polyline points="{path}" fill="none" stroke="#444" stroke-width="1.5"/>')
    for r in rows.itertuples():
        colour = colours.get(str(r.family), PALETTE[0])
        opacity = 1.0 if r.on_front else FADED_OPACITY
        if not (_missing(r.x_low) or _missing(r.x_high)):
            out.append(
                f'<line x1="{px(r.x_low):.1f}" x2="{px(r.x_high):.1f}" y1="{py(r.y):.1f}" '
                f'y2="{py(r.y):.1f}" stroke="{colour}" opacity="{opacity / 2}"/>'
            )
        if not (_missing(r.y_low) or _missing(r.y_high)):
            out.append(
                f'<line x1="{px(r.x):.1f}" x2="{px(r.x):.1f}" y1="{py(r.y_low):.1f}" '
                f'y2="{py(r.y_high):.1f}" stroke="{colour}" opacity="{opacity / 2}"/>'
            )
        gated = bool(getattr(r, "gated", False))
        verdict = "gated out" if gated else "on the front" if r.on_front else "dominated"
        tip = (
            f"{r.technique}\n{r.model} on {r.device}\n"
            f"{x}: {format_value(r.x, defs[x].unit, r.x_low, r.x_high)}\n"
            f"{y}: {format_value(r.y, defs[y].unit, r.y_low, r.y_high)}\n"
            f"{verdict}"
        )
        if gated:  # failed a quality gate: a faded cross, not a dot
            cx, cy = px(r.x), py(r.y)
            out.append(
                f'<path class="point gated" d="M{cx - 5:.1f},{cy - 5:.1f}L{cx + 5:.1f},'
                f'{cy + 5:.1f}M{cx - 5:.1f},{cy + 5:.1f}L{cx + 5:.1f},{cy - 5:.1f}" '
                f'stroke="{colour}" stroke-width="2" opacity="{FADED_OPACITY}">'
                f"<title>{escape(tip)}</title></path>"
            )
            continue
        out.append(
            f'<circle class="point{" front" if r.on_front else ""}" cx="{px(r.x):.1f}" '
            f'cy="{py(r.y):.1f}" r="5" fill="{colour}" fill-opacity="{opacity}">'
            f"<title>{escape(tip)}</title></circle>"
        )
    out.append("</svg>")
    return "".join(out)


def _span(ticks: list[float], values: pd.Series) -> tuple[float, float]:
    """Axis range covering both the ticks and the data, never of zero width."""
    finite = values[values.notna()]
    low = min([*ticks, float(finite.min())])
    high = max([*ticks, float(finite.max())])
    if high <= low:
        pad = abs(low) * 0.05 or 1.0
        return low - pad, high + pad
    pad = (high - low) * 0.04
    return low - pad, high + pad


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
