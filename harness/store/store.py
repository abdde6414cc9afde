"""The results store: writes cells as they finish, reads them back as DataFrames.

One transaction per write (``BEGIN IMMEDIATE`` on SQLite, see :mod:`.connect`); the runner
records each cell with its metrics atomically, so killing ``bench run`` loses at most the
cell in flight. Reads return pandas DataFrames for ``bench results``, ``bench export`` and
the dashboard; their queries are in :mod:`.reads`, the frames' shapes and the export files
in :mod:`.frames`. This package must not import torch: the dashboard imports it.
"""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
from sqlalchemy import Connection, Engine, delete, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from harness.errors import StoreError
from harness.fingerprint import identity_hash
from harness.results import STATUSES, CellResult, MetricDef, Value
from harness.store import claims, reads
from harness.store.claims import ClaimRef, ClaimState
from harness.store.connect import READ_OPTION, first_line, fix_for, open_engine, resolve_url
from harness.store.frames import EXPORT_FORMATS, ExportFormat, write_file
from harness.store.schema import Cell, Machine, Metric, MetricDefRow, Run, Sample

MACHINE_REQUIRED: tuple[str, ...] = ("hostname", "cpu", "cpu_count", "ram_bytes")
MACHINE_OPTIONAL: dict[str, Any] = {"gpu": None, "gpu_count": 0, "driver": None}
#: The machine facts that make its hardware: results resume per hardware (the same CPU and
#: GPU models, counts and driver), so identical nodes of a cluster share them.
HARDWARE: tuple[str, ...] = ("cpu", "cpu_count", "gpu", "gpu_count", "driver")
T = TypeVar("T")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def hardware_key(info: Mapping[str, Any]) -> str:
    """sha256 of the :data:`HARDWARE` facts of a machine (missing optional ones as default).

    Migration 0004 computes the same hash for machines stored before it.
    """
    facts = {name: info.get(name, MACHINE_OPTIONAL.get(name)) for name in HARDWARE}
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()


