"""Scale-out: cell claims for concurrent runners, run identity and provenance, hardware.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 14:00:00

- ``claims``: one row per (hardware, cell key) that a runner took before measuring it, with
  its holder, last heartbeat, lease expiry and finish time (unix seconds of the database's clock).
- ``runs.uid``: a run's identity across databases (a bundle imported twice adds nothing);
  existing runs get a fresh one.
- ``runs.origin``: where a run's results came from (null: measured into this database).
- ``machines.hardware``: the machine's facts without its hostname and RAM size; results
  resume per hardware, so identical nodes share them. Existing rows are backfilled with the
  same hash that ``harness.store.store.hardware_key`` computes.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_HARDWARE = ("cpu", "cpu_count", "gpu", "gpu_count", "driver")


def _hardware(row: sa.Row[tuple[object, ...]]) -> str:
    facts = {name: getattr(row, name) for name in _HARDWARE}
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()


def upgrade() -> None:
    """Create ``claims``; add and fill ``runs.uid``, ``runs.origin``, ``machines.hardware``."""
    op.create_table(
        "claims",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("scope", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=64), nullable=False),
        sa.Column("claimed_at", sa.Double(), nullable=False),
        sa.Column("heartbeat_at", sa.Double(), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=False),
        sa.Column("finished_at", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_claims"),
        sa.UniqueConstraint("scope", "key", name="uq_claims_scope_key"),
    )
    op.create_index("ix_claims_holder", "claims", ["holder"])
    # Plain ADD COLUMN (no batch copy: on SQLite that would drop tables that others
    # reference); NOT NULL columns get a placeholder default that the updates below replace.
    op.add_column("runs", sa.Column("uid", sa.String(36), nullable=False, server_default=""))
    op.add_column("runs", sa.Column("origin", sa.Text(), nullable=True))
    op.add_column(
        "machines", sa.Column("hardware", sa.String(64), nullable=False, server_default="")
    )
    bind = op.get_bind()
    runs = sa.table("runs", sa.column("id", sa.Integer), sa.column("uid", sa.String))
    for (run_id,) in bind.execute(sa.select(runs.c.id)).all():
        bind.execute(runs.update().where(runs.c.id == run_id).values(uid=str(uuid.uuid4())))
    machines = sa.table(
        "machines",
        sa.column("id", sa.Integer),
        sa.column("hardware", sa.String),
        *(sa.column(name) for name in _HARDWARE),
    )
    for row in bind.execute(sa.select(machines)).all():
        bind.execute(
            machines.update().where(machines.c.id == row.id).values(hardware=_hardware(row))
        )
    op.create_index("ix_runs_uid", "runs", ["uid"], unique=True)
    op.create_index("ix_machines_hardware", "machines", ["hardware"])


def downgrade() -> None:
    op.drop_index("ix_machines_hardware", table_name="machines")
    op.drop_index("ix_runs_uid", table_name="runs")
    # ALTER TABLE ... DROP COLUMN (SQLite 3.35+), for the reason upgrade() avoids batches.
    op.drop_column("machines", "hardware")
    op.drop_column("runs", "origin")
    op.drop_column("runs", "uid")
    op.drop_index("ix_claims_holder", table_name="claims")
    op.drop_table("claims")
