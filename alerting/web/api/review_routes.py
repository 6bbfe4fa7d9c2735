"""JSON API for the auditor: the filtered alert list, per-alert reports (JSON or CSV/XLSX/HTML files),
the yearly summary, and the global audit log with its chain status. Any key may read; a township key
sees only its own subtree."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel

from alerting.model.access import check_alert
from alerting.model.clock import SHANGHAI
from alerting.model.domain import Level
from alerting.views.audit_log import AuditItem, ChainStatus, audit_csv, audit_page, chain_status
from alerting.views.report.files import MEDIA_TYPES, content_disposition, yearly_filename
from alerting.views.report.model import AlertReport
from alerting.views.report.serve import csv_filename, csv_stream, file_download, recipients_page
from alerting.views.review.insights import Insights
from alerting.views.review.listing import FilterError, ReviewFilter, ReviewPage, list_alerts
from alerting.views.review.yearly import YearlySummary, render_yearly_csv, yearly_summary
from alerting.web.api.auth import CoreDep, Reader
from alerting.web.api.numbers import ROW_NUMBER_MAX, AlertFilter, AlertId, Offset
from alerting.web.api.problems import Problem, documented
from alerting.web.api.schemas import Page
from alerting.web.reports import reports
from alerting.web.shedding import heavy_read

router = APIRouter(tags=["reviews"], responses=documented(401, 403, 422, 503), dependencies=[Depends(heavy_read)])

Limit = Annotated[int, Query(ge=1, le=500)]
RECIPIENT_PAGE = 200  # a county-wide report with every recipient is over 5 MB of JSON


class ReviewedReport(BaseModel):
    report: AlertReport  # its `recipients` are one page of them: recipient_limit from recipient_offset
    insights: Insights  # over every recipient, not only the page
    chain: str  # the audit chain's state in words
    recipients_total: int
    recipient_offset: int
    recipient_limit: int


def _filter_problem(exc: FilterError) -> Problem:
    return Problem(
        422,
        "invalid-filter",
        "The filter is not valid",
        exc.message,
        errors=[{"field": exc.field, "location": "query", "message": exc.message}],
    )


@router.get("/api/v1/reviews/alerts", response_model=ReviewPage)
async def review_alerts(
    core: CoreDep,
    who: Reader,
    date_from: Annotated[date | None, Query(alias="from", description="first day, Asia/Shanghai")] = None,
    date_to: Annotated[date | None, Query(alias="to", description="last day (included), Asia/Shanghai")] = None,
    level: Level | None = None,
    hazard: Annotated[str | None, Query(max_length=32)] = None,
    unit: Annotated[
        str | None, Query(max_length=100, description="unit code or name: alerts reaching its subtree")
    ] = None,
    exercise: Annotated[bool | None, Query(description="true: drills only; false: real warnings only")] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> ReviewPage:
    """Every alert, whatever its status, newest first, with recipients, answer rate, median answer time and
    how many never answered. A township key's numbers count only its subtree."""
    try:
        f = ReviewFilter(date_from, date_to, level, hazard or None, unit or None, exercise).check()
        return await list_alerts(core.db, who, f, limit=limit, offset=offset)
    except FilterError as exc:
        raise _filter_problem(exc) from exc


def _no_alert(alert_id: int) -> Problem:
    """Missing, or outside the key's subtree: the same answer, so there is nothing to learn from it."""
    return Problem(404, "alert-not-found", "No such alert", f"there is no alert {alert_id}")


