"""Cell fingerprints: what exactly each cell measured (``harness.fingerprint``).

Revision ID: 0005
Revises: 0003
Create Date: 2026-12-03 15:00:00

``cells.fingerprint`` holds the JSON document, ``cells.fingerprint_hash`` the sha256 of its
identity fields, for finding the cells of other runs that measured the same thing. Cells
stored before this revision have neither (null): ``bench compare`` matches them on their
model, device, stack and workload labels alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add ``cells.fingerprint`` (JSON) and ``cells.fingerprint_hash`` (indexed), both null."""
    with op.batch_alter_table("cells") as batch:
        batch.add_column(sa.Column("fingerprint", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("fingerprint_hash", sa.String(length=64), nullable=True))
    op.create_index("ix_cells_fingerprint_hash", "cells", ["fingerprint_hash"])


def downgrade() -> None:
    op.drop_index("ix_cells_fingerprint_hash", table_name="cells")
    with op.batch_alter_table("cells") as batch:
        batch.drop_column("fingerprint_hash")
        batch.drop_column("fingerprint")
