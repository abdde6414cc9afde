"""Metric definitions declare their kind (latency, throughput, memory, energy, accuracy, other).

Revision ID: 0007
Revises: 0003
Create Date: 2026-12-04 10:00:00

Before this revision the dashboard took a metric for an accuracy metric when its name began
with ``accuracy.``; the definitions already stored get the kind their name gives
(``harness.results.kind_from_name``), so older databases show what they showed before.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: name prefix -> kind, as ``kind_from_name`` maps them when this revision was written
_PREFIXES = {
    "latency": "latency",
    "throughput": "throughput",
    "memory": "memory",
    "energy": "energy",
    "power": "energy",
    "accuracy": "accuracy",
}


def upgrade() -> None:
    """Add ``metric_defs.kind`` (``other``) and fill it in from each stored name."""
    with op.batch_alter_table("metric_defs") as batch:
        batch.add_column(
            sa.Column("kind", sa.String(length=32), nullable=False, server_default="other")
        )
    table = sa.table("metric_defs", sa.column("name", sa.String), sa.column("kind", sa.String))
    for prefix, kind in _PREFIXES.items():
        op.execute(table.update().where(table.c.name.like(f"{prefix}.%")).values(kind=kind))


def downgrade() -> None:
    with op.batch_alter_table("metric_defs") as batch:
        batch.drop_column("kind")
