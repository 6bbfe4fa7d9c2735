"""What someone who can write the database does to the audit, the triggers dropped first as an owner can."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from alerting.audit.chain import GENESIS, Entry, chain_hash
from alerting.audit.keys import AuditKey
from alerting.store.db import Database
from alerting.store.tables import AuditEvent, AuditHead

SQLITE_TRIGGERS = ("audit_event_no_update", "audit_event_no_delete", "audit_head_forward_only", "audit_head_no_delete")
POSTGRESQL_TRIGGERS = (
    ("audit_event_append_only", "audit_event"),
    ("audit_event_no_truncate", "audit_event"),
    ("audit_head_forward_only", "audit_head"),
    ("audit_head_no_delete", "audit_head"),
    ("audit_head_no_truncate", "audit_head"),
)


@asynccontextmanager
async def unguarded(db: Database) -> AsyncIterator[AsyncSession]:
    """A session in which the audit tables take UPDATE and DELETE: the migration's triggers are gone."""
    async with db.session() as s:
        if db.is_sqlite:
            for name in SQLITE_TRIGGERS:
                await s.execute(text(f"DROP TRIGGER IF EXISTS {name}"))
        else:
            for name, table in POSTGRESQL_TRIGGERS:
                await s.execute(text(f"DROP TRIGGER IF EXISTS {name} ON {table}"))
        yield s


async def rehash_from(s: AsyncSession, first: int, key: AuditKey | None) -> None:
    """Recompute every hash from row `first` to the end, and the head, as a forger would: with `key` (one they
    guessed), or without one as plain SHA-256."""
    rows = (await s.execute(select(AuditEvent).order_by(col(AuditEvent.seq)))).scalars().all()
    prev = GENESIS
    for row in rows:
        if row.seq >= first:
            entry = Entry(row.kind, row.actor, row.at, row.alert_id, row.subject, row.data)
            digest = chain_hash(prev, row.seq, entry, key)
            await s.execute(
                update(AuditEvent)
                .where(col(AuditEvent.seq) == row.seq)
                .values(prev_hash=prev, hash=digest, key_id=key.id if key else None)
            )
            prev = digest
        else:
            prev = row.hash
    await s.execute(update(AuditHead).where(col(AuditHead.id) == 1).values(seq=rows[-1].seq, hash=prev))
