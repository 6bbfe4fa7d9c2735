"""JSON API: the directory (units, people, devices, duty rosters) and its file import.

Reads follow the key's scope like the console: a township key sees its subtree only, an auditor's key
gets phone numbers masked. Importing is for admin keys. The unit search (GET /api/v1/units) is in
unit_routes; this module serves one unit's detail.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Query, UploadFile
from pydantic import BaseModel, Field

from alerting.people.directory_port import IMPORT_KINDS, MAX_IMPORT_BYTES, ImportCheck
from alerting.views.directory import (
    DeviceOut,
    PersonOut,
    UnitDetail,
    devices_page,
    people_page,
    unit_detail,
)
from alerting.views.rosters import RosterOut, rosters
from alerting.web.api.auth import Admin, CoreDep, Reader
from alerting.web.api.numbers import Offset
from alerting.web.api.problems import Problem, documented
from alerting.web.api.schemas import Page

router = APIRouter(prefix="/api/v1", tags=["directory"])

Limit = Annotated[int, Query(ge=1, le=500, description="items per page")]
UnitFilter = Annotated[str | None, Query(description="only this unit's subtree (a unit code inside your scope)")]


@router.get("/units/{code}", response_model=UnitDetail, responses=documented(401, 403, 404))
async def get_unit(code: str, core: CoreDep, who: Reader, limit: Limit = 100, offset: Offset = 0) -> UnitDetail:
    """One unit: the people answering for it by rank, its devices, and a page of the units under it."""
    detail = await unit_detail(core.db, who, code, limit=limit, offset=offset)
    if detail is None:
        raise Problem(404, "not-found", "No such unit", f"no unit has the code {code}")
    return detail


async def _in_unit(call: Any) -> Any:
    try:
        return await call
    except LookupError as exc:
        raise Problem(404, "not-found", "No such unit", str(exc)) from None


@router.get("/people", response_model=Page[PersonOut], responses=documented(401, 403, 404))
async def list_people(
    core: CoreDep,
    who: Reader,
    q: Annotated[str, Query(max_length=100, description="name, id, or 4+ digits of the phone")] = "",
    unit: UnitFilter = None,
    active: Annotated[bool | None, Query(description="only active (true) or deactivated (false) people")] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[PersonOut]:
    """People answering for a unit, or on a duty roster, in your scope; by name."""
    items, total = await _in_unit(people_page(core.db, who, q=q, unit=unit, active=active, limit=limit, offset=offset))
    return Page[PersonOut](items=items, total=total, limit=limit, offset=offset)


@router.get("/devices", response_model=Page[DeviceOut], responses=documented(401, 403, 404))
async def list_devices(
    core: CoreDep,
    who: Reader,
    q: Annotated[str, Query(max_length=100, description="device name or id, or its unit's name")] = "",
    unit: UnitFilter = None,
    online: Annotated[bool | None, Query(description="filter on the last reported state")] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[DeviceOut]:
    """Sirens, broadcast zones and satellite terminals in your scope, down the hierarchy."""
    items, total = await _in_unit(devices_page(core.db, who, q=q, unit=unit, online=online, limit=limit, offset=offset))
    return Page[DeviceOut](items=items, total=total, limit=limit, offset=offset)


@router.get("/rosters", response_model=Page[RosterOut], responses=documented(401, 403))
async def list_rosters(
    core: CoreDep,
    who: Reader,
    uncovered: Annotated[bool, Query(description="only units with a gap in the next 24 hours")] = False,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[RosterOut]:
    """The county's and each township's duty roster: on duty now, the next shifts, and gaps in the next 24 h."""
    items, total = await rosters(
        core.db, who, now=core.clock.now(), only_uncovered=uncovered, limit=limit, offset=offset
    )
    return Page[RosterOut](items=items, total=total, limit=limit, offset=offset)


class ImportProblemOut(BaseModel):
    row: int = Field(description="1-based row or line as a spreadsheet shows it (header = 1); 0 = the whole file")
    sheet: str | None
    field: str
    message: str


class ImportOut(BaseModel):
    kind: str
    filename: str
    rows: int = Field(description="data rows read")
    applied: bool = Field(description="false for a dry run: nothing was written")
    counts: dict[str, int] = Field(description="what was (or, in a dry run, would be) created and updated")
    replace: bool = Field(
        description="true: the units the people rows name got exactly the file's lists; always true for a roster, "
        "which replaces the shifts of the span it covers"
    )
    removed: list[str] = Field(description="who was (or would be) taken off a unit's list, by name; only with replace")
    warnings: list[ImportProblemOut]


def _problems(items: list[Any]) -> list[dict[str, Any]]:
    return [{"row": p.row, "sheet": p.sheet, "field": p.field, "location": "file", "message": p.message} for p in items]


def _out(check: ImportCheck) -> ImportOut:
    return ImportOut(
        kind=check.kind,
        filename=check.filename,
        rows=check.rows,
        applied=check.applied,
        counts=check.counts,
        replace=check.replace,
        removed=check.removals,
        warnings=[ImportProblemOut(row=w.row, sheet=w.sheet, field=w.field, message=w.message) for w in check.warnings],
    )


@router.post(
    "/directory/import",
    response_model=ImportOut,
    responses=documented(401, 403, 413, 422, 503),
)
async def import_directory_file(
    core: CoreDep,
    who: Admin,
    file: Annotated[UploadFile, File(description="CSV or XLSX (YAML for units/people/devices)")],
    kind: Annotated[str, Query(description="what the file holds: " + ", ".join(IMPORT_KINDS))],
    dry_run: Annotated[bool, Query(description="true: check only and write nothing")] = True,
    replace: Annotated[
        bool,
        Query(
            description="people files: true replaces the whole list of who answers for each unit the file names "
            "(whoever it does not list is removed, and `removed` names them); false (the default) adds and updates"
        ),
    ] = False,
) -> ImportOut:
    """Check a directory or roster file and, unless `dry_run`, import it all or nothing (audited).

    Every bad row comes back in a 422 problem with its row, sheet and field; then nothing is written.
    """
    if core.directory is None:
        raise Problem(503, "import-unavailable", "Directory import is not available on this server")
    if kind not in IMPORT_KINDS:
        choices = ", ".join(IMPORT_KINDS)
        raise Problem(
            422,
            "validation",
            "The request is not valid",
            f"kind must be one of {choices}",
            errors=[{"field": "kind", "location": "query", "message": f"one of {choices}"}],
        )
    content = await file.read(MAX_IMPORT_BYTES + 1)
    if len(content) > MAX_IMPORT_BYTES:
        raise Problem(413, "too-large", "The file is too large", f"at most {MAX_IMPORT_BYTES} bytes")
    name = file.filename or "upload"
    if dry_run:
        check = await core.directory.check(kind, name, content, replace=replace)
    else:
        check = await core.directory.apply(kind, name, content, actor=who.actor, replace=replace)
    if check.problems or not check.ok:
        problems = check.problems
        raise Problem(
            422,
            "import-rejected",
            "The file has problems; nothing was written",
            f"{len(problems)} problem(s) in {check.filename}" if problems else "the file has no data rows",
            errors=_problems(problems),
            rows=check.rows,
        )
    return _out(check)