class Store:
    """The results database behind a SQLAlchemy engine.

    Open it with :meth:`open`; it is also a context manager that closes itself.

    Attributes:
        url: The SQLAlchemy URL it was opened with (after resolving None and bare paths).
        engine: The engine, for read-only queries of the dashboard.
        read_only: Whether writes are refused.
    """

    url: str
    engine: Engine
    read_only: bool

    def __init__(self, url: str, engine: Engine, where: str, *, read_only: bool) -> None:
        """Wrap an engine prepared by :func:`harness.store.connect.open_engine`."""
        self.url = url
        self.engine = engine
        self.read_only = read_only
        self._where = where

    @classmethod
    def open(cls, url: str | None = None, *, read_only: bool = False) -> Store:
        """Open (and unless ``read_only``, create or migrate) the results database.

        Args:
            url: A SQLAlchemy URL or a SQLite file path; None means ``$BENCH_DB``, else
                ``sqlite:///results/bench.db`` relative to the working directory.
            read_only: Open without writing anything; SQLite files open with
                ``mode=ro``. The database must exist and be at this code's schema.

        Raises:
            StoreError: The database cannot be used; the message names it and the fix.
        """
        resolved = resolve_url(url)
        engine, where = open_engine(resolved, read_only=read_only)
        return cls(resolved, engine, where, read_only=read_only)

    @property
    def where(self) -> str:
        """The database as messages name it: the SQLite file, else the URL, password hidden."""
        return self._where

    def close(self) -> None:
        """Release every connection."""
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "read-only" if self.read_only else "read-write"
        return f"Store({self._where!r}, {mode})"

    # -- transactions -------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[Session]:
        """One write transaction (``BEGIN IMMEDIATE`` on SQLite), committed on success."""
        if self.read_only:
            raise StoreError(
                f"{self._where}: the results database is open read-only; "
                "open it without read_only to write."
            )
        try:
            with Session(self.engine, expire_on_commit=False) as session, session.begin():
                yield session
        except StoreError:
            raise
        except SQLAlchemyError as exc:
            default = "Check that it is reachable and writable, or pass --db with another path."
            raise StoreError(
                f"{self._where}: cannot write to the results database ({first_line(exc)}). "
                f"{fix_for(exc, self._where, default)}"
            ) from exc

    def _write_retrying(self, write: Callable[[Session], T]) -> T:
        """Run an upsert in a write transaction, once more if it lost an insert race.

        On PostgreSQL two writers may insert the same new unique row at once; the loser
        gets an IntegrityError and its second attempt finds the winner's row. (SQLite's
        ``BEGIN IMMEDIATE`` serializes writers, so there the race cannot happen.)
        """
        try:
            with self._write() as session:
                return write(session)
        except StoreError as exc:
            if not isinstance(exc.__cause__, IntegrityError):
                raise
        with self._write() as session:
            return write(session)

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        """A connection whose transaction is a plain (deferred) read."""
        try:
            with self.engine.connect() as connection:
                connection.execution_options(**{READ_OPTION: True})
                yield connection
        except StoreError:
            raise
        except SQLAlchemyError as exc:
            default = "Check that it is reachable, or pass --db with another path."
            raise StoreError(
                f"{self._where}: cannot read the results database ({first_line(exc)}). "
                f"{fix_for(exc, self._where, default)}"
            ) from exc

    # -- writes ---------------------------------------------------------------------------

    def ensure_machine(self, fingerprint: str, info: Mapping[str, Any]) -> int:
        """Insert or update the machine with this fingerprint.

        Args:
            fingerprint: Hardware fingerprint, at most 64 characters.
            info: Machine columns: ``hostname``, ``cpu``, ``cpu_count``, ``ram_bytes``
                (required), ``gpu``, ``gpu_count``, ``driver`` (optional).

        Returns:
            The machine id.
        """
        allowed = set(MACHINE_REQUIRED) | set(MACHINE_OPTIONAL)
        unknown = sorted(set(info) - allowed)
        missing = [key for key in MACHINE_REQUIRED if key not in info]
        if unknown or missing:
            problem = f"unknown keys {unknown}" if unknown else f"missing keys {missing}"
            raise StoreError(
                f"ensure_machine({fingerprint!r}): {problem}. "
                f"Allowed: {', '.join(sorted(allowed))}; required: {', '.join(MACHINE_REQUIRED)}."
            )
        columns = {**MACHINE_OPTIONAL, **info, "hardware": hardware_key(info)}

        def upsert(session: Session) -> int:
            machine = session.scalar(select(Machine).where(Machine.fingerprint == fingerprint))
            if machine is None:
                machine = Machine(fingerprint=fingerprint, created_at=_now(), **columns)
                session.add(machine)
            else:
                for key, value in columns.items():
                    setattr(machine, key, value)
            session.flush()
            return machine.id

        return self._write_retrying(upsert)

    def start_run(
        self,
        *,
        suite_name: str,
        suite_path: str,
        suite_hash: str,
        machine_id: int,
        harness_version: str,
        git_commit: str | None,
        environment: Mapping[str, Any],
        uid: str | None = None,
        origin: str | None = None,
    ) -> int:
        """Record the start of a run (``started_at`` = now, UTC) and return its id.

        Args:
            uid: The run's identity across databases; None makes a new UUID.
            origin: Where the results come from; None for a run measured into this
                database (``bench import`` sets the bundle's).
        """
        with self._write() as session:
            if session.get(Machine, machine_id) is None:
                raise StoreError(
                    f"{self._where}: no machine with id {machine_id}; call ensure_machine() first."
                )
            run = Run(
                suite_name=suite_name,
                suite_path=suite_path,
                suite_hash=suite_hash,
                machine_id=machine_id,
                harness_version=harness_version,
                git_commit=git_commit,
                environment=dict(environment),
                started_at=_now(),
                uid=uid or str(uuid.uuid4()),
                origin=origin,
            )
            session.add(run)
            session.flush()
            return run.id

    def finish_run(self, run_id: int) -> None:
        """Set the run's ``ended_at`` to now (UTC); a run without it was interrupted."""
        with self._write() as session:
            done = session.execute(
                update(Run).where(Run.id == run_id).values(ended_at=_now()),
                execution_options={"synchronize_session": False},
            )
            if done.rowcount != 1:  # type: ignore[attr-defined]
                raise StoreError(f"{self._where}: no run with id {run_id}; see 'bench results'.")

    def record(self, run_id: int, result: CellResult, *, claim: ClaimRef | None = None) -> int:
        """Store one cell and all its metrics in one transaction.

        A cell with the same key already in this run is replaced (deleted and inserted in
        the same transaction), so a retried cell never appears twice.

        Args:
            run_id: The run the cell belongs to.
            result: The cell's outcome.
            claim: The claim under which the cell was measured; it is finished in the
                same transaction (:func:`harness.store.claims.finish`).

        Returns:
            The new cell id.

        Raises:
            ClaimLost: ``claim`` was taken over by another runner; nothing was written.
        """
        if result.status not in STATUSES:
            raise StoreError(
                f"cell {result.key}: unknown status {result.status!r}. "
                f"Allowed: {', '.join(STATUSES)}."
            )
        names = [value.name for value in result.values]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise StoreError(
                f"cell {result.key}: metric {', '.join(duplicates)} reported more than once; "
                "each metric name may appear once per cell."
            )
        with self._write() as session:
            if session.get(Run, run_id) is None:
                raise StoreError(f"{self._where}: no run with id {run_id}; call start_run() first.")
            if claim is not None:
                claims.finish(session, claim)
            old = select(Cell.id).where(Cell.run_id == run_id, Cell.key == result.key)
            quiet = {"synchronize_session": False}
            # Explicit, so backends without enforced ON DELETE CASCADE behave the same.
            old_metrics = select(Metric.id).where(Metric.cell_id.in_(old))
            session.execute(
                delete(Sample).where(Sample.metric_id.in_(old_metrics)), execution_options=quiet
            )
            session.execute(delete(Metric).where(Metric.cell_id.in_(old)), execution_options=quiet)
            session.execute(
                delete(Cell).where(Cell.run_id == run_id, Cell.key == result.key),
                execution_options=quiet,
            )
            cell = Cell(
                run_id=run_id,
                key=result.key,
                model=result.model,
                device=result.device,
                technique=result.technique,
                stack=[dict(layer) for layer in result.stack],
                workload=dict(result.workload),
                status=result.status,
                reason=result.reason,
                started_at=datetime.fromtimestamp(result.started_at, tz=timezone.utc),
                duration_s=result.duration_s,
                reference=result.reference,
                fingerprint=result.fingerprint,
                fingerprint_hash=identity_hash(result.fingerprint),
                metrics=[_metric_row(value) for value in result.values],
            )
            session.add(cell)
            session.flush()
            return cell.id

    def save_metric_defs(self, defs: Iterable[MetricDef]) -> None:
        """Insert or update metric definitions by name."""
        rows = [
            MetricDefRow(
                name=d.name,
                unit=d.unit,
                higher_is_better=d.higher_is_better,
                description=d.description,
                kind=d.kind,
            )
            for d in {d.name: d for d in defs}.values()
        ]

        def upsert(session: Session) -> None:
            for row in rows:
                session.merge(row)

        self._write_retrying(upsert)

    # -- claims (:mod:`.claims`) ----------------------------------------------------------

    def clock(self) -> float:
        """The database's current time, unix seconds: the clock claims are judged by."""
        with self._write() as session:
            return claims.clock(session)

    def claim(
        self, refs: Sequence[ClaimRef], *, since: float, lease_s: float
    ) -> dict[str, ClaimState]:
        """Claim cells before measuring them, all in one transaction.

        See :func:`harness.store.claims.take` for the states.

        Returns:
            Cell key -> ``taken``, ``held`` or ``done``.
        """
        with self._write() as session:
            return {
                ref.key: claims.take(session, ref, since=since, lease_s=lease_s) for ref in refs
            }

    def renew_claims(self, holder: str, lease_s: float) -> int:
        """The heartbeat: extend ``holder``'s unfinished claims by ``lease_s`` from now."""
        with self._write() as session:
            return claims.renew(session, holder, lease_s)

    def release_claims(self, holder: str) -> int:
        """Drop ``holder``'s unfinished claims (a runner that stops early)."""
        with self._write() as session:
            return claims.release(session, holder)

    # -- reads (queries in :mod:`.reads`) -----------------------------------------------

    def done_keys(self, machine_id: int, keys: Collection[str]) -> set[str]:
        """The keys among ``keys`` with an ``ok`` or ``skipped`` cell on this hardware.

        Any run on any machine with the same :func:`hardware_key` counts, so a suite
        interrupted and run again resumes where it stopped, and identical nodes of a
        cluster share their results.
        """
        with self._read() as connection:
            return reads.done_keys(connection, machine_id, keys)

    def cell_durations(self) -> dict[tuple[str, str], list[float]]:
        """How long each ``ok`` cell took, s, by (model, workload name): the history that
        ``bench check`` estimates a suite's wall time from."""
        with self._read() as connection:
            return reads.cell_durations(connection)

    def skipped_keys(self, machine_id: int, keys: Collection[str], reason_prefix: str) -> set[str]:
        """The keys among ``keys`` skipped on this machine for a reason starting with
        ``reason_prefix`` (e.g. pre-flight's ``predicted OOM:``) and never ``ok`` there."""
        with self._read() as connection:
            return reads.skipped_keys(connection, machine_id, keys, reason_prefix)

    def metric_defs(self) -> dict[str, MetricDef]:
        """All stored metric definitions by name, sorted by name."""
        with self._read() as connection:
            return reads.metric_defs(connection)

    def runs_frame(self) -> pd.DataFrame:
        """One row per run, oldest first.

        Columns: ``id, suite_name, started_at, ended_at`` (UTC; ``ended_at`` NaT for an
        interrupted or running run), ``cells`` (count), ``ok``, ``failed`` (cells whose
        status is neither ok nor skipped), ``machine`` (hostname), ``gpu``, ``origin``
        (where an imported run came from; None for runs measured into this database).
        """
        with self._read() as connection:
            return reads.runs_frame(connection)

    def cells_frame(
        self, *, run_id: int | None = None, suite: str | None = None, with_ci: bool = False
    ) -> pd.DataFrame:
        """One row per cell, then one column per metric holding its value.

        Args:
            run_id: Only this run's cells. Without it, the latest cell per (machine, cell
                key) over all runs, so a suite resumed over several runs shows each cell
                once.
            suite: Only runs of the suite with this name.
            with_ci: Add ``<metric>.ci_low`` and ``<metric>.ci_high`` after each metric.

        Returns:
            Columns ``run_id, suite, cell_key, model, device, technique, workload``
            (:func:`workload_label`), ``status, reason, reference`` (the cell is of the
            suite's reference stack), then the metrics sorted by name;
            rows ordered by run, then by insertion. Missing values are NaN.

        Raises:
            StoreError: ``run_id`` names no run.
        """
        with self._read() as connection:
            if run_id is not None and not reads.run_exists(connection, run_id):
                raise StoreError(
                    f"{self._where}: no run with id {run_id}. 'bench results' lists the runs."
                )
            return reads.cells_frame(connection, run_id=run_id, suite=suite, with_ci=with_ci)

    def samples_frame(self, *, run_id: int | None = None, suite: str | None = None) -> pd.DataFrame:
        """The samples behind the metrics of the cells :meth:`cells_frame` chooses.

        Returns:
            Columns ``run_id, cell_key, name, position, value`` (one row per sample, in
            the order measured; ``value`` NaN for a NaN sample).
        """
        with self._read() as connection:
            return reads.samples_frame(connection, run_id=run_id, suite=suite)

    def run_records(self) -> list[dict[str, Any]]:
        """Every run with its provenance, oldest first (``bench compare`` resolves sides).

        Returns:
            One mapping per run: ``id, suite_name, suite_hash, harness_version,
            git_commit, environment`` (dict), ``started_at, ended_at`` (UTC; ``ended_at``
            None while running or interrupted), ``machine_fingerprint, machine``
            (hostname), ``cpu, gpu`` and ``cells`` (count).
        """
        with self._read() as connection:
            return reads.run_records(connection)

    def metrics_frame(self, *, run_id: int) -> pd.DataFrame:
        """Every metric of the run's cells in long format, with its count and source.

        Returns:
            Columns :data:`~harness.store.frames.METRIC_COLUMNS` (``cell_key, name, value,
            unit, ci_low, ci_high, n, source, reason``); NaN where a value is null.

        Raises:
            StoreError: ``run_id`` names no run.
        """
        with self._read() as connection:
            self._check_run(connection, run_id)
            return reads.metrics_frame(connection, run_id=run_id)

    def fingerprints(self, *, run_id: int) -> dict[str, dict[str, Any] | None]:
        """Cell key -> fingerprint (``harness.fingerprint``) of the run's cells; None for
        cells stored before fingerprints existed.

        Raises:
            StoreError: ``run_id`` names no run.
        """
        with self._read() as connection:
            self._check_run(connection, run_id)
            return reads.fingerprints(connection, run_id=run_id)

    def _check_run(self, connection: Connection, run_id: int) -> None:
        if not reads.run_exists(connection, run_id):
            raise StoreError(
                f"{self._where}: no run with id {run_id}. 'bench runs' lists the runs."
            )

    def metric_reasons(
        self, name: str, *, run_id: int | None = None, suite: str | None = None
    ) -> dict[str, str]:
        """The reason stored with metric ``name`` (a gate's verdict, a check's finding) per
        cell key, for the cells :meth:`cells_frame` chooses."""
        with self._read() as connection:
            return reads.metric_reasons(connection, name, run_id=run_id, suite=suite)

    def export(self, fmt: ExportFormat, path: str | Path, *, run_id: int | None = None) -> int:
        """Write :meth:`cells_frame` (without CI columns) to a file.

        The file is written beside the target under a temporary name and renamed into
        place, so a failure never leaves a half-written file.

        Args:
            fmt: ``csv``, ``json`` (an array of one object per row; missing values are
                null) or ``parquet``.
            path: The file to write; its folder is created.
            run_id: Only this run; else the latest cell per machine and key.

        Returns:
            The number of rows written.
        """
        if fmt not in EXPORT_FORMATS:
            raise StoreError(
                f"export: unknown format {fmt!r}. Allowed: {', '.join(EXPORT_FORMATS)}."
            )
        frame = self.cells_frame(run_id=run_id)
        write_file(frame, fmt, Path(path))
        return len(frame)


def _metric_row(value: Value) -> Metric:
    number = value.value
    reason = value.reason
    if number is not None and math.isnan(number):
        # SQLite turns NaN into NULL anyway; say so instead of losing it silently.
        number, reason = None, reason or "value was NaN"
    return Metric(
        name=value.name,
        value=number,
        unit=value.unit,
        ci_low=value.ci_low,
        ci_high=value.ci_high,
        n=value.n,
        source=value.source,
        reason=reason,
        samples=[
            Sample(position=i, value=None if math.isnan(x) else x)
            for i, x in enumerate(value.samples)
        ],
    )
