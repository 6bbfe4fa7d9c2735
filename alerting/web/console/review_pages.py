"""Console pages for the auditor (审计复盘): the filtered list of every alert, one alert's report with
charts and the audit chain status, its downloads, and the yearly summary. Read-only for every role."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse

from alerting.model.clock import SHANGHAI
from alerting.views.report.cache import Viewed
from alerting.views.report.export import channels_text, duration, escalation_text
from alerting.views.report.files import DOWNLOADS, MEDIA_TYPES, content_disposition, yearly_filename
from alerting.views.report.serve import csv_filename, csv_stream, file_download
from alerting.views.review.listing import EXERCISE_CHOICES, FilterError, hazards, list_alerts, parse_filter
from alerting.views.review.yearly import percent, render_yearly_csv, yearly_summary
from alerting.web.console.web import HEADERS, PREFIX, AlertNumber, PageError, Seeing, render
from alerting.web.reports import reports
from alerting.web.shedding import heavy_read

router = APIRouter(include_in_schema=False, dependencies=[Depends(heavy_read)])

PER_PAGE = 50
FILTER_FIELDS = ("from", "to", "level", "hazard", "unit", "exercise")
# the printable report carries only inline styles; nothing in it may run or load
PRINT_HEADERS = {
    **HEADERS,
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'",
}
HELPERS: dict[str, Any] = {
    "duration": duration,
    "percent": percent,
    "channels_text": channels_text,
    "escalation_text": escalation_text,
}


@router.get(PREFIX + "/review")
async def review_list(request: Request, who: Seeing, page: Annotated[int, Query(ge=1, le=100_000)] = 1) -> Response:
    raw = {k: request.query_params.get(k) for k in FILTER_FIELDS}
    core = request.app.state.core
    error: FilterError | None = None
    try:
        f = parse_filter(raw)
        found = await list_alerts(core.db, who.principal, f, limit=PER_PAGE, offset=(page - 1) * PER_PAGE)
    except FilterError as exc:
        error, found = exc, None
    kept = {k: v for k, v in raw.items() if v}
    pages = max(1, -(-found.total // PER_PAGE)) if found else 1
    return render(
        request,
        who,
        "review_list",
        status=422 if error else 200,
        found=found,
        error=error,
        values=raw,
        exercise_choices=list(EXERCISE_CHOICES),
        hazards=await hazards(core.db, who.principal),
        page=page,
        pages=pages,
        page_url=lambda n: PREFIX + "/review?" + urlencode({**kept, "page": n}),
        **HELPERS,
    )


@router.get(PREFIX + "/review/yearly")
async def review_yearly(
    request: Request, who: Seeing, year: Annotated[int | None, Query(ge=2000, le=2100)] = None
) -> Response:
    core = request.app.state.core
    the_year = year or core.clock.now().astimezone(SHANGHAI).year
    summary = await yearly_summary(core.db, who.principal, the_year)
    return render(request, who, "review_yearly", s=summary, **HELPERS)


@router.get(PREFIX + "/review/yearly.csv")
async def review_yearly_csv(
    request: Request, who: Seeing, year: Annotated[int | None, Query(ge=2000, le=2100)] = None
) -> Response:
    core = request.app.state.core
    the_year = year or core.clock.now().astimezone(SHANGHAI).year
    summary = await yearly_summary(core.db, who.principal, the_year)
    name, fallback = yearly_filename(the_year)
    return Response(
        render_yearly_csv(summary).encode("utf-8"),
        media_type="text/csv; charset=utf-8",
        headers={**HEADERS, "Content-Disposition": content_disposition(name, fallback)},
    )


async def _report(request: Request, who: Seeing, alert_id: int) -> Viewed:
    """From the app's report cache (views.report.cache): built once per change of the alert, checked per view."""
    viewed = await reports(request).view(who.principal, alert_id, now=request.app.state.core.clock.now())
    if viewed is None:
        # the same answer whether it does not exist or lies outside the officer's subtree
        raise PageError(404, f"找不到预警 {alert_id}，或它不涉及本辖区。")
    return viewed


@router.get(PREFIX + "/review/{alert_id:alert}")
async def review_report(request: Request, who: Seeing, alert_id: AlertNumber) -> Response:
    viewed = await _report(request, who, alert_id)
    return render(
        request,
        who,
        "review_report",
        r=viewed.report,
        s=viewed.report.summary,
        found=viewed.insights,
        charts=viewed.charts,
        chain=viewed.chain,
        downloads=DOWNLOADS,
        **HELPERS,
    )


@router.get(PREFIX + "/review/{alert_id:alert}/print")
async def review_print(request: Request, who: Seeing, alert_id: AlertNumber) -> Response:
    """The standalone report, opened in the browser to print or save as PDF."""
    file = await file_download(await _report(request, who, alert_id), "html")
    disposition = content_disposition(file.filename, file.fallback, inline=True)
    return Response(
        file.body, media_type=file.media_type, headers={**PRINT_HEADERS, "Content-Disposition": disposition}
    )


@router.get(PREFIX + "/review/{alert_id:alert}/report.{fmt}")
async def review_download(
    request: Request, who: Seeing, alert_id: AlertNumber, fmt: Literal["csv", "xlsx", "html"]
) -> Response:
    if fmt == "csv":  # the rows alone: no chain walk, nothing of the view's own
        built = await reports(request).built(who.principal, alert_id, now=request.app.state.core.clock.now())
        if built is None:
            raise PageError(404, f"找不到预警 {alert_id}，或它不涉及本辖区。")
        name, fallback = csv_filename(built.report)
        return StreamingResponse(
            csv_stream(built.report),
            media_type=MEDIA_TYPES["csv"],
            headers={**HEADERS, "Content-Disposition": content_disposition(name, fallback)},
        )
    file = await file_download(await _report(request, who, alert_id), fmt)
    headers = PRINT_HEADERS if fmt == "html" else HEADERS
    return Response(file.body, media_type=file.media_type, headers={**headers, "Content-Disposition": file.disposition})
