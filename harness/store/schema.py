"""SQLAlchemy 2 typed ORM models of the results database (DESIGN §8).

Tables: ``machines``, ``runs``, ``cells``, ``metrics`` (long format: one row per cell and
metric name, so a new metric needs no migration), ``samples``, ``metric_defs`` and ``claims``
(which runner is measuring which cell, see :mod:`harness.store.claims`). These rows are separate
from the frozen records in :mod:`harness.results`; :mod:`harness.store.store` converts
explicitly between the two.

Every change here needs a new Alembic revision in ``harness/store/migrations/versions``;
``tests/test_store.py`` fails when the migrations and these models disagree.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Double,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

# Explicit constraint names, so that migrations (and SQLite batch mode, which recreates
# tables) can refer to every constraint by name.
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    SQLite has no timezone support and SQLAlchemy's SQLite ``DATETIME`` drops ``tzinfo``
    silently, so values are stored as naive UTC there and given back as aware UTC
    datetimes everywhere. Naive datetimes are refused: their timezone is unknown.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware UTC datetime")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    """Declarative base holding the metadata that the migrations must match."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Machine(Base):
    """A machine that ran cells, identified by its hardware fingerprint."""

    __tablename__ = "machines"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    hostname: Mapped[str] = mapped_column(String(255))
    cpu: Mapped[str] = mapped_column(String(255))  # model name
    cpu_count: Mapped[int] = mapped_column(Integer)
    ram_bytes: Mapped[int] = mapped_column(BigInteger)
    gpu: Mapped[str | None] = mapped_column(String(255))  # e.g. "NVIDIA H100 80GB HBM3"
    gpu_count: Mapped[int] = mapped_column(Integer)
    driver: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # sha256 of the facts above but hostname and RAM: identical nodes share results.
    hardware: Mapped[str] = mapped_column(String(64), index=True)

    runs: Mapped[list[Run]] = relationship(back_populates="machine")


class Run(Base):
    """One invocation of ``bench run`` on one suite; ``ended_at`` is null while running."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    suite_name: Mapped[str] = mapped_column(String(255))
    suite_path: Mapped[str] = mapped_column(Text)
    suite_hash: Mapped[str] = mapped_column(String(64))
    machine_id: Mapped[int] = mapped_column(ForeignKey("machines.id"))
    harness_version: Mapped[str] = mapped_column(String(64))
    git_commit: Mapped[str | None] = mapped_column(String(64))
    environment: Mapped[dict[str, Any]] = mapped_column(JSON)  # library versions etc.
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    uid: Mapped[str] = mapped_column(
        String(36), unique=True, index=True
    )  # identity across databases
    origin: Mapped[str | None] = mapped_column(Text)  # null: measured into this database

    machine: Mapped[Machine] = relationship(back_populates="runs")
    cells: Mapped[list[Cell]] = relationship(back_populates="run")


class Cell(Base):
    """The outcome of one cell in one run; unique per (run, cell key)."""

    __tablename__ = "cells"
    __table_args__ = (UniqueConstraint("run_id", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    key: Mapped[str] = mapped_column(String(64), index=True)
    model: Mapped[str] = mapped_column(Text)
    device: Mapped[str] = mapped_column(String(64))
    technique: Mapped[str] = mapped_column(Text)  # readable stack label
    stack: Mapped[list[dict[str, Any]]] = mapped_column(JSON)  # [{"name", "config"}, ...]
    workload: Mapped[dict[str, Any]] = mapped_column(JSON)  # {"name", "params"}
    status: Mapped[str] = mapped_column(String(16))  # one of harness.results.STATUSES
    reason: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    duration_s: Mapped[float] = mapped_column(Double)
    reference: Mapped[bool] = mapped_column(Boolean, default=False)  # the reference stack
    # what exactly was measured (harness.fingerprint); null for cells stored before 0005
    fingerprint: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    fingerprint_hash: Mapped[str | None] = mapped_column(String(64), index=True)  # its identity

    run: Mapped[Run] = relationship(back_populates="cells")
    metrics: Mapped[list[Metric]] = relationship(
        back_populates="cell", cascade="all, delete-orphan", passive_deletes=True
    )


class Metric(Base):
    """One metric value of one cell (long format); ``value`` is null with a ``reason``."""

    __tablename__ = "metrics"
    __table_args__ = (UniqueConstraint("cell_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cell_id: Mapped[int] = mapped_column(ForeignKey("cells.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    value: Mapped[float | None] = mapped_column(Double)
    unit: Mapped[str] = mapped_column(String(64))
    ci_low: Mapped[float | None] = mapped_column(Double)
    ci_high: Mapped[float | None] = mapped_column(Double)
    n: Mapped[int] = mapped_column(Integer)
    source: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)

    cell: Mapped[Cell] = relationship(back_populates="metrics")
    samples: Mapped[list[Sample]] = relationship(
        back_populates="metric",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="Sample.position",
    )


class Sample(Base):
    """One sample behind a metric (a repeat's TPOT, a task's per-trial outcome), in order."""

    __tablename__ = "samples"
    __table_args__ = (UniqueConstraint("metric_id", "position"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    metric_id: Mapped[int] = mapped_column(ForeignKey("metrics.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)  # 0, 1, ... in the order measured
    value: Mapped[float | None] = mapped_column(Double)  # null for a NaN sample

    metric: Mapped[Metric] = relationship(back_populates="samples")


class MetricDefRow(Base):
    """A registered metric definition (mirrors :class:`harness.results.MetricDef`)."""

    __tablename__ = "metric_defs"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    unit: Mapped[str] = mapped_column(String(64))
    higher_is_better: Mapped[bool] = mapped_column(Boolean)
    description: Mapped[str] = mapped_column(Text)
    # harness.results.METRIC_KINDS; rows of older databases get theirs from the name (0007)
    kind: Mapped[str] = mapped_column(String(32), default="other")


class Claim(Base):
    """A runner's claim on a cell, taken before measuring it (:mod:`harness.store.claims`).

    Unique per (``scope``, ``key``): the scope is the hardware that measures the cell.
    Times are unix seconds of the database's clock, so runners on machines whose clocks
    disagree still agree on expiry.
    """

    __tablename__ = "claims"
    __table_args__ = (UniqueConstraint("scope", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scope: Mapped[str] = mapped_column(String(64))  # the hardware key of the machine
    key: Mapped[str] = mapped_column(String(64))  # the cell key
    holder: Mapped[str] = mapped_column(String(64), index=True)  # the runner's id
    claimed_at: Mapped[float] = mapped_column(Double)
    heartbeat_at: Mapped[float] = mapped_column(Double)  # the holder's last renewal
    expires_at: Mapped[float] = mapped_column(Double)  # heartbeat + the holder's lease
    finished_at: Mapped[float | None] = mapped_column(Double)  # the result is recorded
