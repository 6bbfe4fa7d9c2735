"""Issuing once per request: an Idempotency-Key on POST /api/v1/alerts, a one-time token in the console's form.

A caller that sends the same key again (a retry after a timeout, a double click) gets the alert the first
request issued, not a second alert that texts everyone twice. The key is taken in the same transaction as
the alert, under a unique constraint on (caller, key): two requests arriving at the same moment both try to
insert it, the database lets one through, and the other, once the first has committed, finds the key taken
and answers with the first one's alert. A key used again for a different request is refused. Keys are kept
for `KEY_TTL` by the injected clock; after that the same key issues anew.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from alerting.issue.alerts import AlertRequest, AlertService, Issued
from alerting.store.db import Database, rowcount
from alerting.store.tables import IssueRequest, core_table

log = structlog.get_logger()

KEY_TTL = timedelta(hours=24)
KEY_MAX = 255  # the column's width
REQUESTS = core_table(IssueRequest)


class KeyReused(ValueError):
    """The key was used for a different request: whoever sent it means something else by it now."""

    def __init__(self, key: str, alert_id: int | None, at: datetime) -> None:
        self.key, self.alert_id, self.at = key, alert_id, at
        super().__init__(
            f"the key {key!r} was used at {at.isoformat()} for a different request (alert {alert_id}); "
            "send a new key for a new alert, or the same request to get that alert again"
        )


class KeyTaken(Exception):
    """Raised inside the issuing transaction when another request holds the key; nothing of it is written."""


def fingerprint(req: AlertRequest) -> str:
    """The request as validated, so the same alert sent with other spacing or key order is the same request."""
    canonical = json.dumps(req.model_dump(mode="json"), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class RequestKey:
    caller: str
    key: str
    fingerprint: str

    @classmethod
    def of(cls, caller: str, key: str, req: AlertRequest) -> RequestKey:
        return cls(caller, key, fingerprint(req))

    def _mine(self) -> tuple[Any, ...]:
        return (REQUESTS.c.caller == self.caller, REQUESTS.c.key == self.key)

    async def claim(self, s: AsyncSession, now: datetime) -> None:
        """Take the key in the caller's transaction, or raise KeyTaken. On PostgreSQL the insert waits for a
        transaction holding the same key to end; on SQLite the first write waits for the one write lock."""
        # an expired key of the same name is the only row the constraint could still find: it goes first
        await s.execute(delete(REQUESTS).where(*self._mine(), REQUESTS.c.expires_at <= now))
        is_sqlite = s.get_bind().dialect.name == "sqlite"
        taken = await s.execute(
            (sqlite.insert if is_sqlite else postgresql.insert)(REQUESTS)
            .values(
                caller=self.caller,
                key=self.key,
                fingerprint=self.fingerprint,
                created_at=now,
                expires_at=now + KEY_TTL,
            )
            .on_conflict_do_nothing(index_elements=["caller", "key"])
            .returning(REQUESTS.c.id)
        )
        if taken.scalar_one_or_none() is None:
            raise KeyTaken(self.key)

    async def settle(self, s: AsyncSession, issued: Issued) -> None:
        """What the first request answered, kept for the ones after it (again after the last page is planned)."""
        await s.execute(update(REQUESTS).where(*self._mine()).values(alert_id=issued.alert_id, issued=asdict(issued)))


@dataclass(frozen=True)
class Outcome:
    issued: Issued
    repeated: bool  # True: an earlier request with this key issued it; nothing new was written
    at: datetime | None = None  # when the earlier request took the key


async def earlier(db: Database, key: RequestKey, now: datetime) -> Outcome | None:
    """The alert an earlier request with this key issued, or None when the key is new or has expired.
    Raises KeyReused when that request was a different one."""
    async with db.session() as s:
        row = (
            await s.execute(
                select(IssueRequest).where(
                    col(IssueRequest.caller) == key.caller,
                    col(IssueRequest.key) == key.key,
                    col(IssueRequest.expires_at) > now,
                )
            )
        ).scalar_one_or_none()
    if row is None or row.alert_id is None:
        return None
    if row.fingerprint != key.fingerprint:
        raise KeyReused(key.key, row.alert_id, row.created_at)
    done = row.issued or {}
    issued = Issued(
        row.alert_id,
        int(done.get("targets", 0)),
        int(done.get("deliveries", 0)),
        {str(k): int(v) for k, v in dict(done.get("by_channel", {})).items()},
        int(done.get("unreachable", 0)),
    )
    return Outcome(issued, repeated=True, at=row.created_at)


async def forget_expired(db: Database, now: datetime) -> int:
    """Delete the keys past their KEY_TTL (a key taken again is deleted then anyway; this keeps the table small)."""
    async with db.session() as s:
        gone = await s.execute(delete(REQUESTS).where(REQUESTS.c.expires_at <= now))
    count = rowcount(gone)
    if count:
        log.info("alert.keys_forgotten", count=count)
    return count


async def issue_once(alerts: AlertService, req: AlertRequest, *, actor: str, key: RequestKey) -> Outcome:
    """Issue the alert unless this caller's key already did; then answer with that alert."""
    now = alerts.clock.now()
    found = await earlier(alerts.db, key, now)
    if found is None:
        try:
            return Outcome(await alerts.trigger(req, actor=actor, once=key), repeated=False)
        except KeyTaken:
            # a twin sent at the same moment took the key first and has committed: answer with its alert
            found = await earlier(alerts.db, key, now)
            if found is None:  # it took the key and then failed; this request was never issued either
                raise
    log.info("alert.repeat_request", alert_id=found.issued.alert_id, actor=actor, caller=key.caller)
    return found
