"""Console pages: the directory (通讯录) of units, people, devices and duty rosters, and its file import.

Everyone signed in reads the directory within their scope; only an admin imports into it (the duty
room reads and calls, it does not edit who answers for what). An import is two steps: the check shows
every bad row and writes nothing; 确认导入 applies exactly the file that was checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from starlette.datastructures import UploadFile

from alerting.model.privacy import sees_whole_numbers
from alerting.people.directory_port import COUNT_LABELS, IMPORT_KINDS, MAX_IMPORT_BYTES, DirectoryImporter, ImportCheck
from alerting.views.directory import (
    devices_page,
    people_page,
    root_code,
    search_units,
    unit_detail,
)
from alerting.views.rosters import rosters
from alerting.web.console.directory_uploads import TTL_SECONDS, pending_uploads
from alerting.web.console.web import PREFIX, Administering, PageError, Seeing, Viewer, redirect, render
from alerting.web.core import Core

router = APIRouter(include_in_schema=False)

BASE = PREFIX + "/directory"
PAGE = 50
_AFTER_IMPORT = {"people": "/people", "devices": "/devices", "roster": "/rosters", "units": "", "directory": ""}


@dataclass(frozen=True)
class Pager:
    total: int
    limit: int
    offset: int
    prev: str | None
    next: str | None

    @property
    def first(self) -> int:
        return self.offset + 1 if self.total else 0

    @property
    def last(self) -> int:
        return min(self.offset + self.limit, self.total)


def pager(request: Request, total: int, offset: int, limit: int = PAGE) -> Pager:
    def at(n: int) -> str:
        url = request.url.include_query_params(offset=n)
        return f"{url.path}?{url.query}"

    prev = at(max(offset - limit, 0)) if offset > 0 else None
    nxt = at(offset + limit) if offset + limit < total else None
    return Pager(total, limit, offset, prev, nxt)


def _core(request: Request) -> Core:
    core: Core = request.app.state.core
    return core


Offset = Annotated[int, Query(ge=0, le=1_000_000)]


@router.get(BASE)
async def units(request: Request, who: Seeing, q: str = "", offset: Offset = 0) -> Response:
    core = _core(request)
    if q.strip():
        found, total = await search_units(core.db, who.principal, q, limit=PAGE, offset=offset)
        return render(
            request, who, "directory", tab="units", q=q, found=found, detail=None, pages=pager(request, total, offset)
        )
    code = await root_code(core.db, who.principal)
    if code is None:
        return render(request, who, "directory", tab="units", q="", found=None, detail=None, pages=None)
    return await _unit_page(request, who, code, offset)


@router.get(BASE + "/units/{code}")
async def unit(request: Request, who: Seeing, code: str, offset: Offset = 0) -> Response:
    return await _unit_page(request, who, code, offset)


async def _unit_page(request: Request, who: Viewer, code: str, offset: int) -> Response:
    detail = await unit_detail(_core(request).db, who.principal, code, limit=PAGE, offset=offset)
    if detail is None:
        raise PageError(404, f"没有代码为 {code} 的单位。")
    pages = pager(request, detail.children_total, offset)
    return render(request, who, "directory", tab="units", q="", found=None, detail=detail, pages=pages)


@router.get(BASE + "/people")
async def people(
    request: Request, who: Seeing, q: str = "", status: str = "", unit: str | None = None, offset: Offset = 0
) -> Response:
    active = {"active": True, "inactive": False}.get(status)
    try:
        rows, total = await people_page(
            _core(request).db, who.principal, q=q, unit=unit or None, active=active, limit=PAGE, offset=offset
        )
    except LookupError as exc:
        raise PageError(404, str(exc)) from None
    return render(
        request,
        who,
        "directory_people",
        tab="people",
        q=q,
        person_status=status,
        unit=unit or "",
        rows=rows,
        masked=not sees_whole_numbers(who.principal),
        pages=pager(request, total, offset),
    )


@router.get(BASE + "/devices")
async def devices(request: Request, who: Seeing, q: str = "", state: str = "", offset: Offset = 0) -> Response:
    online = {"online": True, "offline": False}.get(state)
    rows, total = await devices_page(
        _core(request).db,
        who.principal,
        q=q,
        online=online,
        never_reported=state == "unknown",
        limit=PAGE,
        offset=offset,
    )
    return render(
        request,
        who,
        "directory_devices",
        tab="devices",
        q=q,
        state=state,
        rows=rows,
        pages=pager(request, total, offset),
    )


@router.get(BASE + "/rosters")
async def roster_page(request: Request, who: Seeing, only: str = "", offset: Offset = 0) -> Response:
    core = _core(request)
    now = core.clock.now()
    rows, total = await rosters(
        core.db, who.principal, now=now, only_uncovered=only == "gaps", limit=PAGE, offset=offset
    )
    return render(
        request,
        who,
        "directory_rosters",
        tab="rosters",
        only=only,
        rows=rows,
        now=now,
        masked=not sees_whole_numbers(who.principal),
        pages=pager(request, total, offset),
    )


# ---- import -------------------------------------------------------------------------------------


def _importer(request: Request) -> DirectoryImporter:
    importer = _core(request).directory
    if importer is None:
        raise PageError(404, "这个服务没有开启通讯录导入。")
    return importer


def _admin_page(who: Viewer) -> Viewer:
    if not who.principal.is_admin:
        raise PageError(403, "只有管理员可以导入通讯录；值班员和审计员可以查看。")
    return who


async def _upload_size(request: Request) -> None:
    """Refuse an oversized upload by its declared length before its body is read and spooled."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_IMPORT_BYTES + 64 * 1024:
        raise PageError(413, f"文件太大：最大 {MAX_IMPORT_BYTES // (1024 * 1024)} MB。")


