"""Initial schema: machines, runs, cells, metrics, metric_defs.

Revision ID: 0001
Revises:
Create Date: 2026-11-22 05:00:38

Hand-written; constraint names follow ``harness.store.schema.NAMING_CONVENTION``.
Migrations are frozen history: they spell out every type instead of importing the models.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the five tables of DESIGN §8."""
    op.create_table(
        "machines",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("cpu", sa.String(255), nullable=False),
        sa.Column("cpu_count", sa.Integer(), nullable=False),
        sa.Column("ram_bytes", sa.BigInteger(), nullable=False),
        sa.Column("gpu", sa.String(255), nullable=True),
        sa.Column("gpu_count", sa.Integer(), nullable=False),
        sa.Column("driver", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_machines"),
        sa.UniqueConstraint("fingerprint", name="uq_machines_fingerprint"),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("suite_name", sa.String(255), nullable=False),
        sa.Column("suite_path", sa.Text(), nullable=False),
        sa.Column("suite_hash", sa.String(64), nullable=False),
        sa.Column("machine_id", sa.Integer(), nullable=False),
        sa.Column("harness_version", sa.String(64), nullable=False),
        sa.Column("git_commit", sa.String(64), nullable=True),
        sa.Column("environment", sa.JSON(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
        sa.ForeignKeyConstraint(
            ["machine_id"], ["machines.id"], name="fk_runs_machine_id_machines"
        ),
    )
    op.create_table(
        "cells",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("device", sa.String(64), nullable=False),
        sa.Column("technique", sa.Text(), nullable=False),
        sa.Column("stack", sa.JSON(), nullable=False),
        sa.Column("workload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_s", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_cells"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_cells_run_id_runs"),
        sa.UniqueConstraint("run_id", "key", name="uq_cells_run_id_key"),
    )
    op.create_index("ix_cells_run_id", "cells", ["run_id"])
    op.create_index("ix_cells_key", "cells", ["key"])
    op.create_table(
        "metrics",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("cell_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("value", sa.Double(), nullable=True),
        sa.Column("unit", sa.String(64), nullable=False),
        sa.Column("ci_low", sa.Double(), nullable=True),
        sa.Column("ci_high", sa.Double(), nullable=True),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(64), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_metrics"),
        sa.ForeignKeyConstraint(
            ["cell_id"], ["cells.id"], name="fk_metrics_cell_id_cells", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("cell_id", "name", name="uq_metrics_cell_id_name"),
    )
    op.create_index("ix_metrics_cell_id", "metrics", ["cell_id"])
    op.create_table(
        "metric_defs",
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("unit", sa.String(64), nullable=False),
        sa.Column("higher_is_better", sa.Boolean(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_metric_defs"),
    )


def downgrade() -> None:
    """Drop every table, children first."""
    op.drop_table("metric_defs")
    op.drop_index("ix_metrics_cell_id", table_name="metrics")
    op.drop_table("metrics")
    op.drop_index("ix_cells_key", table_name="cells")
    op.drop_index("ix_cells_run_id", table_name="cells")
    op.drop_table("cells")
    op.drop_table("runs")
    op.drop_table("machines")
