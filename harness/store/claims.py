"""Claims: which runner measures which cell, so concurrent runners split a suite.

Before a runner measures a cell it claims it: one row per (scope, cell key) in ``claims``,
where the scope is the hardware of the measuring machine (``machines.hardware``). A claim
carries its holder (one id per runner), a lease that the holder renews by heartbeat, and,
once the result is recorded (in the same transaction, :func:`finish`), its finish time.
All times are unix seconds read from the database's own clock (:func:`clock`), so runners
on machines whose clocks disagree still agree on expiry.

Taking a claim is one short write transaction. On PostgreSQL the row is read with
``SELECT ... FOR UPDATE SKIP LOCKED`` (a row another runner is deciding on right now counts
as held) and a missing row is inserted with ``ON CONFLICT DO NOTHING`` (the loser of an
insert race counts as held); on SQLite the transaction is ``BEGIN IMMEDIATE`` (see
:mod:`.connect`), which serializes the decision. A runner that started at ``since`` decides:

- no row, or a row finished before ``since`` (a previous session's work, already judged by
  resume or ``--rerun``): **taken**;
- a row of another holder, unfinished and unexpired: **held**; ask again later;
- a row of another holder, unfinished and expired (its holder died): **taken** over;
- a row finished at or after ``since``: **done** by a runner of this session.

A holder whose claim was taken over after its lease ran out cannot record the cell any
more (:func:`finish` finds no row of its own), so a cell is never stored twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlalchemy import delete, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from harness.errors import StoreError
from harness.store.schema import Claim

ClaimState = Literal["taken", "held", "done"]
DEFAULT_LEASE_S = 60.0


class ClaimLost(StoreError):
    """The runner's lease ran out and another runner took the cell over."""


@dataclass(frozen=True)
class ClaimRef:
    """A claim a runner holds: enough to finish it when the cell is recorded."""

    scope: str
    key: str
    holder: str


def clock(session: Session) -> float:
    """The database's current time, unix seconds (SQLite: this machine's clock, 1 ms)."""
    if session.get_bind().dialect.name == "postgresql":
        query = "SELECT EXTRACT(EPOCH FROM clock_timestamp())"
    else:
        query = "SELECT (julianday('now') - 2440587.5) * 86400.0"
    return float(session.execute(text(query)).scalar_one())


def take(session: Session, ref: ClaimRef, *, since: float, lease_s: float) -> ClaimState:
    """Claim ``ref.key`` for ``ref.holder`` unless another runner holds or finished it.

    Args:
        session: A write transaction.
        ref: Scope, cell key and the claiming runner's id.
        since: When the claiming runner started (:func:`clock`), unix s.
        lease_s: How long the claim lives without a heartbeat, s.

    Returns:
        ``taken``, ``held`` or ``done`` as the module docstring defines them.
    """
    now = clock(session)
    row = session.scalar(
        select(Claim)
        .where(Claim.scope == ref.scope, Claim.key == ref.key)
        .with_for_update(skip_locked=True)
    )
    fresh = {"holder": ref.holder, "claimed_at": now, "heartbeat_at": now}
    fresh |= {"expires_at": now + lease_s, "finished_at": None}
    if row is None:
        dialect = session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        done = session.execute(
            insert(Claim)
            .values(scope=ref.scope, key=ref.key, **fresh)
            .on_conflict_do_nothing(index_elements=["scope", "key"])
        )
        return "taken" if done.rowcount == 1 else "held"  # type: ignore[attr-defined]
    if row.finished_at is not None and row.finished_at >= since:
        return "done"
    if row.finished_at is None and row.holder != ref.holder and row.expires_at > now:
        return "held"
    for name, value in fresh.items():
        setattr(row, name, value)
    return "taken"


def finish(session: Session, ref: ClaimRef) -> None:
    """Mark the claim finished, in the transaction that records the cell.

    Raises:
        ClaimLost: The claim is no longer ``ref.holder``'s (its lease ran out and another
            runner took the cell over); the caller's transaction must roll back.
    """
    done = session.execute(
        update(Claim)
        .where(
            Claim.scope == ref.scope,
            Claim.key == ref.key,
            Claim.holder == ref.holder,
            Claim.finished_at.is_(None),
        )
        .values(finished_at=clock(session)),
        execution_options={"synchronize_session": False},
    )
    if done.rowcount != 1:  # type: ignore[attr-defined]
        raise ClaimLost(
            f"cell {ref.key}: another runner took this cell over after this runner's lease "
            "ran out; its result is kept and this one is dropped. Raise the lease with "
            "'bench run --lease SECONDS' if cells are often taken over."
        )


def renew(session: Session, holder: str, lease_s: float) -> int:
    """Push the expiry of ``holder``'s unfinished claims ``lease_s`` past now.

    Returns:
        How many claims were renewed.
    """
    now = clock(session)
    done = session.execute(
        update(Claim)
        .where(Claim.holder == holder, Claim.finished_at.is_(None))
        .values(heartbeat_at=now, expires_at=now + lease_s),
        execution_options={"synchronize_session": False},
    )
    return int(done.rowcount)  # type: ignore[attr-defined]


def release(session: Session, holder: str) -> int:
    """Drop ``holder``'s unfinished claims, so other runners can take them at once.

    Returns:
        How many claims were dropped.
    """
    done = session.execute(
        delete(Claim).where(Claim.holder == holder, Claim.finished_at.is_(None)),
        execution_options={"synchronize_session": False},
    )
    return int(done.rowcount)  # type: ignore[attr-defined]
