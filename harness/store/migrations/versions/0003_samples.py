"""Samples behind each metric: every repeat's value, or every trial's outcome.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 13:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``samples`` (metric, position, value)."""
    op.create_table(
        "samples",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("metric_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("value", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_samples"),
        sa.ForeignKeyConstraint(
            ["metric_id"],
            ["metrics.id"],
            name="fk_samples_metric_id_metrics",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("metric_id", "position", name="uq_samples_metric_id_position"),
    )
    op.create_index("ix_samples_metric_id", "samples", ["metric_id"])


def downgrade() -> None:
    op.drop_index("ix_samples_metric_id", table_name="samples")
    op.drop_table("samples")
