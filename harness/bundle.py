"""Bundles: results that travel between databases (``bench export --bundle``, ``bench import``).

A bundle is a ``.tar.gz`` with one JSON document per kind of record:

- ``manifest.json``: ``{"format": "bench-bundle", "version": 1, "bench", "created_at",
  "origin", "runs", "cells"}``;
- ``metric_defs.json``: the metric definitions;
- ``runs.jsonl``: one run per line with its uid, suite, harness version, git commit,
  environment, times, origin and its machine (fingerprint and facts);
- ``cells.jsonl``: one cell per line with its run's uid, identity, status, timings and its
  metrics, each with its samples.

Floats are written with ``repr`` and read back exactly. Importing merges: a run is found by
its ``uid`` (kept across databases), a cell by (run, key); what is already there is left as
it is, so importing a bundle twice, or a bundle of results that came from this database,
adds nothing. Imported runs keep where they came from in ``runs.origin`` (the bundle's
origin, unless the run had one already), which the leaderboard shows. An import is one
transaction: a bundle that fails to import adds nothing.
"""

from __future__ import annotations

import io
import json
import os
import socket
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, selectinload

from harness.errors import StoreError
from harness.store import Store
from harness.store.connect import first_line
from harness.store.schema import Cell, Machine, Metric, MetricDefRow, Run, Sample
from harness.store.store import HARDWARE, hardware_key

FORMAT = "bench-bundle"
VERSION = 1
MEMBERS = ("manifest.json", "metric_defs.json", "runs.jsonl", "cells.jsonl")
_MACHINE_FIELDS = ("fingerprint", "hostname", "ram_bytes", *HARDWARE)
_RUN_FIELDS = ("suite_name", "suite_path", "suite_hash", "harness_version", "git_commit")
_CELL_FIELDS = ("key", "model", "device", "technique", "stack", "workload", "status", "reason")
_METRIC_FIELDS = ("name", "value", "unit", "ci_low", "ci_high", "n", "source", "reason")


@dataclass(frozen=True)
class BundleSummary:
    """What an export wrote or an import added.

    Attributes:
        runs: Runs written (export) or added (import).
        cells: Cells written (export) or added (import).
        present: Cells of the bundle that the database already had (import).
        origin: The bundle's origin label.
    """

    runs: int
    cells: int
    present: int = 0
    origin: str = ""


def _time(value: datetime | None) -> str | None:
    return value.astimezone(timezone.utc).isoformat() if value is not None else None


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


def export_bundle(
    store: Store, path: str | Path, *, run_id: int | None = None, origin: str | None = None
) -> BundleSummary:
    """Write every run (or run ``run_id``) with its cells, metrics and samples to ``path``.

    Args:
        store: The database to read.
        path: The ``.tar.gz`` to write; written beside it and renamed into place.
        run_id: Only this run.
        origin: The label imports record as the runs' origin; default ``hostname:database``.

    Raises:
        StoreError: ``run_id`` names no run, or the file cannot be written.
    """
    origin = origin or f"{socket.gethostname()}:{store.where}"
    runs: list[dict[str, Any]] = []
    cells: list[str] = []
    try:
        with Session(store.engine) as session:
            query = select(Run).options(selectinload(Run.machine)).order_by(Run.id)
            if run_id is not None:
                query = query.where(Run.id == run_id)
            stored = session.scalars(query).all()
            if run_id is not None and not stored:
                raise StoreError(f"no run with id {run_id}. 'bench runs' lists the runs.")
            for run in stored:
                runs.append(_run_record(run))
                cells.extend(json.dumps(record) for record in _cell_records(session, run))
            defs = [
                {"name": d.name, "unit": d.unit, "higher_is_better": d.higher_is_better}
                | {"description": d.description}
                for d in session.scalars(select(MetricDefRow).order_by(MetricDefRow.name))
            ]
    except SQLAlchemyError as exc:
        raise StoreError(f"{store.where}: cannot read the results ({first_line(exc)}).") from exc
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "bench": runs[0]["harness_version"] if runs else None,
        "created_at": datetime.now(timezone.utc).isoformat(),
        "origin": origin,
        "runs": len(runs),
        "cells": len(cells),
    }
    documents = {
        "manifest.json": json.dumps(manifest, indent=1),
        "metric_defs.json": json.dumps(defs, indent=1),
        "runs.jsonl": "".join(json.dumps(run) + "\n" for run in runs),
        "cells.jsonl": "".join(line + "\n" for line in cells),
    }
    _write_tar(Path(path), documents)
    return BundleSummary(len(runs), len(cells), origin=origin)


def _run_record(run: Run) -> dict[str, Any]:
    machine = {name: getattr(run.machine, name) for name in _MACHINE_FIELDS}
    return {
        "uid": run.uid,
        **{name: getattr(run, name) for name in _RUN_FIELDS},
        "environment": run.environment,
        "started_at": _time(run.started_at),
        "ended_at": _time(run.ended_at),
        "origin": run.origin,
        "machine": machine,
    }


def _cell_records(session: Session, run: Run) -> Iterator[dict[str, Any]]:
    query = (
        select(Cell)
        .where(Cell.run_id == run.id)
        .options(selectinload(Cell.metrics).selectinload(Metric.samples))
        .order_by(Cell.id)
    )
    for cell in session.scalars(query):
        yield {
            "run": run.uid,
            **{name: getattr(cell, name) for name in _CELL_FIELDS},
            "started_at": _time(cell.started_at),
            "duration_s": cell.duration_s,
            "reference": cell.reference,
            "metrics": [
                {name: getattr(metric, name) for name in _METRIC_FIELDS}
                | {"samples": [sample.value for sample in metric.samples]}
                for metric in sorted(cell.metrics, key=lambda m: m.name)
            ],
        }


