"""What the account pages and the accounts API show: each account with its unit and last sign-in, and its history."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func
from sqlmodel import col, select

from alerting.model.access import ACCOUNT_ROLE_LABEL, AccountRole
from alerting.model.actor import Actor
from alerting.model.clock import utc
from alerting.store.db import Database
from alerting.store.tables import Account, AuditEvent, OrgUnit, WebSession


@dataclass(frozen=True)
class AccountRow:
    username: str
    display_name: str
    role: AccountRole
    unit_code: str | None
    unit_name: str | None
    active: bool
    locked_until: datetime | None
    created_at: datetime
    last_sign_in: datetime | None  # when its newest session began

    @property
    def role_label(self) -> str:
        return ACCOUNT_ROLE_LABEL[self.role]

    def locked(self, now: datetime) -> bool:
        return self.locked_until is not None and self.locked_until > now


@dataclass(frozen=True)
class Township:
    code: str
    name: str


def _row(a: Account, unit_name: str | None, last: datetime | None) -> AccountRow:
    return AccountRow(
        username=a.username,
        display_name=a.display_name,
        role=AccountRole(a.role),
        unit_code=a.unit_code,
        unit_name=unit_name,
        active=a.active,
        locked_until=a.locked_until,
        created_at=a.created_at,
        last_sign_in=last,
    )


async def account_rows(db: Database, username: str | None = None) -> list[AccountRow]:
    """All accounts by username (or just one); the last sign-in comes from the sessions table, one grouped query."""
    last = (
        select(col(WebSession.username), func.max(col(WebSession.created_at)).label("last"))
        .group_by(col(WebSession.username))
        .subquery()
    )
    query = (
        select(Account, OrgUnit.name, last.c.last)
        .outerjoin(OrgUnit, col(OrgUnit.code) == col(Account.unit_code))
        .outerjoin(last, last.c.username == col(Account.username))
        .order_by(col(Account.username))
    )
    if username is not None:
        query = query.where(col(Account.username) == username)
    async with db.session() as s:
        rows = (await s.execute(query)).all()
    return [_row(a, unit_name, _aware(at)) for a, unit_name, at in rows]


def _aware(at: datetime | None) -> datetime | None:
    # max() over a SQLite column comes back as a plain value, without the column's time-zone handling
    if at is None:
        return None
    if isinstance(at, str):
        at = datetime.fromisoformat(at)
    return utc(at)


async def account_history(db: Database, username: str, limit: int = 30) -> list[AuditEvent]:
    """The newest audit events about this account: sign-ins, failures, password and status changes."""
    async with db.session() as s:
        query = (
            select(AuditEvent)
            .where(col(AuditEvent.subject) == Actor.account(username).text)
            .order_by(col(AuditEvent.seq).desc())
            .limit(limit)
        )
        return list((await s.execute(query)).scalars())


async def townships(db: Database) -> list[Township]:
    """The units a township officer can be bound to."""
    async with db.session() as s:
        query = select(OrgUnit).where(col(OrgUnit.kind) == "township").order_by(col(OrgUnit.code))
        return [Township(u.code, u.name) for u in (await s.execute(query)).scalars()]
