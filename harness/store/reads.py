"""The queries behind :class:`~harness.store.Store`'s reads, one function per read.

Each takes an open :class:`~sqlalchemy.Connection` (the store opens it, in a plain read
transaction, and turns database errors into ``StoreError``) and returns plain values or a
DataFrame shaped by :mod:`.frames`. Like the rest of the package it must not import torch.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import pandas as pd
from sqlalchemy import Connection, Select, case, func, select

from harness.results import DONE_STATUSES, METRIC_KINDS, STATUSES, MetricDef, kind_from_name
from harness.store.frames import METRIC_COLUMNS, RUN_COLUMNS, cells_table
from harness.store.schema import Cell, Machine, Metric, MetricDefRow, Run, Sample

FAILED_STATUSES: tuple[str, ...] = tuple(s for s in STATUSES if s not in DONE_STATUSES)
_CHUNK = 500  # bound parameters per IN (...) clause; SQLite allows 32766


def done_keys(connection: Connection, machine_id: int, keys: Collection[str]) -> set[str]:
    """The keys among ``keys`` with an ``ok`` or ``skipped`` cell in any run on a machine
    with the same hardware as ``machine_id``'s."""
    wanted = sorted(set(keys))
    hardware = select(Machine.hardware).where(Machine.id == machine_id).scalar_subquery()
    done: set[str] = set()
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        done.update(
            connection.scalars(
                select(Cell.key)
                .distinct()
                .join(Run, Cell.run_id == Run.id)
                .join(Machine, Run.machine_id == Machine.id)
                .where(
                    Machine.hardware == hardware,
                    Cell.status.in_(DONE_STATUSES),
                    Cell.key.in_(chunk),
                )
            )
        )
    return done


def skipped_keys(
    connection: Connection, machine_id: int, keys: Collection[str], reason_prefix: str
) -> set[str]:
    """The keys among ``keys`` skipped on the machine with a reason starting with
    ``reason_prefix``, and never ``ok`` there."""
    wanted = sorted(set(keys))
    found: set[str] = set()
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        on_machine = (Run.machine_id == machine_id, Cell.key.in_(chunk))
        skipped = set(
            connection.scalars(
                select(Cell.key)
                .join(Run, Cell.run_id == Run.id)
                .where(*on_machine, Cell.status == "skipped", Cell.reason.startswith(reason_prefix))
            )
        )
        ok = set(
            connection.scalars(
                select(Cell.key)
                .join(Run, Cell.run_id == Run.id)
                .where(*on_machine, Cell.status == "ok")
            )
        )
        found |= skipped - ok
    return found


def metric_defs(connection: Connection) -> dict[str, MetricDef]:
    """All stored metric definitions by name, sorted by name."""
    rows = connection.execute(select(MetricDefRow.__table__).order_by(MetricDefRow.name))
    return {
        row.name: MetricDef(
            name=row.name,
            unit=row.unit,
            higher_is_better=bool(row.higher_is_better),
            description=row.description,
            kind=row.kind if row.kind in METRIC_KINDS else kind_from_name(row.name),
        )
        for row in rows
    }


