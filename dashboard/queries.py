"""Pure query functions behind the dashboard pages and the static report.

Every function takes DataFrames shaped like :meth:`harness.store.Store.cells_frame` (one row
per cell: identity columns, then one column per metric name, optionally ``<name>.ci_low`` and
``<name>.ci_high``) and returns a new DataFrame. Nothing here reads the database or imports
Streamlit, so each function is unit-tested on hand-made frames.

Metric directions always come from the registered :class:`harness.results.MetricDef`; a
metric without a definition is shown but never gets a direction.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from dashboard.pareto import pareto_front
from harness.results import STATUSES, MetricDef, MetricKind
from harness.store import workload_label as store_workload_label

CI_LOW, CI_HIGH = ".ci_low", ".ci_high"
DELTA_SUFFIX = " Δ%"

#: Columns of ``cells_frame`` (plus the ones this module adds) that are not metric values.
IDENTITY_COLUMNS = frozenset(
    {
        "run_id",
        "suite",
        "cell_key",
        "cell_id",
        "model",
        "device",
        "technique",
        "workload",
        "status",
        "reason",
        "machine",
        "gpu",
        "origin",
        "family",
        "reference",
        "started_at",
        "duration_s",
    }
)

#: Shown first in the leaderboard when present; any other metric can be added by the user.
KEY_METRICS = (
    "latency.ttft_s",
    "latency.tpot_s",
    "throughput.decode_tok_s",
    "memory.peak_alloc_bytes",
    "memory.weights_bytes",
    "memory.kv_cache_bytes",
    "energy.j_per_token",
)

#: The accuracy axis of the default charts: the first measured one (else the first metric of
#: kind ``accuracy`` by name).
ACCURACY_METRICS = ("accuracy.perplexity", "accuracy.decode_perplexity", "accuracy.passkey")


def busiest_workload(cells: pd.DataFrame) -> str:
    """The workload with the most technique stacks (ties: the first by name): the default
    view, since a suite often runs its few long cells on a workload of their own."""
    counts = cells.groupby("workload")["technique"].nunique()
    return str(counts.sort_index().idxmax())


#: Peak-memory metrics in order of preference for the default frontier axes.
PEAK_MEMORY_METRICS = (
    "memory.peak_alloc_bytes",
    "memory.window_peak_bytes",
    "memory.peak_rss_bytes",
)

EMPTY_DB_HINT = "bench run suites/smoke.yaml"
#: The ``origin`` of cells measured into the database itself (not imported from a bundle).
LOCAL_ORIGIN = "local"


# --- labels ----------------------------------------------------------------------------------


def technique_family(label: str) -> str:
    """The colour group of a technique stack label.

    The family keeps the first technique name of each stack element and drops the configs:
    ``weight-quant(bits=4)+kv-quant(bits=2)`` → ``weight-quant+kv-quant``.

    Args:
        label: Readable stack label as stored in ``cells.technique``.

    Returns:
        The family label; ``baseline`` stays ``baseline``.
    """
    parts = []
    depth = 0
    current = ""
    for char in label:
        if char == "(":
            depth += 1
        elif char == ")":
            depth = max(depth - 1, 0)
        elif char == "+" and depth == 0:
            parts.append(current)
            current = ""
        elif depth == 0:
            current += char
    parts.append(current)
    return "+".join(p.strip() for p in parts if p.strip()) or label


def workload_label(workload: Any) -> str:
    """A hashable, readable label of a workload column value.

    ``cells_frame`` gives labels already (kept as they are); a stored workload mapping
    (``{"name": "generate", "params": {...}}``) becomes the same label the store writes,
    e.g. ``generate(batch_size=1,new_tokens=64,prompt_tokens=256)``.
    """
    if isinstance(workload, Mapping):
        return store_workload_label(workload)
    return str(workload)


def normalize_cells(cells: pd.DataFrame, runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Prepares a ``cells_frame`` for the other queries.

    Turns the workload into a label, adds the technique ``family`` and, when ``runs`` (from
    ``runs_frame``) is given, the ``machine`` and ``gpu`` of each cell's run and its
    ``origin``: where an imported run came from (``bench import``), else ``LOCAL_ORIGIN``.

    Args:
        cells: Output of ``Store.cells_frame``.
        runs: Output of ``Store.runs_frame`` (columns ``id``, ``machine``, ``gpu``).

    Returns:
        A copy of ``cells`` with the extra columns.
    """
    out = cells.copy()
    if "workload" in out.columns:
        out["workload"] = [workload_label(w) for w in out["workload"]]
    if "technique" in out.columns:
        out["family"] = [technique_family(str(t)) for t in out["technique"]]
    if runs is not None and not runs.empty and "run_id" in out.columns:
        info = runs.set_index("id")
        for column in ("machine", "gpu"):
            if column in info.columns and column not in out.columns:
                out[column] = out["run_id"].map(info[column])
        if "origin" in info.columns and "origin" not in out.columns:
            out["origin"] = out["run_id"].map(info["origin"]).fillna(LOCAL_ORIGIN)
    return out


