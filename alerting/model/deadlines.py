"""Every write of an escalation deadline, in one place.

A deadline is a target's next step falling due. It is added pending when a step leaves a wait (issuing, or a step
that ran), claimed and fired by one escalation run, cancelled when its alert ends, brought forward when every
delivery of a step failed, and given more time when a device is asked again after its broker came back.

A claim is the pair (claimed_by, fence). Whatever takes a claim away or changes what a claimer saw moves the
fence, so a run still holding the old fence fires nothing: firing matches on id, fence, state and claimer together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from alerting.model.domain import DeadlineState
from alerting.model.ids import new_id
from alerting.store.db import insert_rows, rowcount
from alerting.store.tables import Deadline, core_table

PENDING, CANCELLED = DeadlineState.PENDING.value, DeadlineState.CANCELLED.value


@dataclass(frozen=True)
class Claim:
    """A deadline a run may fire, as long as nobody has claimed it since (the fence has not moved)."""

    deadline_id: str
    fence: int
    due_at: datetime
    step: int


def pending(alert_id: int, target_id: str, step: int, due_at: datetime) -> dict[str, Any]:
    """A new deadline's row: `step` of the target falls due at `due_at`."""
    return {
        "id": new_id(),
        "alert_id": alert_id,
        "target_id": target_id,
        "step": step,
        "due_at": due_at,
        "state": PENDING,
        "fence": 0,
    }