def _write_tar(target: Path, documents: dict[str, str]) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"
        )
        os.close(handle)
        try:
            with tarfile.open(temp_name, "w:gz") as tar:
                for name, body in documents.items():
                    data = body.encode()
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    info.mtime = int(datetime.now(timezone.utc).timestamp())
                    tar.addfile(info, io.BytesIO(data))
            os.replace(temp_name, target)
        finally:
            Path(temp_name).unlink(missing_ok=True)
    except OSError as exc:
        raise StoreError(
            f"{target}: cannot write ({exc.strerror or exc}). Pass another path."
        ) from exc


def read_bundle(path: str | Path) -> dict[str, Any]:
    """The documents of a bundle, checked: ``manifest``, ``metric_defs``, ``runs``, ``cells``.

    Raises:
        StoreError: Not a bundle, or a bundle of a newer format.
    """
    where = Path(path)
    fix = "Pass a file written by 'bench export --bundle'."
    try:
        with tarfile.open(where, "r:gz") as tar:
            texts = {}
            for name in MEMBERS:
                member = tar.extractfile(name)
                if member is None:
                    raise KeyError(name)
                texts[name] = member.read().decode()
    except (OSError, tarfile.TarError, KeyError, UnicodeDecodeError) as exc:
        raise StoreError(f"{where}: not a bench bundle ({exc}). {fix}") from exc
    try:
        manifest = json.loads(texts["manifest.json"])
        documents = {
            "manifest": manifest,
            "metric_defs": json.loads(texts["metric_defs.json"]),
            "runs": [json.loads(line) for line in texts["runs.jsonl"].splitlines() if line],
            "cells": [json.loads(line) for line in texts["cells.jsonl"].splitlines() if line],
        }
    except json.JSONDecodeError as exc:
        raise StoreError(f"{where}: damaged bundle ({exc}). {fix}") from exc
    if manifest.get("format") != FORMAT:
        raise StoreError(f"{where}: not a bench bundle (format {manifest.get('format')!r}). {fix}")
    if not isinstance(manifest.get("version"), int) or manifest["version"] > VERSION:
        raise StoreError(
            f"{where}: bundle format version {manifest.get('version')} is newer than this "
            f"bench's ({VERSION}). Upgrade bench with 'pip install -U bench'."
        )
    return documents


def import_bundle(store: Store, path: str | Path) -> BundleSummary:
    """Merge a bundle into ``store`` in one transaction; see the module docstring.

    Raises:
        StoreError: Not a bundle, a newer format, or the database refused the write.
    """
    documents = read_bundle(path)
    origin = str(documents["manifest"].get("origin") or Path(path).name)
    if store.read_only:
        raise StoreError(f"{store.where}: open read-only; open it for writing to import.")
    try:
        with Session(store.engine, expire_on_commit=False) as session, session.begin():
            summary = _merge(session, documents, origin)
    except SQLAlchemyError as exc:
        raise StoreError(
            f"{path}: cannot import into {store.where} ({first_line(exc)}); nothing was added."
        ) from exc
    return summary


def _merge(session: Session, documents: dict[str, Any], origin: str) -> BundleSummary:
    for record in documents["metric_defs"]:
        if session.get(MetricDefRow, record["name"]) is None:
            session.add(MetricDefRow(**record))
    runs: dict[str, Run] = {}
    added_runs = 0
    for record in documents["runs"]:
        run = session.scalar(select(Run).where(Run.uid == record["uid"]))
        if run is None:
            run = Run(
                uid=record["uid"],
                **{name: record[name] for name in _RUN_FIELDS},
                environment=record["environment"],
                started_at=_parse_time(record["started_at"]),
                ended_at=_parse_time(record["ended_at"]),
                origin=record["origin"] or origin,
                machine_id=_machine_id(session, record["machine"]),
            )
            session.add(run)
            session.flush()
            added_runs += 1
        runs[record["uid"]] = run
    added = present = 0
    for record in documents["cells"]:
        run = runs[record["run"]]
        exists = session.scalar(
            select(Cell.id).where(Cell.run_id == run.id, Cell.key == record["key"])
        )
        if exists is not None:
            present += 1
            continue
        session.add(
            Cell(
                run_id=run.id,
                **{name: record[name] for name in _CELL_FIELDS},
                started_at=_parse_time(record["started_at"]),
                duration_s=record["duration_s"],
                reference=record["reference"],
                metrics=[
                    Metric(
                        **{name: metric[name] for name in _METRIC_FIELDS},
                        samples=[
                            Sample(position=i, value=value)
                            for i, value in enumerate(metric["samples"])
                        ],
                    )
                    for metric in record["metrics"]
                ],
            )
        )
        added += 1
    session.flush()
    return BundleSummary(added_runs, added, present, origin)


def _machine_id(session: Session, record: dict[str, Any]) -> int:
    machine = session.scalar(select(Machine).where(Machine.fingerprint == record["fingerprint"]))
    if machine is None:
        facts = {name: record[name] for name in _MACHINE_FIELDS}
        machine = Machine(
            **facts, hardware=hardware_key(facts), created_at=datetime.now(timezone.utc)
        )
        session.add(machine)
        session.flush()
    return machine.id