# --- metrics ---------------------------------------------------------------------------------


def metric_columns(cells: pd.DataFrame) -> list[str]:
    """The numeric metric value columns of a cells frame, in frame order (no CI columns)."""
    return [
        c
        for c in cells.columns
        if c not in IDENTITY_COLUMNS
        and not c.endswith(CI_LOW)
        and not c.endswith(CI_HIGH)
        and pd.api.types.is_numeric_dtype(cells[c])
    ]


def measured_metrics(cells: pd.DataFrame) -> list[str]:
    """Metric columns with at least one non-null value."""
    return [c for c in metric_columns(cells) if cells[c].notna().any()]


def directed_metrics(cells: pd.DataFrame, defs: Mapping[str, MetricDef]) -> list[str]:
    """Measured metrics that have a definition, hence a direction; usable as frontier axes."""
    return [c for c in measured_metrics(cells) if c in defs]


def metrics_of_kind(
    names: Iterable[str], defs: Mapping[str, MetricDef], kind: MetricKind
) -> list[str]:
    """The metrics among ``names`` whose definition declares ``kind`` (``MetricDef.kind``),
    in the order given; a metric without a definition has no kind."""
    return [m for m in names if m in defs and defs[m].kind == kind]


def default_axes(available: Iterable[str], defs: Mapping[str, MetricDef]) -> list[tuple[str, str]]:
    """The frontier charts shown by default, as (x, y) metric pairs.

    Peak memory vs accuracy and TPOT vs accuracy when an accuracy metric (a definition of
    kind ``accuracy``) was measured, otherwise ``memory.peak_alloc_bytes`` (or the first
    peak-memory metric present) vs ``latency.tpot_s``. The accuracy axis is the first of
    :data:`ACCURACY_METRICS` measured, else the first accuracy metric by name. Pairs whose
    metrics are missing are left out.

    Args:
        available: Metric names with data and a definition.
        defs: The metric definitions, for their kinds.

    Returns:
        Zero, one or two (x, y) pairs.
    """
    names = list(available)
    memory = next((m for m in PEAK_MEMORY_METRICS if m in names), None)
    tpot = "latency.tpot_s" if "latency.tpot_s" in names else None
    accuracies = metrics_of_kind(names, defs, "accuracy")
    measured = [m for m in ACCURACY_METRICS if m in accuracies]
    accuracy = next(iter(measured), None) or next(iter(sorted(accuracies)), None)
    pairs: list[tuple[str, str]] = []
    if accuracy is not None:
        pairs = [(x, accuracy) for x in (memory, tpot) if x is not None]
    elif memory is not None and tpot is not None:
        pairs = [(memory, tpot)]
    if not pairs and len(names) >= 2:
        pairs = [(names[0], names[1])]
    return pairs


# --- leaderboard -----------------------------------------------------------------------------


