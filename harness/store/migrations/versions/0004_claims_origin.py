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
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("uid", sa.String(length=36), nullable=True))
        batch.add_column(sa.Column("origin", sa.Text(), nullable=True))
    with op.batch_alter_table("machines") as batch:
        batch.add_column(sa.Column("hardware", sa.String(length=64), nullable=True))
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
    with op.batch_alter_table("runs") as batch:
        batch.alter_column("uid", existing_type=sa.String(length=36), nullable=False)
        batch.create_unique_constraint("uq_runs_uid", ["uid"])
    with op.batch_alter_table("machines") as batch:
        batch.alter_column("hardware", existing_type=sa.String(length=64), nullable=False)
        batch.create_index("ix_machines_hardware", ["hardware"])


def downgrade() -> None:
    with op.batch_alter_table("machines") as batch:
        batch.drop_index("ix_machines_hardware")
        batch.drop_column("hardware")
    with op.batch_alter_table("runs") as batch:
        batch.drop_constraint("uq_runs_uid", type_="unique")
        batch.drop_column("origin")
        batch.drop_column("uid")
    op.drop_index("ix_claims_holder", table_name="claims")
    op.drop_table("claims")
