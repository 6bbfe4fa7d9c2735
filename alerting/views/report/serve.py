"""A viewed report as the API and the console hand it out: a page of its recipients, CSV as a stream of rows,
the workbook and the standalone HTML whole (openpyxl and the template need the whole report)."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Iterator
from typing import Literal

from alerting.views.report.cache import Viewed

# render_csv's header and row guard, so the streamed CSV and the exported file cannot drift apart
from alerting.views.report.export import BOM, CSV_HEADERS, csv_row, recipient_values, render
from alerting.views.report.files import MEDIA_TYPES, Download, report_filename
from alerting.views.report.model import AlertReport

CSV_CHUNK = 200  # recipients a piece: a county's CSV leaves in about ten pieces instead of one 2 MB string


def recipients_page(report: AlertReport, *, offset: int, limit: int) -> AlertReport:
    """The report with only `limit` of its recipients from `offset`, in the report's order (silent first)."""
    return report.model_copy(update={"recipients": report.recipients[offset : offset + limit]})


def csv_stream(report: AlertReport, chunk: int = CSV_CHUNK) -> Iterator[bytes]:
    """render_csv's file, `chunk` recipients at a time. Synchronous: Starlette pulls it in a worker thread."""
    out = io.StringIO()
    writer = csv.writer(out)
    out.write(BOM)
    writer.writerow(CSV_HEADERS)
    for start in range(0, len(report.recipients), chunk):
        part = recipients_page(report, offset=start, limit=chunk)
        for row in recipient_values(part):
            row[0] = start + int(row[0])  # 序号 runs on across the pieces
            writer.writerow(csv_row(row))
        yield out.getvalue().encode("utf-8")
        out.seek(0)
        out.truncate()
    if out.tell():  # no recipients: the header alone
        yield out.getvalue().encode("utf-8")


def csv_filename(report: AlertReport) -> tuple[str, str]:
    return report_filename(report, "csv"), f"alert-{report.alert_id}-report.csv"


async def file_download(viewed: Viewed, fmt: Literal["xlsx", "html"]) -> Download:
    """The workbook or the standalone HTML of this view, with the charts drawn when the report was built."""
    report = viewed.report
    body = await asyncio.to_thread(render, report, fmt, viewed.charts)  # seconds of CPU for a county
    return Download(
        body=body,
        media_type=MEDIA_TYPES[fmt],
        filename=report_filename(report, fmt),
        fallback=f"alert-{report.alert_id}-report.{fmt}",
    )