def latest_per_technique(cells: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Keeps the row of the newest run for each combination of ``keys``."""
    if cells.empty:
        return cells.copy()
    order = cells.sort_values("run_id", kind="stable") if "run_id" in cells.columns else cells
    return order.drop_duplicates(subset=list(keys), keep="last")


def is_reference(cells: pd.DataFrame) -> pd.Series:
    """Which rows are cells of their suite's reference stack (all False without the column)."""
    if "reference" not in cells.columns:
        return pd.Series(False, index=cells.index)
    return cells["reference"].fillna(False).astype(bool)


def reference_deltas(
    cells: pd.DataFrame,
    metrics: Sequence[str],
    group: Sequence[str] = ("model", "device", "workload"),
) -> pd.DataFrame:
    """Adds ``<metric> Δ%`` columns: change against the reference stack of the same group.

    ``Δ% = 100 · (value − reference) / reference``, where ``reference`` is the value of the
    row of the suite's reference stack (column ``reference``; ``baseline`` unless the suite
    says otherwise) in the same (model, device, workload) group. The delta is NaN where the
    group has no reference row, its value is missing or zero, or the row's own value is
    missing. When a group has several reference rows (several runs), the newest run's is
    used.

    Args:
        cells: Normalised cells frame.
        metrics: Metric columns to compare.
        group: Columns that must match between a row and its reference.

    Returns:
        A copy of ``cells`` with one delta column per metric.
    """
    out = cells.copy()
    group = [g for g in group if g in out.columns]
    base = latest_per_technique(out[is_reference(out)], group)
    base = base.set_index(group) if group else base
    keys = list(zip(*(out[g] for g in group), strict=True)) if group else []
    for metric in metrics:
        if group:
            lookup = base[metric] if metric in base.columns else pd.Series(dtype=float)
            lookup_dict = {
                (k if isinstance(k, tuple) else (k,)): v for k, v in lookup.to_dict().items()
            }
            reference = pd.Series(
                [lookup_dict.get(k, math.nan) for k in keys], index=out.index, dtype=float
            )
        else:
            value = base[metric].iloc[0] if len(base) and metric in base.columns else math.nan
            reference = pd.Series(value, index=out.index, dtype=float)
        reference = reference.where(reference != 0)
        values = pd.to_numeric(out[metric], errors="coerce").astype(float)
        out[metric + DELTA_SUFFIX] = 100.0 * (values - reference) / reference
    return out


def leaderboard(
    cells: pd.DataFrame,
    model: str,
    device: str,
    workload: str,
    metrics: Sequence[str],
    sort_by: str | None = None,
    defs: Mapping[str, MetricDef] | None = None,
) -> pd.DataFrame:
    """One row per technique stack of one model, device and workload, with reference deltas.

    Args:
        cells: Normalised cells frame (``normalize_cells``).
        model: Model id to show.
        device: Device to show (``cpu``, ``cuda:0``, ...).
        workload: Workload label (``workload_label``).
        metrics: Metric columns to show, each followed by its ``Δ%`` column.
        sort_by: Metric to sort on, best first by its direction in ``defs`` (ascending when
            it has no definition), ties and missing values by technique name; default:
            the reference stack first, then technique name.
        defs: Metric definitions, for the sort direction.

    Returns:
        Columns ``technique``, ``family``, ``reference``, ``status``, ``reason``, ``run_id``,
        ``origin`` (when the cells have it: where imported results came from), ``gate``
        (when the suite has quality gates: ``passed``, ``failed`` or empty) then, per
        metric, the value and ``<metric> Δ%``. Index: 0..n-1.
    """
    keep = (cells["model"] == model) & (cells["device"] == device)
    keep &= cells["workload"] == workload
    rows = latest_per_technique(cells[keep], ["technique"])
    metrics = [m for m in metrics if m in rows.columns]
    rows = reference_deltas(rows, metrics)
    rows = rows.assign(reference=is_reference(rows))
    identity: tuple[str, ...] = (
        *("technique", "family", "reference", "status", "reason", "run_id", "origin"),
    )
    if "gate.passed" in rows.columns:
        verdict = pd.to_numeric(rows["gate.passed"], errors="coerce")
        rows = rows.assign(gate=verdict.map({1.0: "passed", 0.0: "failed"}).fillna(""))
        identity += ("gate",)
    columns = [c for c in identity if c in rows]
    for metric in metrics:
        columns += [metric, metric + DELTA_SUFFIX]
    table = rows[columns]
    if sort_by is not None and sort_by in table.columns:
        better_high = bool(defs and sort_by in defs and defs[sort_by].higher_is_better)
        table = table.sort_values(
            [sort_by, "technique"], ascending=[not better_high, True], na_position="last"
        )
    else:
        others = (~table["reference"]).astype(int)
        table = table.assign(_b=others).sort_values(["_b", "technique"]).drop(columns="_b")
    return table.reset_index(drop=True)


def delta_is_better(delta: float, metric: str, defs: Mapping[str, MetricDef]) -> bool | None:
    """Whether a change of ``delta`` in ``metric`` is an improvement; None when unknown."""
    if metric not in defs or delta is None or math.isnan(delta) or delta == 0:
        return None
    return (delta > 0) == defs[metric].higher_is_better


# --- frontier --------------------------------------------------------------------------------


def frontier_frame(
    cells: pd.DataFrame,
    x: str,
    y: str,
    defs: Mapping[str, MetricDef],
    facet: str | None = None,
) -> pd.DataFrame:
    """Points of a two-metric Pareto chart with their front membership.

    Only ``ok`` cells with both metrics measured become points. The front is computed
    separately inside each facet panel (each value of ``facet``), with each axis minimised
    or maximised according to its metric definition, over the points that passed the
    suite's quality gates: a point whose ``gate.passed`` is 0 is ``gated`` (it stays in the
    frame, drawn apart, but is never on the front nor dominates one that is).

    Args:
        cells: Normalised cells frame, already filtered to one workload.
        x: Metric on the horizontal axis.
        y: Metric on the vertical axis.
        defs: Metric definitions (directions).
        facet: ``model``, ``device`` or None.

    Returns:
        Columns ``model``, ``device``, ``workload``, ``technique``, ``family``, ``run_id``,
        ``x``, ``y``, ``x_low``, ``x_high``, ``y_low``, ``y_high``, ``on_front``, ``gated``
        and ``panel`` (the facet value, or ``all``); sorted by panel, then x.

    Raises:
        KeyError: ``x`` or ``y`` has no definition.
    """
    for metric in (x, y):
        if metric not in defs:
            raise KeyError(f"metric {metric!r} has no definition; known: {sorted(defs)}")
    columns = ["model", "device", "workload", "technique", "family", "run_id"]
    empty = pd.DataFrame(
        columns=[
            *columns,
            *("x", "y", "x_low", "x_high", "y_low", "y_high", "on_front", "gated", "panel"),
        ]
    )
    if cells.empty or x not in cells.columns or y not in cells.columns:
        return empty
    ok = cells["status"] == "ok" if "status" in cells.columns else True
    rows = cells[ok & cells[x].notna() & cells[y].notna()]
    if rows.empty:
        return empty
    out = pd.DataFrame({c: rows[c] for c in columns if c in rows.columns})
    for axis, metric in (("x", x), ("y", y)):
        out[axis] = rows[metric].astype(float)
        out[axis + "_low"] = rows.get(metric + CI_LOW, pd.Series(math.nan, index=rows.index))
        out[axis + "_high"] = rows.get(metric + CI_HIGH, pd.Series(math.nan, index=rows.index))
    out["panel"] = rows[facet].astype(str) if facet else "all"
    out["gated"] = gated_out(rows)
    minimize = [a for a, m in (("x", x), ("y", y)) if not defs[m].higher_is_better]
    maximize = [a for a, m in (("x", x), ("y", y)) if defs[m].higher_is_better]
    out["on_front"] = False
    for _, panel in out[~out["gated"]].groupby("panel", sort=False):
        out.loc[panel.index, "on_front"] = pareto_front(panel, minimize, maximize)
    out["on_front"] = out["on_front"].astype(bool)
    return out.sort_values(["panel", "x", "y"], kind="stable").reset_index(drop=True)


def gated_out(cells: pd.DataFrame) -> pd.Series:
    """Which rows failed a quality gate of their suite (``gate.passed`` = 0; a row without a
    verdict is not gated out)."""
    if "gate.passed" not in cells.columns:
        return pd.Series(False, index=cells.index, dtype=bool)
    return (pd.to_numeric(cells["gate.passed"], errors="coerce") == 0.0).astype(bool)


# --- run and cell detail ---------------------------------------------------------------------


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> pd.DataFrame:
    """A nested mapping (a run's environment JSON) as a two-column ``key``/``value`` frame.

    Nested keys are joined with dots; lists are shown as JSON.
    """
    rows: list[tuple[str, str]] = []

    def walk(value: Any, key: str) -> None:
        if isinstance(value, Mapping) and value:
            for k in sorted(value, key=str):
                walk(value[k], f"{key}.{k}" if key else str(k))
        elif isinstance(value, list | tuple):
            rows.append((key, json.dumps(value, default=str)))
        else:
            rows.append((key, "" if value is None else str(value)))

    walk(mapping, prefix)
    return pd.DataFrame(rows, columns=["key", "value"])


def status_summary(cells: pd.DataFrame) -> pd.DataFrame:
    """Count of cells per status, in the order of :data:`harness.results.STATUSES`."""
    counts = cells["status"].value_counts() if "status" in cells else pd.Series(dtype=int)
    order = [s for s in STATUSES if s in counts.index] + [
        s for s in counts.index if s not in STATUSES
    ]
    return pd.DataFrame({"status": order, "cells": [int(counts[s]) for s in order]})


def failed_cells(cells: pd.DataFrame) -> pd.DataFrame:
    """Cells that are not ``ok`` (skipped or failed), with their status and reason."""
    columns = ("model", "device", "technique", "workload", "status", "reason")
    rows = cells[cells["status"] != "ok"] if "status" in cells else cells.iloc[0:0]
    return rows[[c for c in columns if c in rows.columns]].reset_index(drop=True)
