"""Downloads of a report: the bytes, the media type and a Chinese file name a browser keeps."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from alerting.model.clock import SHANGHAI, utc
from alerting.views.report.export import Format
from alerting.views.report.model import AlertReport

MEDIA_TYPES: dict[str, str] = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "html": "text/html; charset=utf-8",
    "json": "application/json",
}
DOWNLOADS: tuple[Format, ...] = ("csv", "xlsx", "html")


@dataclass(frozen=True)
class Download:
    body: bytes
    media_type: str
    filename: str  # 预警12_红色暴雨_叫应报告_20260701.xlsx
    fallback: str  # alert-12-report.xlsx, for clients that cannot read the Chinese name

    @property
    def disposition(self) -> str:
        return content_disposition(self.filename, self.fallback)


def content_disposition(filename: str, fallback: str, *, inline: bool = False) -> str:
    """The Chinese name per RFC 6266/5987 (filename*), and a plain ASCII one for older clients."""
    kind = "inline" if inline else "attachment"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename)}"


def report_filename(report: AlertReport, ext: str) -> str:
    day = utc(report.created_at).astimezone(SHANGHAI).strftime("%Y%m%d")
    drill = "演练_" if report.exercise else ""
    safe_hazard = "".join(ch for ch in report.hazard if ch not in '/\\:*?"<>|')
    return f"预警{report.alert_id}_{drill}{report.level_label}{safe_hazard}_叫应报告_{day}.{ext}"


def yearly_filename(year: int) -> tuple[str, str]:
    return f"{year}年预警叫应年度汇总.csv", f"review-{year}.csv"