def _import_form(request: Request, who: Viewer, *, kind: str = "people", error: str | None = None) -> Response:
    return render(
        request,
        who,
        "directory_import",
        status=400 if error else 200,
        tab="import",
        kinds=IMPORT_KINDS,
        kind=kind,
        error=error,
        max_mb=MAX_IMPORT_BYTES // (1024 * 1024),
    )


@router.get(BASE + "/import")
async def import_form(request: Request, who: Seeing) -> Response:
    _admin_page(who)
    _importer(request)
    return _import_form(request, who)


def _check_page(request: Request, who: Viewer, check: ImportCheck, token: str | None) -> Response:
    return render(
        request,
        who,
        "directory_import_check",
        status=200 if check.ok else 422,
        tab="import",
        check=check,
        token=token,
        kinds=IMPORT_KINDS,
        count_labels=COUNT_LABELS,
        ttl_minutes=TTL_SECONDS // 60,
    )


@router.post(BASE + "/import/check")
async def import_check(request: Request, _size: Annotated[None, Depends(_upload_size)], who: Administering) -> Response:
    importer = _importer(request)
    form = await request.form()
    kind = str(form.get("kind") or "")
    upload = form.get("file")
    if kind not in IMPORT_KINDS:
        return _import_form(request, who, error="请选择文件内容是什么（人员、单位、设备、名录工作簿或值班表）。")
    if not isinstance(upload, UploadFile) or not upload.filename:
        return _import_form(request, who, kind=kind, error="请选择要上传的文件。")
    content = await upload.read(MAX_IMPORT_BYTES + 1)
    if len(content) > MAX_IMPORT_BYTES:
        return _import_form(request, who, kind=kind, error=f"文件太大：最大 {MAX_IMPORT_BYTES // (1024 * 1024)} MB。")
    replace = form.get("mode") == "replace"  # anything else adds and updates only: replacing is never a default
    check = await importer.check(kind, upload.filename, content, replace=replace)
    held = pending_uploads(request)
    token = held.put(who.principal.actor, kind, check.filename, content, replace=replace) if check.ok else None
    return _check_page(request, who, check, token)


@router.post(BASE + "/import/apply")
async def import_apply(request: Request, who: Administering) -> Response:
    importer = _importer(request)
    form = await request.form()
    token = str(form.get("token") or "")
    pending = pending_uploads(request).take(token, who.principal.actor)
    if pending is None:
        return _import_form(
            request,
            who,
            error=f"这份上传已导入、已过期（保留 {TTL_SECONDS // 60} 分钟）或不是你上传的，请重新上传并检查。",
        )
    result = await importer.apply(
        pending.kind, pending.filename, pending.content, actor=who.principal.actor, replace=pending.replace
    )
    if not result.applied:
        # the directory changed since the check: show what is wrong now; this file cannot be applied as it is
        return _check_page(request, who, result, None)
    done = "，".join(f"{COUNT_LABELS.get(k, k)} {v}" for k, v in result.counts.items() if v)
    removed = f" 已移除：{'；'.join(result.removals)}。" if result.removals else ""
    notice = f"已导入 {result.filename}：{done or '没有变化'}。{removed}"
    return redirect(BASE + _AFTER_IMPORT.get(pending.kind, ""), notice)
