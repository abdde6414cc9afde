"""The results database: SQLAlchemy models, the Store, Alembic migrations (DESIGN §8).

Imports neither torch nor plugins, so the dashboard can use it.
"""

from __future__ import annotations

from harness.store.frames import workload_label
from harness.store.store import Store

__all__ = ["Store", "workload_label"]
