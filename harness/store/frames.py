"""Pure helpers that shape stored rows into DataFrames and files.

Kept apart from the database code so the dashboard and the exporters can rely on one
definition of the columns; nothing here touches a database.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from harness.errors import StoreError

ExportFormat = Literal["csv", "json", "parquet"]
EXPORT_FORMATS: tuple[ExportFormat, ...] = ("csv", "json", "parquet")
#: Leading columns of ``Store.cells_frame``; metric columns follow, sorted by name.
CELL_COLUMNS: tuple[str, ...] = (
    "run_id",
    "suite",
    "cell_key",
    "model",
    "device",
    "technique",
    "workload",
    "status",
    "reason",
    "reference",
)
#: Columns of ``Store.runs_frame``.
RUN_COLUMNS: tuple[str, ...] = (
    "id",
    "suite_name",
    "started_at",
    "ended_at",
    "cells",
    "ok",
    "failed",
    "machine",
    "gpu",
    "origin",
)

#: Columns of ``Store.metrics_frame`` (long format: one row per cell and metric).
METRIC_COLUMNS: tuple[str, ...] = (
    "cell_key",
    "name",
    "value",
    "unit",
    "ci_low",
    "ci_high",
    "n",
    "source",
    "reason",
)


def workload_label(workload: Mapping[str, Any]) -> str:
    """A readable, stable label of a workload: its name and its sorted parameters.

    Each parameter value is written as compact JSON, so strings are quoted and lists keep
    their brackets. A workload without parameters is its bare name.

    Args:
        workload: ``{"name": ..., "params": {...}}`` as stored in ``cells.workload``.

    Returns:
        For example ``generate(batch_size=1,new_tokens=32,prompt_tokens=128)``.
    """
    name = str(workload.get("name", ""))
    params: Mapping[str, Any] = workload.get("params") or {}
    if not params:
        return name
    args = ",".join(
        f"{key}={json.dumps(params[key], separators=(',', ':'), sort_keys=True)}"
        for key in sorted(params)
    )
    return f"{name}({args})"


def cells_table(
    cells: Sequence[Sequence[Any]], metrics: Sequence[Sequence[Any]], *, with_ci: bool
) -> pd.DataFrame:
    """Assemble the wide cells frame from cell rows and long-format metric rows.

    Args:
        cells: ``(cell_id, run_id, suite, key, model, device, technique, workload JSON,
            status, reason, reference)`` in the order the frame should have.
        metrics: ``(cell_id, name, value, ci_low, ci_high)``; values may be None.
        with_ci: Add ``<name>.ci_low`` and ``<name>.ci_high`` after each metric.

    Returns:
        :data:`CELL_COLUMNS`, then one float column per metric name (sorted), NaN where a
        cell lacks the metric or its value is null.
    """
    ids = [row[0] for row in cells]
    frame = pd.DataFrame(
        [(*row[1:7], workload_label(row[7]), *row[8:11]) for row in cells],
        columns=list(CELL_COLUMNS),
    )
    frame["run_id"] = frame["run_id"].astype("int64")
    frame["reference"] = frame["reference"].astype(bool)
    if not metrics:
        return frame
    long = pd.DataFrame(list(metrics), columns=["cell_id", "name", "value", "ci_low", "ci_high"])
    fields = ("value", "ci_low", "ci_high") if with_ci else ("value",)
    parts: dict[str, Any] = {}
    for name in sorted(long["name"].unique()):
        rows = long[long["name"] == name].set_index("cell_id")
        for field in fields:
            column = name if field == "value" else f"{name}.{field}"
            parts[column] = rows[field].astype("float64").reindex(ids).to_numpy()
    return pd.concat([frame, pd.DataFrame(parts, index=frame.index)], axis=1)


def write_frame(frame: pd.DataFrame, fmt: ExportFormat, path: Path) -> None:
    """Write ``frame`` to ``path`` as CSV, JSON or Parquet.

    JSON is an array of one object per row, missing values as null and floats written
    with ``repr`` so they read back exactly.
    """
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "parquet":
        frame.to_parquet(path, index=False)
    else:
        records = [
            {key: _json_value(value) for key, value in row.items()}
            for row in frame.astype(object).to_dict(orient="records")
        ]
        with path.open("w", encoding="utf-8") as file:
            file.write("[\n")
            file.write(",\n".join(json.dumps(record, allow_nan=False) for record in records))
            file.write("\n]\n" if records else "]\n")


def write_file(frame: pd.DataFrame, fmt: ExportFormat, target: Path) -> None:
    """:func:`write_frame` to a temporary file beside ``target``, then renamed into place.

    A failure never leaves a half-written file; the folder is created.

    Raises:
        StoreError: the file cannot be written; the message names it.
    """
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"
        )
        os.close(handle)
    except OSError as exc:
        raise StoreError(f"{target}: cannot write ({exc.strerror}). Pass another path.") from exc
    temp = Path(temp_name)
    try:
        write_frame(frame, fmt, temp)
        os.replace(temp, target)
    except BaseException as exc:
        temp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise StoreError(
                f"{target}: cannot write ({exc.strerror or exc}). Pass another path."
            ) from exc
        raise


def _json_value(value: Any) -> Any:
    """A JSON-ready Python scalar: NaN and missing become None, numpy scalars unwrap."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):  # numpy scalar
        return _json_value(value.item())
    return value