async def add(s: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    await insert_rows(s, Deadline, rows)


# ---- claiming: each escalation run (`owner`) takes due deadlines nobody else holds ----------------------------


def mine_or_free(owner: str) -> ColumnElement[bool]:
    return or_(col(Deadline.claimed_by).is_(None), col(Deadline.claimed_by) == owner)


def earliest_due(owner: str) -> Select[Any]:
    # ORDER BY + LIMIT walks the (state, due_at) index and stops at the first match; MIN() with the claimer filter
    # would read every pending deadline
    return (
        select(col(Deadline.due_at))
        .where(col(Deadline.state) == PENDING, mine_or_free(owner))
        .order_by(col(Deadline.due_at))
        .limit(1)
    )


def claimed_by_others(owner: str, now: datetime) -> ColumnElement[bool]:
    """Due deadlines another run holds. Only due deadlines are ever claimed, so this is an index range, not a scan."""
    return (
        (col(Deadline.state) == PENDING)
        & (col(Deadline.due_at) <= now)
        & col(Deadline.claimed_by).is_not(None)
        & (col(Deadline.claimed_by) != owner)
    )


async def claim(s: AsyncSession, owner: str, now: datetime, limit: int, *, skip_locked: bool) -> list[Claim]:
    """Claim up to `limit` due deadlines, oldest first, each with a new fence."""
    pick = (
        select(col(Deadline.id))
        .where(col(Deadline.state) == PENDING, col(Deadline.due_at) <= now, mine_or_free(owner))
        .order_by(col(Deadline.due_at), col(Deadline.step))
        .limit(limit)
    )
    if skip_locked:
        pick = pick.with_for_update(skip_locked=True)
    # No second `state = 'pending'` outside the subquery: the statement is atomic (SQLite) and the rows are locked
    # (PostgreSQL), and with it SQLite would walk every pending deadline instead of the primary key.
    rows = await s.execute(
        update(Deadline)
        .where(col(Deadline.id).in_(pick))
        .values(fence=col(Deadline.fence) + 1, claimed_by=owner)
        .returning(col(Deadline.id), col(Deadline.fence), col(Deadline.due_at), col(Deadline.step))
    )
    claims = [Claim(r.id, r.fence, r.due_at, r.step) for r in rows]
    claims.sort(key=lambda c: (c.due_at, c.step, c.deadline_id))  # RETURNING keeps no order
    return claims


async def release_claims_of(s: AsyncSession, claimers: Sequence[str], now: datetime) -> int:
    """Let go of every due claim these (dead) runs hold."""
    result = await s.execute(
        update(Deadline)
        .where(col(Deadline.state) == PENDING, col(Deadline.due_at) <= now, col(Deadline.claimed_by).in_(claimers))
        .values(claimed_by=None, fence=col(Deadline.fence) + 1)
    )
    return rowcount(result)


async def release_claim(s: AsyncSession, deadline_id: str, claimer: str, fence: int) -> bool:
    """Let go of one claim, only if it is still exactly the one seen (same claimer, same fence)."""
    result = await s.execute(
        update(Deadline)
        .where(
            col(Deadline.id) == deadline_id,
            col(Deadline.state) == PENDING,
            col(Deadline.claimed_by) == claimer,
            col(Deadline.fence) == fence,
        )
        .values(claimed_by=None, fence=col(Deadline.fence) + 1)
    )
    return rowcount(result) > 0


async def fire(s: AsyncSession, owner: str, claims: Sequence[Claim], now: datetime) -> list[Any]:
    """Mark fired the claimed deadlines whose claims still hold; returns (id, alert_id, target_id, step, due_at)
    of each, in no particular order. A claim lost meanwhile (fired, cancelled or claimed again) fires nothing."""
    won = await s.execute(
        update(Deadline)
        .where(
            # Only the primary key is a plain condition. SQLite would otherwise plan a 100-id batch as a walk of
            # every pending deadline by the (state, due_at) index.
            col(Deadline.id).in_([c.deadline_id for c in claims]),
            tuple_(col(Deadline.id), col(Deadline.fence), col(Deadline.state), col(Deadline.claimed_by)).in_(
                [(c.deadline_id, c.fence, PENDING, owner) for c in claims]
            ),
        )
        .values(state=DeadlineState.FIRED.value, fired_at=now)
        .returning(
            col(Deadline.id), col(Deadline.alert_id), col(Deadline.target_id), col(Deadline.step), col(Deadline.due_at)
        )
    )
    return list(won.all())


# ---- the other writers -------------------------------------------------------------------------------------


async def cancel_alert(s: AsyncSession, alert_id: int, *, limit: int) -> int:
    """The alert ended: up to `limit` more of its steps no longer fall due; how many."""
    page = select(col(Deadline.id)).where(col(Deadline.alert_id) == alert_id, col(Deadline.state) == PENDING)
    done = await s.execute(
        update(Deadline)
        .where(col(Deadline.id).in_(page.limit(limit)))
        .values(state=CANCELLED)
        .execution_options(synchronize_session=False)
    )
    return rowcount(done)


async def cancel_targets(s: AsyncSession, target_ids: Sequence[str]) -> None:
    """The targets answered: none of their steps falls due any more."""
    table = core_table(Deadline)  # answers are the hot path: a Core statement, no ORM
    await s.execute(
        update(table).where(table.c.target_id.in_(target_ids), table.c.state == PENDING).values(state=CANCELLED)
    )


async def bring_forward(s: AsyncSession, target_id: str, now: datetime) -> bool:
    """Every delivery of the target's step failed: its next step is due now, not when the wait would end.
    Only deadlines not yet due move, and those are never claimed, so no claim needs voiding."""
    moved = await s.execute(
        update(Deadline)
        .where(col(Deadline.target_id) == target_id, col(Deadline.state) == PENDING, col(Deadline.due_at) > now)
        .values(due_at=now)
    )
    return rowcount(moved) > 0


async def give_time(s: AsyncSession, target_ids: set[str], until: datetime) -> list[tuple[int, str]]:
    """Move the targets' pending deadlines due before `until` to `until`; says which (alert, target) moved."""
    moved = await s.execute(
        update(Deadline)
        .where(col(Deadline.target_id).in_(target_ids), col(Deadline.state) == PENDING, col(Deadline.due_at) < until)
        # a claim taken on the old due time must not fire it now: moving the fence voids it
        .values(due_at=until, fence=col(Deadline.fence) + 1, claimed_by=None)
        .returning(col(Deadline.alert_id), col(Deadline.target_id))
    )
    return [(int(m.alert_id), str(m.target_id)) for m in moved]
