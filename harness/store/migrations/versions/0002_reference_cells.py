"""Mark the cells of a suite's reference stack (``reference:``, DESIGN §5).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03 11:00:00

Before this revision every suite compared with the stack labelled ``baseline``; existing
cells are marked accordingly, so the deltas of older databases stay as they were.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add ``cells.reference`` (false) and set it where the stack label was ``baseline``."""
    with op.batch_alter_table("cells") as batch:
        batch.add_column(
            sa.Column("reference", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.execute("UPDATE cells SET reference = (technique = 'baseline')")


def downgrade() -> None:
    with op.batch_alter_table("cells") as batch:
        batch.drop_column("reference")
