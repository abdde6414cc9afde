"""Reading the results database for the dashboard and the report; nothing here writes.

Every function opens the store read-only (SQLite files with ``mode=ro``, PostgreSQL sessions
read-only), reads, and closes it again, so the dashboard never holds a lock on a database
that ``bench run`` is writing.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pandas as pd
from sqlalchemy import select

from dashboard.queries import normalize_cells
from harness.compare import Comparison, Options
from harness.results import MetricDef
from harness.store import Store
from harness.store.schema import Cell, Machine, Metric, Run

METRIC_DETAIL_COLUMNS = ("name", "value", "unit", "ci_low", "ci_high", "n", "source", "reason")


@dataclass(frozen=True)
class Snapshot:
    """What the pages read, loaded once per refresh.

    Attributes:
        url: Database URL (password hidden in anything shown).
        cells: Normalised cells frame with CI columns (``normalize_cells``).
        runs: ``Store.runs_frame()``.
        defs: Metric definitions by name.
    """

    url: str
    cells: pd.DataFrame
    runs: pd.DataFrame
    defs: dict[str, MetricDef]

    @property
    def empty(self) -> bool:
        """True when no run has been recorded yet."""
        return self.runs.empty


@contextmanager
def open_store(url: str) -> Iterator[Store]:
    """The store at ``url``, read-only, closed on exit."""
    store = Store.open(url, read_only=True)
    try:
        yield store
    finally:
        store.close()


def load_snapshot(url: str, run_id: int | None = None, suite: str | None = None) -> Snapshot:
    """Loads cells (of one run, or the latest of every cell), runs and metric definitions.

    Args:
        url: SQLAlchemy URL of the results database.
        run_id: Only this run's cells; None for the latest result of every cell.
        suite: Only cells of runs of this suite.

    Raises:
        StoreError: The database cannot be opened or the run does not exist.
    """
    with open_store(url) as store:
        runs = store.runs_frame()
        defs = store.metric_defs()
        cells = store.cells_frame(run_id=run_id, suite=suite, with_ci=True)
    return Snapshot(url=url, cells=normalize_cells(cells, runs), runs=runs, defs=defs)


def run_detail(url: str, run_id: int) -> dict[str, Any]:
    """A run's row and its machine's row, as one flat mapping.

    Returns:
        Keys ``id, suite_name, suite_path, suite_hash, harness_version, git_commit,
        environment`` (dict), ``started_at, ended_at`` and the machine's ``hostname, cpu,
        cpu_count, ram_bytes, gpu, gpu_count, driver, fingerprint``. Empty when no such run.
    """
    run_columns = [
        Run.id,
        Run.suite_name,
        Run.suite_path,
        Run.suite_hash,
        Run.harness_version,
        Run.git_commit,
        Run.environment,
        Run.started_at,
        Run.ended_at,
    ]
    machine_columns = [
        Machine.hostname,
        Machine.cpu,
        Machine.cpu_count,
        Machine.ram_bytes,
        Machine.gpu,
        Machine.gpu_count,
        Machine.driver,
        Machine.fingerprint,
    ]
    stmt = (
        select(*run_columns, *machine_columns)
        .join(Machine, Run.machine_id == Machine.id)
        .where(Run.id == run_id)
    )
    with open_store(url) as store, store.engine.connect() as connection:
        row = connection.execute(stmt).mappings().first()
    return dict(row) if row is not None else {}


def cell_detail(url: str, run_id: int, cell_key: str) -> tuple[dict[str, Any], pd.DataFrame]:
    """One stored cell and every metric it recorded.

    Args:
        url: Database URL.
        run_id: The cell's run.
        cell_key: The cell key (``cells_frame`` column ``cell_key``).

    Returns:
        (cell, metrics): ``cell`` maps ``id, key, model, device, technique, stack, workload,
        status, reason, started_at, duration_s`` (empty when not found); ``metrics`` has
        columns ``name, value, unit, ci_low, ci_high, n, source, reason``, sorted by name.
    """
    cell_stmt = select(
        Cell.id,
        Cell.key,
        Cell.model,
        Cell.device,
        Cell.technique,
        Cell.stack,
        Cell.workload,
        Cell.status,
        Cell.reason,
        Cell.started_at,
        Cell.duration_s,
    ).where(Cell.run_id == run_id, Cell.key == cell_key)
    with open_store(url) as store, store.engine.connect() as connection:
        cell = connection.execute(cell_stmt).mappings().first()
        if cell is None:
            return {}, pd.DataFrame(columns=list(METRIC_DETAIL_COLUMNS))
        metric_stmt = (
            select(*(getattr(Metric, c) for c in METRIC_DETAIL_COLUMNS))
            .where(Metric.cell_id == cell["id"])
            .order_by(Metric.name)
        )
        rows = [tuple(r) for r in connection.execute(metric_stmt)]
    metrics = pd.DataFrame(rows, columns=list(METRIC_DETAIL_COLUMNS))
    for column in ("value", "ci_low", "ci_high"):
        metrics[column] = pd.to_numeric(metrics[column]).astype(float)
    return dict(cell), metrics


def load_comparison(
    url: str,
    base_ids: Sequence[int],
    candidate_ids: Sequence[int],
    options: Options | None = None,
) -> Comparison:
    """``bench compare`` of runs of the database (:func:`harness.compare.compare`): one or
    several a side, like ``bench compare 1,2 3,4``.

    Raises:
        StoreError: The database cannot be read.
        BenchError: A run does not exist, or is named twice.
    """
    from harness.compare import compare
    from harness.compare_sides import load_history, load_side, resolve_runs

    with open_store(url) as store:
        records = store.run_records()
        named = [
            resolve_runs(records, _ids(base_ids), "base"),
            resolve_runs(records, _ids(candidate_ids), "candidate"),
        ]
        base, candidate = (load_side(store, *runs) for runs in named)
        history = load_history(store, named[0] + named[1])
        defs = store.metric_defs()
    return compare(base, candidate, defs, options, history)


def _ids(ids: Sequence[int]) -> str:
    return ",".join(str(i) for i in ids)


def describe_run(row: pd.Series) -> str:
    """A one-line label of a ``runs_frame`` row for pickers: ``#3 smoke · host · 2025-…``."""
    started = row["started_at"]
    when = started.strftime("%Y-%m-%d %H:%M") if not pd.isna(started) else "?"
    gpu = row.get("gpu")
    where = f"{row['machine']}" + (f" ({gpu})" if isinstance(gpu, str) and gpu else "")
    failed = int(row["failed"]) if not _nan(row["failed"]) else 0
    state = "" if not pd.isna(row["ended_at"]) else " · unfinished"
    return (
        f"#{row['id']} {row['suite_name']} · {where} · {when} UTC · "
        f"{row['cells']} cells, {failed} failed{state}"
    )


def _nan(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
