"""Measured beside predicted: the frames behind the dashboard's estimate page.

Every measured cell stores its analytic prediction (``estimate.*``, harness/estimate) and
how far the measurement is from the roofline (``roofline.*``, ``harness.derive``); a
suite's ``search:`` adds boundary cells (workload ``boundary``, ``harness.boundary``).
These functions shape them from ``Snapshot.cells`` (normalised cells, one metric per
column); pure, without Streamlit. A missing prediction is NaN here and "no estimate" on
the page, never 0.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from harness.report import PREDICTED, ROOFLINE_FRACTIONS, measured_cells

#: phase -> (operations, bytes, achieved FLOP/s) metrics of the roofline chart
PHASES = {
    "prefill": ("estimate.prefill_ops", "estimate.prefill_bytes", "roofline.prefill_flops"),
    "decode": ("estimate.decode_ops", "estimate.decode_bytes", "roofline.decode_flops"),
}
BOUNDARY_AXES = ("max_prompt_tokens", "max_batch_size")
IDENTITY = ["technique", "model", "device", "workload"]


def _column(cells: pd.DataFrame, name: str) -> pd.Series:
    if name in cells.columns:
        return pd.to_numeric(cells[name], errors="coerce")
    return pd.Series(math.nan, index=cells.index, dtype=float)


def prediction_frame(cells: pd.DataFrame) -> pd.DataFrame:
    """Per cell: measured and predicted peak, TTFT vs prefill, TPOT vs decode step, each
    with ``measured / predicted``, then the roofline fractions (predicted / measured time).

    Columns: technique, model, device, workload, then for each of :data:`PAIRS`
    ``"<name>"``, ``"<name> predicted"`` and ``"<name> ratio"`` (``harness.report.PREDICTED``:
    the same numbers as ``bench results --predicted``), then the roofline fractions.
    """
    here = measured_cells(cells)
    out = here[IDENTITY].copy()
    for name, measured, predicted, scale in PREDICTED:
        got, want = _column(here, measured), _column(here, predicted)
        out[name] = got * scale
        out[f"{name} predicted"] = want * scale
        out[f"{name} ratio"] = got / want
    for name in ROOFLINE_FRACTIONS:
        out[name] = _column(here, name)
    return out.reset_index(drop=True)


def roofline_points(cells: pd.DataFrame) -> pd.DataFrame:
    """One point per cell and phase: arithmetic intensity (operations / bytes of the
    estimate) and achieved FLOP/s (``roofline.*_flops``). Points missing either are left
    out.

    Columns: technique, model, device, workload, phase, intensity, flops.
    """
    here = measured_cells(cells)
    frames = []
    for phase, (ops, moved, achieved) in PHASES.items():
        frame = here[IDENTITY].copy()
        frame["phase"] = phase
        frame["intensity"] = _column(here, ops) / _column(here, moved)
        frame["flops"] = _column(here, achieved)
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=[*IDENTITY, "phase", "intensity", "flops"])
    points = pd.concat(frames, ignore_index=True)
    finite = points["intensity"].map(_positive) & points["flops"].map(_positive)
    return points[finite].reset_index(drop=True)


def roofs(cells: pd.DataFrame) -> pd.DataFrame:
    """Each device's roof: the peak FLOP/s and memory bandwidth its estimates used
    (``estimate.roof_flops``, ``estimate.roof_bytes_s``; the largest seen per device).

    Columns: device, roof_flops, roof_bytes_s, ridge (the intensity where they meet).
    """
    here = measured_cells(cells)
    frame = pd.DataFrame(
        {
            "device": here["device"],
            "roof_flops": _column(here, "estimate.roof_flops"),
            "roof_bytes_s": _column(here, "estimate.roof_bytes_s"),
        }
    ).dropna()
    frame = frame[(frame["roof_flops"] > 0) & (frame["roof_bytes_s"] > 0)]
    out = frame.groupby("device", as_index=False).max()
    out["ridge"] = out["roof_flops"] / out["roof_bytes_s"]
    return out


def attainable(intensity: float, roof_flops: float, roof_bytes_s: float) -> float:
    """The roofline: min(peak FLOP/s, intensity × bandwidth) (seed 003 §2.3)."""
    return min(roof_flops, intensity * roof_bytes_s)


def roof_line(roof: Any, low: float, high: float) -> list[dict[str, float]]:
    """The points that draw one device's roof over intensities [low, high] (log axis): the
    ends and the ridge, where the slope meets the flat top."""
    xs = sorted({low, high, *([roof.ridge] if low < roof.ridge < high else [])})
    return [
        {"intensity": x, "flops": attainable(x, roof.roof_flops, roof.roof_bytes_s)} for x in xs
    ]


def boundary_frame(cells: pd.DataFrame) -> pd.DataFrame:
    """The OOM boundary searches: per ok boundary cell, its axis, the largest value that
    ran (NaN: nothing fitted), the estimate's seed (NaN: no estimate) and the real runs.

    Columns: technique, model, device, workload, axis, measured, predicted, probes.
    """
    if cells.empty or "workload" not in cells:
        return pd.DataFrame(columns=[*IDENTITY, "axis", "measured", "predicted", "probes"])
    ok = cells[cells["status"] == "ok"]
    rows = []
    for axis in BOUNDARY_AXES:
        label = ok["workload"].astype(str)
        found = ok[label.str.startswith("boundary(") & label.str.contains(f'axis="{axis}"')]
        frame = found[IDENTITY].copy()
        frame["axis"] = axis
        frame["measured"] = _column(found, f"boundary.{axis}")  # NaN: nothing fitted
        frame["predicted"] = _column(found, f"boundary.predicted_{axis}")
        frame["probes"] = _column(found, "boundary.probes")
        rows.append(frame)
    return pd.concat(rows, ignore_index=True)


def _positive(value: Any) -> bool:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return False
    return math.isfinite(number) and number > 0
