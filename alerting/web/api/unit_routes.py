"""Choosing what to warn, over the API: units to target, the warning texts, and a dry run of issuing."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from alerting.issue.alerts import AlertRequest
from alerting.issue.planning import UnknownUnits
from alerting.issue.warning_texts import WarningText, all_texts
from alerting.model.access import Principal, check_units
from alerting.model.domain import Level
from alerting.store.db import Database
from alerting.views.preview import Preview, preview
from alerting.views.units import UnitHit, lookup, search
from alerting.web.api.auth import CoreDep, Issuer, Reader
from alerting.web.api.numbers import Offset
from alerting.web.api.problems import Problem, documented
from alerting.web.api.schemas import Page

router = APIRouter(prefix="/api/v1", responses=documented(401, 403))


class UnitOut(BaseModel):
    code: str
    name: str
    kind: str
    kind_label: str
    parent_code: str | None
    path: str
    trail: str = Field(description="names of the units above it, e.g. 巫溪县 › 凤凰镇")

    @classmethod
    def of(cls, u: UnitHit) -> UnitOut:
        return cls(
            code=u.code,
            name=u.name,
            kind=u.kind,
            kind_label=u.kind_label,
            parent_code=u.parent_code,
            path=u.path,
            trail=u.trail,
        )


@router.get("/units", response_model=Page[UnitOut], tags=["units"])
async def list_units(
    core: CoreDep,
    who: Reader,
    q: Annotated[str, Query(max_length=50, description="part of the name, or the start of the code")] = "",
    parent: Annotated[str | None, Query(max_length=20, description="only the units directly below this one")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Offset = 0,
) -> Page[UnitOut]:
    """Units an alert can target, top of the hierarchy first. A township key finds only its own subtree."""
    async with core.db.session() as s:
        hits, total = await search(s, who, q=q, parent=parent, limit=limit, offset=offset)
    return Page[UnitOut](items=[UnitOut.of(u) for u in hits], total=total, limit=limit, offset=offset)


@router.get("/warning-texts", response_model=list[WarningText], tags=["units"])
async def list_warning_texts(
    _who: Reader,
    hazard: Annotated[str | None, Query(max_length=32)] = None,
    level: Level | None = None,
) -> list[WarningText]:
    """The texts offered per hazard and level; `{area}` stands for the names of the units warned."""
    return [t for t in all_texts() if (hazard is None or t.hazard == hazard) and (level is None or t.level is level)]


@router.post("/alerts/preview", response_model=Preview, tags=["alerts"], responses=documented(422))
async def preview_alert(req: AlertRequest, core: CoreDep, who: Issuer) -> Preview:
    """What issuing this request would reach, without issuing it: people, devices, manual tasks, deliveries by
    channel, people no channel reaches, a count per township, and the first steps of the escalation plan."""
    await check_scope(core.db, who, req.units)
    try:
        return await preview(core.db, core.clock, core.alerts.planner, req)
    except UnknownUnits as exc:
        raise unknown_units(req.units, exc.codes) from exc


async def check_scope(db: Database, who: Principal, units: list[str]) -> None:
    """Unknown codes are named with their position; a township key may only reach into its own subtree."""
    async with db.session() as s:
        known = await lookup(s, units)
        outside = await check_units(s, who, units)
    missing = [c for c in units if c not in known]
    if missing:
        raise unknown_units(units, missing)
    if outside:
        raise Problem(
            403,
            "outside-scope",
            "Units outside your area",
            f"a township key may only warn inside {who.unit_code}; not: {', '.join(outside)}",
            outside_units=outside,
        )


def unknown_units(units: list[str], unknown: list[str]) -> Problem:
    return Problem(
        422,
        "unknown-units",
        "Unknown unit codes",
        f"no unit has the code(s): {', '.join(unknown)}",
        unknown_units=unknown,
        errors=[
            {
                "field": f"units.{i}",
                "location": "body",
                "pointer": f"#/units/{i}",
                "message": f"unknown unit code {code}",
            }
            for i, code in enumerate(units)
            if code in unknown
        ],
    )
