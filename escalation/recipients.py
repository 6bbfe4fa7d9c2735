"""Who a step reaches: the target, its backups, the parent unit, the township or county on duty, the village."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from alerting.model.domain import Role
from alerting.model.plan import Who
from alerting.store.tables import OrgUnit, Responsibility, Target
from escalation.rosters import on_duty


def _ancestors(path: str) -> list[str]:
    """'/500238/500238101/500238101001/' -> ['500238', '500238101', '500238101001'] (county first)."""
    return [p for p in path.split("/") if p]


async def _responsible(s: AsyncSession, unit_code: str, *, min_rank: int = 0, max_rank: int = 0) -> list[str]:
    rows = await s.execute(
        select(col(Responsibility.person_id))
        .where(
            col(Responsibility.unit_code) == unit_code,
            col(Responsibility.rank) >= min_rank,
            col(Responsibility.rank) <= max_rank,
        )
        .order_by(col(Responsibility.rank))
    )
    return list(rows.scalars())


async def contacts_for(s: AsyncSession, who: Who, target: Target, at: datetime) -> list[str]:
    """Person ids the step reaches, in order, without repeats."""
    unit = await s.get(OrgUnit, target.unit_code)
    chain = _ancestors(unit.path) if unit else [target.unit_code]
    found: list[str] = []
    match who:
        case Who.TARGET:
            found = [target.person_id] if target.person_id else []
        case Who.BACKUP:
            found = await _responsible(s, target.unit_code, min_rank=1, max_rank=99)
        case Who.PARENT:
            if unit and unit.parent_code:
                found = await _responsible(s, unit.parent_code)
        case Who.TOWNSHIP_DUTY:
            if len(chain) > 1:
                found = await on_duty(s, chain[1], Role.TOWNSHIP_DUTY, at)
        case Who.COUNTY_DUTY:
            found = await on_duty(s, chain[0], Role.COUNTY_DUTY, at)
        case Who.VILLAGE:
            if len(chain) > 2:
                found = await _responsible(s, chain[2])
    return [p for p in dict.fromkeys(found) if p != target.person_id or who is Who.TARGET]
