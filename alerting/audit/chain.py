"""The audit log: append-only, hash-chained, appended in the same transaction as the change it records.

hash(n) = sha256(hash(n-1) + canonical JSON of row n). Editing, deleting or reordering any row
breaks every hash after it, and `verify` names the first row that no longer fits.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from alerting.model.clock import utc
from alerting.store.db import Database
from alerting.store.tables import AuditEvent, AuditHead, core_table

GENESIS = "0" * 64
AUDIT_EVENT = core_table(AuditEvent)


@dataclass(frozen=True)
class Entry:
    kind: str
    actor: str
    at: datetime
    alert_id: int | None = None
    subject: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)


def _body(seq: int, e: Entry) -> str:
    return json.dumps(
        {
            "seq": seq,
            "at": utc(e.at).isoformat(timespec="microseconds"),
            "alert_id": e.alert_id,
            "kind": e.kind,
            "actor": e.actor,
            "subject": e.subject,
            "data": e.data,
        },
        ensure_ascii=False,
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )


def chain_hash(prev_hash: str, seq: int, entry: Entry) -> str:
    return hashlib.sha256((prev_hash + _body(seq, entry)).encode()).hexdigest()


async def append(session: AsyncSession, entries: Sequence[Entry]) -> None:
    """Append entries at the end of the chain, inside the caller's transaction."""
    if not entries:
        return
    # Touching the head row first takes the write lock (SQLite) or the row lock (PostgreSQL),
    # so two writers cannot both extend the same end of the chain.
    await session.execute(update(AuditHead).where(col(AuditHead.id) == 1).values(seq=col(AuditHead.seq)))
    head = (await session.execute(select(col(AuditHead.seq), col(AuditHead.hash)).where(col(AuditHead.id) == 1))).one()
    seq, prev = head.seq, head.hash
    rows: list[dict[str, Any]] = []
    for e in entries:
        seq += 1
        digest = chain_hash(prev, seq, e)
        rows.append(
            {
                "seq": seq,
                "at": e.at,
                "alert_id": e.alert_id,
                "kind": e.kind,
                "actor": e.actor,
                "subject": e.subject,
                # stored as the JSON it was hashed as, so what verify reads back is what was signed
                "data": json.loads(json.dumps(e.data, ensure_ascii=False, default=str)),
                "prev_hash": prev,
                "hash": digest,
            }
        )
        prev = digest
    # Core, not the ORM's bulk path: these rows are never read back as objects in this transaction
    await (await session.connection()).execute(insert(AUDIT_EVENT), rows)
    await session.execute(update(AuditHead).where(col(AuditHead.id) == 1).values(seq=seq, hash=prev))


async def record(session: AsyncSession, kind: str, *, actor: str, at: datetime, **kwargs: Any) -> None:
    await append(session, [Entry(kind=kind, actor=actor, at=at, **kwargs)])


@dataclass(frozen=True)
class Verification:
    ok: bool
    rows: int
    first_bad_seq: int | None = None
    reason: str = ""


@dataclass
class _Walk:
    """Where a walk along the chain has got to: the hash to link to next, the row expected, rows checked."""

    prev: str = GENESIS
    expected_seq: int = 1
    count: int = 0

    def check(self, rows: Iterable[AuditEvent]) -> Verification | None:
        """Check the next rows in order; the first fault found, or None."""
        for row in rows:
            entry = Entry(
                kind=row.kind, actor=row.actor, at=row.at, alert_id=row.alert_id, subject=row.subject, data=row.data
            )
            if row.seq != self.expected_seq:
                return Verification(False, self.count, self.expected_seq, f"row {self.expected_seq} is missing")
            if row.prev_hash != self.prev:
                return Verification(False, self.count, row.seq, "its link to the row before it is broken")
            if chain_hash(self.prev, row.seq, entry) != row.hash:
                return Verification(False, self.count, row.seq, "its content does not match its hash (edited)")
            self.prev, self.expected_seq, self.count = row.hash, self.expected_seq + 1, self.count + 1
        return None

    def end(self, head: AuditHead | None) -> Verification:
        if head is not None and (head.seq != self.count or head.hash != self.prev):
            reason = f"the chain ends at row {self.count} but the head says {head.seq}"
            return Verification(False, self.count, self.count + 1, reason)
        return Verification(True, self.count)


def verify_rows(rows: Iterable[AuditEvent], head: AuditHead | None) -> Verification:
    walk = _Walk()
    return walk.check(rows) or walk.end(head)


async def verify(db: Database, batch: int = 5000) -> Verification:
    """Walk the whole chain in order, up to the head as it was when the walk began.

    Each batch is read in a transaction of its own and hashed off the event loop, so a long chain
    (hundreds of thousands of rows after a rainy season) holds up neither writers nor answers coming in.
    """
    async with db.session() as s:
        head = await s.get(AuditHead, 1)
    walk, last = _Walk(), 0
    while head is not None:
        query = select(AuditEvent).where(col(AuditEvent.seq) > last, col(AuditEvent.seq) <= head.seq)
        async with db.session() as s:
            chunk = (await s.execute(query.order_by(col(AuditEvent.seq)).limit(batch))).scalars().all()
        if fault := await asyncio.to_thread(walk.check, chunk):
            return fault
        if len(chunk) < batch:
            break
        last = chunk[-1].seq
    return walk.end(head)