@router.get(
    "/api/v1/alerts/{alert_id}/report",
    response_model=ReviewedReport,
    responses={
        **documented(404),
        200: {
            "content": {
                "text/csv": {},
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": {},
                "text/html": {},
            },
            "description": "JSON, or the report as a file with ?format=csv|xlsx|html",
        },
    },
)
async def alert_report(
    request: Request,
    alert_id: AlertId,
    core: CoreDep,
    who: Reader,
    format: Literal["json", "csv", "xlsx", "html"] = "json",
    recipient_limit: Annotated[int, Query(ge=1, le=500, description="recipients in this page (JSON only)")] = (
        RECIPIENT_PAGE
    ),
    recipient_offset: Annotated[int, Query(ge=0, le=ROW_NUMBER_MAX, description="recipients to skip (JSON only)")] = 0,
) -> ReviewedReport | Response:
    """The audit report of one alert: every recipient with what was tried and when they answered, the answer
    time distribution, answers by channel, failures by provider error, escalation reached per step, who was
    never reached or never answered, answers on behalf, and the audit chain status.

    The JSON carries the summary with one page of recipients (silent first, then by place) and
    `recipients_total`; page on with `recipient_offset`. The pages of one report have the same
    `report.audit.position`: if it differs, the alert changed in between. CSV, XLSX and HTML hold every
    recipient. The report is built once per change of the alert and shared by every view of it; the
    audit chain is checked on every view."""
    if format == "csv":  # the rows alone: no chain walk, nothing of the view's own
        built = await reports(request).built(who, alert_id, now=core.clock.now())
        if built is None:
            raise _no_alert(alert_id)
        name, fallback = csv_filename(built.report)
        return StreamingResponse(
            csv_stream(built.report),
            media_type=MEDIA_TYPES["csv"],
            headers={"Content-Disposition": content_disposition(name, fallback)},
        )
    viewed = await reports(request).view(who, alert_id, now=core.clock.now())
    if viewed is None:
        raise _no_alert(alert_id)
    if format == "json":
        report = viewed.report
        return ReviewedReport(
            report=recipients_page(report, offset=recipient_offset, limit=recipient_limit),
            insights=viewed.insights,
            chain=viewed.chain,
            recipients_total=len(report.recipients),
            recipient_offset=recipient_offset,
            recipient_limit=recipient_limit,
        )
    file = await file_download(viewed, format)
    return Response(file.body, media_type=file.media_type, headers={"Content-Disposition": file.disposition})


@router.get(
    "/api/v1/reviews/yearly",
    response_model=YearlySummary,
    responses={200: {"content": {"text/csv": {}}, "description": "JSON, or CSV with ?format=csv"}},
)
async def yearly(
    core: CoreDep,
    who: Reader,
    year: Annotated[int | None, Query(ge=2000, le=2100, description="calendar year, Asia/Shanghai")] = None,
    format: Literal["json", "csv"] = "json",
) -> YearlySummary | Response:
    """Alerts by level (real and drills apart), answer rates, median answer times, drills held, and each
    township's answer rate. A superseded version of an updated alert is not counted again."""
    the_year = year or core.clock.now().astimezone(SHANGHAI).year
    summary = await yearly_summary(core.db, who, the_year)
    if format == "csv":
        name, fallback = yearly_filename(the_year)
        return Response(
            render_yearly_csv(summary).encode("utf-8"),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": content_disposition(name, fallback)},
        )
    return summary


@router.get("/api/v1/audit", response_model=Page[AuditItem])
async def audit_log(
    core: CoreDep,
    who: Reader,
    kind: Annotated[str | None, Query(max_length=48, description='e.g. alert.cancelled; "alert." for a prefix')] = None,
    alert_id: AlertFilter = None,
    actor: Annotated[str | None, Query(max_length=100, description="e.g. user:duty")] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[AuditItem]:
    """The hash-chained audit log, newest first: every sign-in, issue, cancel, update, answer on behalf,
    import and account change. A township key reads only the events of alerts reaching its subtree."""
    items, total = await audit_page(core.db, who, kind=kind, alert_id=alert_id, actor=actor, limit=limit, offset=offset)
    return Page[AuditItem](items=items, total=total, limit=limit, offset=offset)


@router.get(
    "/api/v1/alerts/{alert_id}/audit",
    response_model=Page[AuditItem],
    responses={200: {"content": {"text/csv": {}}}, **documented(404)},
)
async def alert_audit(
    core: CoreDep,
    who: Reader,
    alert_id: AlertId,
    format: Literal["json", "csv"] = "json",
    limit: Annotated[int, Query(ge=1, le=100_000)] = 1000,
    offset: Offset = 0,
) -> Page[AuditItem] | Response:
    """One alert's audit trail, oldest first: what was decided, sent, answered and by whom. CSV for a spreadsheet."""
    async with core.db.session() as s:
        if not await check_alert(s, who, alert_id):
            raise Problem(404, "alert-not-found", "No such alert", f"there is no alert {alert_id}")
    items, total = await audit_page(core.db, who, alert_id=alert_id, limit=limit, offset=offset, oldest_first=True)
    if not items and offset == 0:
        raise Problem(404, "alert-not-found", "No such alert", f"there is no alert {alert_id}")
    if format == "csv":
        name = f"预警{alert_id}_审计记录.csv"
        return Response(
            audit_csv(items).encode("utf-8-sig"),  # the BOM lets Excel read the Chinese as UTF-8
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": content_disposition(name, f"alert-{alert_id}-audit.csv")},
        )
    return Page[AuditItem](items=items, total=total, limit=limit, offset=offset)


@router.get("/api/v1/audit/verify", response_model=ChainStatus)
async def audit_verify(core: CoreDep, _who: Reader) -> ChainStatus:
    """Walk the whole chain and say whether it is intact, or the first row that no longer fits."""
    return await chain_status(core.db)