def runs_frame(connection: Connection) -> pd.DataFrame:
    """One row per run, oldest first, with :data:`~.frames.RUN_COLUMNS`."""

    def count(statuses: Collection[str]) -> Any:
        return func.coalesce(func.sum(case((Cell.status.in_(statuses), 1), else_=0)), 0)

    stmt = (
        select(
            Run.id,
            Run.suite_name,
            Run.started_at,
            Run.ended_at,
            func.count(Cell.id).label("cells"),
            count(["ok"]).label("ok"),
            count(FAILED_STATUSES).label("failed"),
            Machine.hostname.label("machine"),
            Machine.gpu,
            Run.origin,
        )
        .join(Machine, Run.machine_id == Machine.id)
        .outerjoin(Cell, Cell.run_id == Run.id)
        .group_by(
            Run.id,
            Run.suite_name,
            Run.started_at,
            Run.ended_at,
            Machine.hostname,
            Machine.gpu,
            Run.origin,
        )
        .order_by(Run.id)
    )
    rows = [tuple(row) for row in connection.execute(stmt)]
    frame = pd.DataFrame(rows, columns=list(RUN_COLUMNS))
    for column in ("started_at", "ended_at"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    for column in ("id", "cells", "ok", "failed"):
        frame[column] = frame[column].astype("int64")
    return frame


def cell_durations(connection: Connection) -> dict[tuple[str, str], list[float]]:
    """Durations (s) of every ``ok`` cell, by (model, workload name), oldest first."""
    rows = connection.execute(
        select(Cell.model, Cell.workload, Cell.duration_s)
        .where(Cell.status == "ok")
        .order_by(Cell.id)
    )
    out: dict[tuple[str, str], list[float]] = {}
    for model, workload, duration in rows:
        name = workload.get("name", "") if isinstance(workload, dict) else ""
        out.setdefault((model, str(name)), []).append(float(duration))
    return out


def run_exists(connection: Connection, run_id: int) -> bool:
    """Whether a run with this id is stored."""
    runs = select(func.count()).select_from(Run).where(Run.id == run_id)
    return bool(connection.scalar(runs))


def _chosen(run_id: int | None, suite: str | None) -> Select[Any]:
    """Ids of the cells of run ``run_id``, or the latest per (machine, cell key); ``suite``
    keeps only runs of that suite name."""
    if run_id is not None:
        chosen = select(Cell.id).where(Cell.run_id == run_id)
        if suite is not None:
            chosen = chosen.join(Run, Cell.run_id == Run.id).where(Run.suite_name == suite)
        return chosen
    chosen = (
        select(func.max(Cell.id))
        .join(Run, Cell.run_id == Run.id)
        .group_by(Run.machine_id, Cell.key)
    )
    if suite is not None:
        chosen = chosen.where(Run.suite_name == suite)
    return chosen


def samples_frame(connection: Connection, *, run_id: int | None, suite: str | None) -> pd.DataFrame:
    """One row per sample of the chosen cells' metrics; see ``Store.samples_frame``."""
    stmt = (
        select(Cell.run_id, Cell.key, Metric.name, Sample.position, Sample.value)
        .join(Metric, Sample.metric_id == Metric.id)
        .join(Cell, Metric.cell_id == Cell.id)
        .where(Cell.id.in_(_chosen(run_id, suite).scalar_subquery()))
        .order_by(Cell.run_id, Cell.id, Metric.name, Sample.position)
    )
    rows = [tuple(row) for row in connection.execute(stmt)]
    frame = pd.DataFrame(rows, columns=["run_id", "cell_key", "name", "position", "value"])
    return frame.astype({"run_id": "int64", "position": "int64", "value": "float64"})


def cells_frame(
    connection: Connection, *, run_id: int | None, suite: str | None, with_ci: bool
) -> pd.DataFrame:
    """One row per chosen cell, one column per metric; see ``Store.cells_frame``.

    The chosen cells are those of run ``run_id``, or without it the latest cell per
    (machine, cell key); ``suite`` keeps only runs of that suite name.
    """
    chosen = _chosen(run_id, suite)
    cells_stmt = (
        select(
            Cell.id,
            Cell.run_id,
            Run.suite_name,
            Cell.key,
            Cell.model,
            Cell.device,
            Cell.technique,
            Cell.workload,
            Cell.status,
            Cell.reason,
            Cell.reference,
        )
        .join(Run, Cell.run_id == Run.id)
        .where(Cell.id.in_(chosen.scalar_subquery()))
        .order_by(Cell.run_id, Cell.id)
    )
    metrics_stmt = select(
        Metric.cell_id, Metric.name, Metric.value, Metric.ci_low, Metric.ci_high
    ).where(Metric.cell_id.in_(chosen.scalar_subquery()))
    cells = [tuple(row) for row in connection.execute(cells_stmt)]
    metrics = [tuple(row) for row in connection.execute(metrics_stmt)]
    return cells_table(cells, metrics, with_ci=with_ci)


def run_records(connection: Connection) -> list[dict[str, Any]]:
    """Every run with its provenance and machine, oldest first; see ``Store.run_records``."""
    cells = select(func.count(Cell.id)).where(Cell.run_id == Run.id).scalar_subquery()
    stmt = (
        select(
            Run.id,
            Run.suite_name,
            Run.suite_hash,
            Run.harness_version,
            Run.git_commit,
            Run.environment,
            Run.started_at,
            Run.ended_at,
            Machine.fingerprint.label("machine_fingerprint"),
            Machine.hostname.label("machine"),
            Machine.cpu,
            Machine.gpu,
            cells.label("cells"),
        )
        .join(Machine, Run.machine_id == Machine.id)
        .order_by(Run.id)
    )
    return [dict(row) for row in connection.execute(stmt).mappings()]


def metrics_frame(connection: Connection, *, run_id: int) -> pd.DataFrame:
    """Every metric row of the run's cells, long format; see ``Store.metrics_frame``."""
    stmt = (
        select(
            Cell.key,
            Metric.name,
            Metric.value,
            Metric.unit,
            Metric.ci_low,
            Metric.ci_high,
            Metric.n,
            Metric.source,
            Metric.reason,
        )
        .join(Cell, Metric.cell_id == Cell.id)
        .where(Cell.run_id == run_id)
        .order_by(Cell.id, Metric.name)
    )
    rows = [tuple(row) for row in connection.execute(stmt)]
    frame = pd.DataFrame(rows, columns=list(METRIC_COLUMNS))
    return frame.astype(
        {"value": "float64", "ci_low": "float64", "ci_high": "float64", "n": "int64"}
    )


def fingerprints(connection: Connection, *, run_id: int) -> dict[str, dict[str, Any] | None]:
    """Cell key -> stored fingerprint (None before migration 0005) of the run's cells."""
    stmt = select(Cell.key, Cell.fingerprint).where(Cell.run_id == run_id).order_by(Cell.id)
    return {key: fingerprint for key, fingerprint in connection.execute(stmt)}


def metric_reasons(
    connection: Connection, name: str, *, run_id: int | None, suite: str | None
) -> dict[str, str]:
    """The reason stored with metric ``name`` per cell key, for the chosen cells (those of
    ``cells_frame``); cells without the metric or without a reason are left out."""
    stmt = (
        select(Cell.key, Metric.reason)
        .join(Metric, Metric.cell_id == Cell.id)
        .where(Cell.id.in_(_chosen(run_id, suite).scalar_subquery()), Metric.name == name)
        .order_by(Cell.id)
    )
    return {key: reason for key, reason in connection.execute(stmt) if reason}
