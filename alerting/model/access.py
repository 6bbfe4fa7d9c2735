"""Who may see and do what. One answer for the console (signed-in accounts) and the API (keys).

A township officer is bound to one unit and sees only its subtree: alerts reaching it, the
recipients in it, and may issue and act only there. Everyone else sees the whole county.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, exists, select, true
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlmodel import col

from alerting.store.tables import Alert, OrgUnit, Target


class AccountRole(StrEnum):
    DUTY = "duty"  # county duty room: issues, acts, reads everything
    TOWNSHIP = "township"  # township duty officer: the same, inside their own subtree
    AUDITOR = "auditor"  # reads and exports, changes nothing
    ADMIN = "admin"  # everything, plus accounts and the directory


ACCOUNT_ROLE_LABEL = {
    AccountRole.DUTY: "县值班员",
    AccountRole.TOWNSHIP: "乡镇值班员",
    AccountRole.AUDITOR: "审计员",
    AccountRole.ADMIN: "管理员",
}

ISSUERS = frozenset({AccountRole.DUTY, AccountRole.TOWNSHIP, AccountRole.ADMIN})


class Forbidden(PermissionError):
    """The principal may not do this; the message says why, in words a person understands."""


@dataclass(frozen=True)
class Principal:
    role: AccountRole
    actor: str  # what the audit records: "user:<name>" or "api:<role>:<key digest>"
    name: str  # what a page shows
    unit_code: str | None = None  # a township officer's unit
    unit_path: str | None = None  # its path, "/500238/500238101/"; None = the whole county

    @property
    def can_issue(self) -> bool:
        return self.role in ISSUERS

    @property
    def is_admin(self) -> bool:
        return self.role is AccountRole.ADMIN

    @property
    def county_wide(self) -> bool:
        return self.unit_path is None

    def sees_path(self, path: str) -> bool:
        return self.unit_path is None or path.startswith(self.unit_path)

    def require_issuer(self) -> None:
        if not self.can_issue:
            raise Forbidden(f"{ACCOUNT_ROLE_LABEL[self.role]}只能查看，不能发布或处置预警")

    def require_admin(self) -> None:
        if not self.is_admin:
            raise Forbidden("只有管理员可以这样做")


def township_code(path: str) -> str | None:
    """The township a unit lies in, from its path ("/500238/500238101/…" → 500238101); None at county level."""
    codes = [c for c in path.split("/") if c]
    return codes[1] if len(codes) > 1 else None


def in_scope(principal: Principal, unit_code: Any) -> ColumnElement[bool]:
    """A WHERE clause keeping rows whose unit lies in the principal's subtree (always true county-wide)."""
    if principal.unit_path is None:
        return true()
    inside = select(col(OrgUnit.code)).where(col(OrgUnit.path).startswith(principal.unit_path))
    clause: ColumnElement[bool] = unit_code.in_(inside)
    return clause


def alert_in_scope(principal: Principal, alert_id: Any) -> ColumnElement[bool]:
    """A WHERE clause keeping alerts that reach at least one recipient in the principal's subtree."""
    if principal.unit_path is None:
        return true()
    # an alias, so the subquery never correlates with a query that itself selects from target
    t = aliased(Target)
    reaches = select(col(t.id)).where(col(t.alert_id) == alert_id, in_scope(principal, col(t.unit_code)))
    return exists(reaches)


async def check_alert(session: AsyncSession, principal: Principal, alert_id: int) -> bool:
    """Whether the principal may see this alert at all."""
    if principal.unit_path is None:
        return True
    q = select(col(Target.id)).where(col(Target.alert_id) == alert_id, in_scope(principal, col(Target.unit_code)))
    return (await session.scalar(q.limit(1))) is not None


async def check_units(session: AsyncSession, principal: Principal, codes: Iterable[str]) -> list[str]:
    """The codes outside the principal's subtree (unknown codes are left to the caller to report)."""
    wanted = list(codes)
    if principal.unit_path is None or not wanted:
        return []
    rows = await session.execute(select(col(OrgUnit.code), col(OrgUnit.path)).where(col(OrgUnit.code).in_(wanted)))
    return [code for code, path in rows if not principal.sees_path(path)]


async def unit_path(session: AsyncSession, code: str) -> str | None:
    return await session.scalar(select(col(OrgUnit.path)).where(col(OrgUnit.code) == code))


async def visible_alert(s: AsyncSession, principal: Principal, alert_id: int) -> Alert | None:
    """The alert, if it exists and reaches the viewer's subtree."""
    return (
        await s.execute(select(Alert).where(col(Alert.id) == alert_id, alert_in_scope(principal, col(Alert.id))))
    ).scalar_one_or_none()
