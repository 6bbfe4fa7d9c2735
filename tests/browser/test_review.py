"""The auditor after the event, in a real browser: filter the alert list, read one alert's report with its
charts and audit chain, download it as CSV and XLSX, and save the printable report as a PDF."""

from __future__ import annotations

import csv
import io
import re
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
from openpyxl import load_workbook
from playwright.sync_api import Page, expect

from tests.browser.served import Served
from tests.browser.shots import ARTIFACTS, screenshot


def issue_drill(served: Served, title: str) -> int:
    r = httpx.post(
        served.url + "/api/v1/alerts",
        headers={"X-API-Key": "browser-duty-key"},
        json={
            "level": "blue",
            "hazard": "地质灾害",
            "title": title,
            "text": "演练：凤凰镇地质灾害隐患点巡查，请网格员回复收到。",
            "units": ["500238101"],
            "exercise": True,
        },
        timeout=30,
    )
    assert r.status_code == 201, r.text
    alert_id: int = r.json()["id"]
    return alert_id


def test_an_auditor_reviews_an_alert_and_exports_its_report(sign_in: Callable[[str], Page], served: Served) -> None:
    title = f"复盘演练 {uuid.uuid4().hex[:6]}"
    alert_id = issue_drill(served, title)
    recipients = httpx.get(
        f"{served.url}/api/v1/alerts/{alert_id}/recipients",
        params={"limit": 1},
        headers={"X-API-Key": "browser-audit-key"},
        timeout=10,
    ).json()["total"]
    assert recipients > 0

    page = sign_in("auditor")
    nav = page.get_by_role("navigation")
    expect(nav.get_by_role("link", name="审计复盘")).to_be_visible()
    expect(nav.get_by_role("link", name="发布预警")).to_have_count(0)
    nav.get_by_role("link", name="审计复盘").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("审计复盘")

    page.get_by_label("级别").select_option("blue")
    page.get_by_role("button", name="筛选").click()
    expect(page).to_have_url(re.compile(r"/console/review\?.*level=blue"))
    table = page.get_by_test_id("review-table")
    row = table.locator(f"tr[data-alert='{alert_id}']")
    expect(row).to_contain_text(title)
    expect(row).to_contain_text("演练")
    levels = table.locator("tbody .level").all_inner_texts()
    assert levels and set(levels) == {"蓝色"}
    screenshot(page, "review-list")

    row.get_by_role("link", name=title).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(title)
    expect(page.get_by_test_id("chain")).to_contain_text("审计链校验通过")
    expect(page.get_by_test_id("closed")).to_have_text(f"0 / {recipients}")
    expect(page.get_by_test_id("chart-answer-time").locator("svg rect.bar")).to_have_count(8)
    expect(page.get_by_test_id("never-answered").locator("tbody tr")).to_have_count(recipients)
    screenshot(page, "review-report")

    with page.expect_download() as got:
        page.get_by_role("link", name="CSV（Excel）").click()
    download = got.value
    assert download.suggested_filename.startswith(f"预警{alert_id}_演练_蓝色地质灾害_叫应报告_")
    assert download.suggested_filename.endswith(".csv")
    rows = list(csv.reader(io.StringIO(Path(download.path()).read_text(encoding="utf-8-sig"))))
    assert rows[0][:3] == ["序号", "乡镇/街道", "村/社区"]
    assert len(rows) == recipients + 1
    assert {r[1] for r in rows[1:]} == {"凤凰镇"}

    with page.expect_download() as got:
        page.get_by_role("link", name="XLSX 工作簿").click()
    assert got.value.suggested_filename.endswith(".xlsx")
    book = load_workbook(io.BytesIO(Path(got.value.path()).read_bytes()), read_only=True)
    assert book.sheetnames == ["概况", "叫应对象", "分乡镇", "仍未应答", "发送失败"]
    overview = dict(book["概况"].iter_rows(values_only=True))
    assert overview["标题"] == title and overview["应叫应"] == recipients
    people = list(book["叫应对象"].iter_rows(values_only=True))
    assert len(people) == recipients + 1
    assert [p[7] for p in people[1:]] == [r[7] for r in rows[1:]]  # the same people as the CSV, in order

    with page.context.expect_page() as opened:
        page.get_by_role("link", name="打印/另存为 PDF").click()
    printable = opened.value
    printable.wait_for_load_state()
    expect(printable.get_by_test_id("print-hint")).to_contain_text("另存为 PDF")
    expect(printable.locator("h1")).to_contain_text("叫应情况报告")
    expect(printable.get_by_text("审计链校验通过")).to_be_visible()
    printable.emulate_media(media="print")
    expect(printable.get_by_test_id("print-hint")).to_be_hidden()
    pdf = ARTIFACTS / "report.pdf"
    pdf.parent.mkdir(parents=True, exist_ok=True)
    printable.pdf(path=str(pdf), format="A4", landscape=True, print_background=True)
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 10_000


def test_the_yearly_summary_counts_the_drill_and_exports_csv(sign_in: Callable[[str], Page], served: Served) -> None:
    title = f"年度演练 {uuid.uuid4().hex[:6]}"
    issue_drill(served, title)
    page = sign_in("auditor")
    page.goto("/console/review")
    page.get_by_role("link", name="年度汇总").click()
    expect(page.get_by_test_id("drills")).to_contain_text(title)
    held = int(page.get_by_test_id("drills-held").inner_text().split()[0])
    assert held >= 1
    with page.expect_download() as got:
        page.get_by_role("link", name="导出 CSV").click()
    assert got.value.suggested_filename.endswith("年预警叫应年度汇总.csv")
    assert title in Path(got.value.path()).read_text(encoding="utf-8-sig")
