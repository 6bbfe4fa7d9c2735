"""Which inbound events are new: their keys go into inbound_seen once, by whichever process takes them first."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from alerting.store.db import Database
from alerting.store.tables import InboundSeen, core_table

SEEN = core_table(InboundSeen)
KEY_LENGTH = 200  # the column's width: longer keys are cut, the same way every time


def seen_key(key: str) -> str:
    return key[:KEY_LENGTH]


async def new_keys(s: AsyncSession, db: Database, keys: Mapping[str, datetime]) -> set[str]:
    """Store the keys not stored before, in the caller's transaction; returns those (the others were taken in)."""
    if not keys:
        return set()
    insert = (sqlite.insert if db.is_sqlite else postgresql.insert)(SEEN)
    inserted = await s.execute(
        insert.values([{"key": k, "at": at} for k, at in keys.items()])
        .on_conflict_do_nothing(index_elements=["key"])
        .returning(SEEN.c.key)
    )
    return set(inserted.scalars())
