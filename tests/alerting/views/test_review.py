"""The auditor's review: the filtered alert list, the per-alert report and its files, the yearly summary,
the global audit log and its chain, read through the API and the console as an auditor would."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from openpyxl import load_workbook
from sqlalchemy import insert, select, text
from sqlmodel import col

from alerting.issue.alerts import AlertRequest
from alerting.model.access import AccountRole, Principal
from alerting.model.actor import Actor
from alerting.model.clock import ManualClock
from alerting.model.domain import ChannelKind, Level, Role, UnitKind
from alerting.store.db import Database
from alerting.store.tables import AuditEvent, Delivery, OrgUnit, Person, Responsibility, Target
from alerting.views.review.listing import FilterError, ReviewFilter, list_alerts, parse_filter
from alerting.views.review.yearly import yearly_summary
from alerting.web.core import Core
from tests.alerting.audit.tamper import unguarded
from tests.alerting.web.test_api import AUDITOR, make_core, serve
from tests.conftest import SmallCounty

pytestmark = pytest.mark.both_databases

# 23:50 on 31 December in 巫溪: still 2025 there, and in UTC
START = datetime(2025, 12, 31, 15, 50, tzinfo=UTC)
AUDITOR_ME = Principal(AccountRole.AUDITOR, "user:audit", "审计")
REASON = "东坪村主任在村委会值守，电话核实已收到"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


async def _answer(
    core: Core, alert_id: int, person: str, channel: ChannelKind, after_s: float, issued: datetime
) -> None:
    async with core.db.session() as s:
        delivery = await s.scalar(
            select(col(Delivery.id))
            .where(col(Delivery.alert_id) == alert_id, col(Delivery.person_id) == person)
            .limit(1)
        )
    assert delivery is not None
    await core.acks.answer_delivery(delivery, channel=channel, at=issued + timedelta(seconds=after_s))


async def _target(core: Core, alert_id: int, person: str) -> str:
    async with core.db.session() as s:
        found = await s.scalar(
            select(col(Target.id)).where(col(Target.alert_id) == alert_id, col(Target.person_id) == person)
        )
    assert found is not None
    return found


def request(level: Level, title: str, unit: str, *, exercise: bool = False, hazard: str = "暴雨") -> AlertRequest:
    return AlertRequest(level=level, hazard=hazard, title=title, text="预计强降雨。", units=[unit], exercise=exercise)


class Year:
    """Three alerts around new year in 巫溪, with answers at known times."""

    def __init__(self, old: int, red: int, drill: int) -> None:
        self.old, self.red, self.drill = old, red, drill


@pytest.fixture
async def core(db: Database, clock: ManualClock, county: SmallCounty) -> Core:
    return make_core(db, clock)


@pytest.fixture
async def year(core: Core, clock: ManualClock) -> Year:
    old = await core.alerts.trigger(request(Level.BLUE, "年末蓝色大风", "500238101002", hazard="大风"), actor="t")
    # 40 minutes later it is 00:30 on 1 January in 巫溪, though still 31 December in UTC
    red_at = clock.advance(minutes=40)
    red = await core.alerts.trigger(request(Level.RED, "元旦凌晨红色暴雨", "500238101001"), actor="t")
    await _answer(core, red.alert_id, "g1", ChannelKind.SMS, 30, red_at)
    await _answer(core, red.alert_id, "g2", ChannelKind.VOICE, 180, red_at)
    head = await _target(core, red.alert_id, "v1-head")
    await core.acks.answer_on_behalf(
        red.alert_id, head, by=Actor.officer("tw-duty"), reason=REASON, at=red_at + timedelta(seconds=400)
    )
    drill_at = clock.advance(hours=2)
    drill = await core.alerts.trigger(
        request(Level.YELLOW, "地灾演练", "500238101002", exercise=True, hazard="地质灾害"), actor="t"
    )
    await _answer(core, drill.alert_id, "g3", ChannelKind.WECOM, 120, drill_at)
    return Year(old.alert_id, red.alert_id, drill.alert_id)


@pytest.fixture
async def api(core: Core) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(core) as client:
        yield client


async def test_the_yearly_summary_counts_by_local_year_level_and_drill(db: Database, year: Year) -> None:
    s = await yearly_summary(db, AUDITOR_ME, 2026)
    assert {(r.level, r.real, r.exercise) for r in s.by_level if r.total} == {("red", 1, 0), ("yellow", 0, 1)}
    everything, real, drill = s.loops
    # red: 东坪村 head, two grid workers, a siren and a broadcast zone; three closed at 30 s, 180 s, 400 s
    assert (real.alerts, real.recipients, real.answered, real.answered_for) == (1, 5, 2, 1)
    assert real.answer_rate == pytest.approx(3 / 5) and real.median_answer_s == 180
    # the drill: 西坪村 head and grid worker; one answered at 120 s
    assert (drill.alerts, drill.recipients, drill.closed, drill.median_answer_s) == (1, 2, 1, 120)
    assert (everything.recipients, everything.closed) == (7, 4)
    assert everything.median_answer_s == 150  # the middle of 30, 120, 180, 400
    assert s.drills_held == 1 and [d.alert_id for d in s.drills] == [year.drill]
    assert [(t.name, t.recipients, t.closed) for t in s.townships] == [("凤凰镇", 7, 4)]
    last_year = await yearly_summary(db, AUDITOR_ME, 2025)
    assert [(r.level, r.real) for r in last_year.by_level if r.total] == [("blue", 1)]
    assert last_year.drills_held == 0


async def test_filters_pick_alerts_by_local_date_level_unit_and_drill(db: Database, year: Year) -> None:
    async def ids(**values: str) -> list[int]:
        page = await list_alerts(db, AUDITOR_ME, parse_filter(values))
        return [a.id for a in page.items]

    assert await ids() == [year.drill, year.red, year.old]
    assert await ids(**{"from": "2026-01-01"}) == [year.drill, year.red]
    assert await ids(to="2025-12-31") == [year.old]
    assert await ids(level="red") == [year.red]
    assert await ids(exercise="yes") == [year.drill]
    assert await ids(exercise="no") == [year.red, year.old]
    assert await ids(hazard="大风") == [year.old]
    assert await ids(unit="西坪村") == [year.drill, year.old]
    assert await ids(unit="500238101001") == [year.red]
    assert await ids(unit="凤凰镇", level="yellow") == [year.drill]

    red = (await list_alerts(db, AUDITOR_ME, ReviewFilter(level=Level.RED))).items[0]
    assert (red.recipients, red.answered, red.answered_for, red.silent, red.median_answer_s) == (5, 2, 1, 2, 180)
    assert red.answer_rate == pytest.approx(0.6)
    page = await list_alerts(db, AUDITOR_ME, ReviewFilter(), limit=2, offset=2)
    assert (page.total, [a.id for a in page.items]) == (3, [year.old])

    for values, field in (
        ({"from": "2026-13-01"}, "from"),
        ({"from": "2026-02-01", "to": "2026-01-01"}, "to"),
        ({"level": "purple"}, "level"),
        ({"exercise": "maybe"}, "exercise"),
    ):
        with pytest.raises(FilterError) as bad:
            parse_filter(values)
        assert bad.value.field == field
    for unit in ("坪村", "不存在镇"):  # two villages match; none matches
        with pytest.raises(FilterError) as bad:
            await list_alerts(db, AUDITOR_ME, ReviewFilter(unit=unit))
        assert bad.value.field == "unit"


async def test_the_report_api_gives_insights_and_files_with_chinese_names(api: httpx.AsyncClient, year: Year) -> None:
    r = await api.get(f"/api/v1/alerts/{year.red}/report", headers=AUDITOR)
    assert r.status_code == 200, r.text
    body = r.json()
    found = body["insights"]
    assert {b["label"]: b["count"] for b in found["histogram"] if b["count"]} == {"1分内": 1, "2–5分": 1, "5–10分": 1}
    assert {c["channel"]: c["count"] for c in found["by_channel"]} == {"sms": 1, "voice": 1, "manual": 1}
    assert [(o["name"], o["reason"]) for o in found["on_behalf"]] == [("东坪村主任", REASON)]
    assert sorted(p["name"] for p in found["never_answered"]) == sorted(["500238101001 预警喇叭", "500238101001 广播"])
    assert found["escalation"][0]["reached"] == 5
    assert body["chain"].startswith("审计链校验通过")

    r = await api.get(f"/api/v1/alerts/{year.red}/report", params={"format": "xlsx"}, headers=AUDITOR)
    assert r.status_code == 200
    assert "filename*=UTF-8''%E9%A2%84%E8%AD%A6" in r.headers["content-disposition"]  # 预警…
    book = load_workbook(io.BytesIO(r.content), read_only=True)
    people = list(book["叫应对象"].iter_rows(values_only=True))
    assert people[0][7] == "姓名/设备"
    assert {row[7] for row in people[1:]} >= {"网格员甲", "网格员乙", "东坪村主任"}
    overview = dict(book["概况"].iter_rows(values_only=True))
    assert overview["应叫应"] == 5 and overview["代应答"] == 1

    r = await api.get(f"/api/v1/alerts/{year.red}/report", params={"format": "csv"}, headers=AUDITOR)
    rows = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert len(rows) == 6 and REASON in {row[17] for row in rows}
    r = await api.get(f"/api/v1/alerts/{year.red}/report", params={"format": "html"}, headers=AUDITOR)
    assert "打印/另存为 PDF" in r.text and "<svg" in r.text and "@media print" in r.text

    r = await api.get("/api/v1/alerts/999/report", headers=AUDITOR)
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")


async def test_review_list_and_yearly_over_the_api(api: httpx.AsyncClient, year: Year) -> None:
    r = await api.get("/api/v1/reviews/alerts", params={"level": "red"}, headers=AUDITOR)
    assert [a["id"] for a in r.json()["items"]] == [year.red]
    r = await api.get("/api/v1/reviews/alerts", params={"unit": "坪村"}, headers=AUDITOR)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "unit"
    r = await api.get("/api/v1/reviews/alerts", params={"from": "yesterday"}, headers=AUDITOR)
    assert r.status_code == 422 and "from" in r.json()["detail"]
    r = await api.get("/api/v1/reviews/yearly", params={"year": 2026}, headers=AUDITOR)
    assert r.json()["loops"][0]["recipients"] == 7
    r = await api.get("/api/v1/reviews/yearly", params={"year": 2026, "format": "csv"}, headers=AUDITOR)
    assert "2026" in r.headers["content-disposition"] and "地灾演练" in r.content.decode("utf-8-sig")


async def test_the_audit_log_is_paged_newest_first_and_filtered(api: httpx.AsyncClient, year: Year) -> None:
    r = await api.get("/api/v1/audit", params={"limit": 2}, headers=AUDITOR)
    page = r.json()
    seqs = [e["seq"] for e in page["items"]]
    assert page["total"] > 2 and seqs == sorted(seqs, reverse=True) and len(seqs) == 2
    r_all = await api.get("/api/v1/audit", params={"alert_id": year.red}, headers=AUDITOR)
    assert {e["alert_id"] for e in r_all.json()["items"]} == {year.red}
    on_behalf = [e for e in r_all.json()["items"] if e["data"].get("reason") == REASON]
    assert len(on_behalf) == 1
    r = await api.get("/api/v1/audit", params={"kind": on_behalf[0]["kind"]}, headers=AUDITOR)
    assert [e["seq"] for e in r.json()["items"]] == [on_behalf[0]["seq"]]
    r = await api.get("/api/v1/audit", params={"kind": "alert."}, headers=AUDITOR)
    assert {e["kind"].split(".")[0] for e in r.json()["items"]} == {"alert"}
    r = await api.get("/api/v1/audit/verify", headers=AUDITOR)
    assert r.json()["ok"] is True and r.json()["rows"] == page["total"]


async def _signed_in(core: Core, client: httpx.AsyncClient, role: AccountRole, unit: str | None = None) -> None:
    name = f"u-{role.value}"
    await core.accounts.create(name, "long-password-1", role=role, unit_code=unit, actor="test")
    signed = await core.accounts.sign_in(name, "long-password-1")
    client.cookies.set("jy_session", signed.token)


async def test_an_edited_audit_row_shows_the_chain_broken_at_that_row(
    core: Core, api: httpx.AsyncClient, db: Database, year: Year
) -> None:
    await _signed_in(core, api, AccountRole.AUDITOR)
    page = await api.get(f"/console/review/{year.red}")
    assert page.status_code == 200 and "审计链校验通过" in page.text
    async with unguarded(db) as s:  # the triggers dropped first, as the tables' owner could
        seq = await s.scalar(
            select(col(AuditEvent.seq)).where(col(AuditEvent.alert_id) == year.red).order_by(col(AuditEvent.seq))
        )
        await s.execute(text("UPDATE audit_event SET actor = 'someone-else' WHERE seq = :seq"), {"seq": seq})
    page = await api.get(f"/console/review/{year.red}")
    assert f"审计链校验失败：第 {seq} 条记录内容与哈希不符" in page.text
    r = await api.get("/api/v1/audit/verify", headers=AUDITOR)
    assert (r.json()["ok"], r.json()["first_bad_seq"]) == (False, seq)
    printable = await api.get(f"/console/review/{year.red}/print")
    assert f"第 {seq} 条记录" in printable.text


async def test_console_list_filters_and_downloads(core: Core, api: httpx.AsyncClient, year: Year) -> None:
    await _signed_in(core, api, AccountRole.AUDITOR)
    page = await api.get("/console/review", params={"level": "red"})
    assert page.status_code == 200
    assert "元旦凌晨红色暴雨" in page.text and "地灾演练" not in page.text
    bad = await api.get("/console/review", params={"to": "2026-02-30"})
    assert bad.status_code == 422 and "结束日期" in bad.text
    yearly = await api.get("/console/review/yearly", params={"year": 2026})
    assert "地灾演练" in yearly.text and "60.0%" in yearly.text
    csv_file = await api.get(f"/console/review/{year.red}/report.csv")
    assert csv_file.headers["content-disposition"].startswith("attachment;")
    assert "网格员甲" in csv_file.content.decode("utf-8-sig")


async def test_a_township_officer_reviews_only_their_subtree(
    core: Core, api: httpx.AsyncClient, db: Database, clock: ManualClock, year: Year
) -> None:
    async with db.session() as s:
        await s.execute(
            insert(OrgUnit),
            [
                {
                    "code": "500238102",
                    "name": "宁厂镇",
                    "kind": UnitKind.TOWNSHIP,
                    "parent_code": "500238",
                    "path": "/500238/500238102/",
                },
            ],
        )
        await s.execute(insert(Person), [{"id": "nc-duty", "name": "宁厂值班员", "phone": "+8613900000099"}])
        await s.execute(
            insert(Responsibility),
            [{"unit_code": "500238102", "person_id": "nc-duty", "role": Role.TOWNSHIP_DUTY.value, "rank": 0}],
        )
    elsewhere = await core.alerts.trigger(request(Level.ORANGE, "宁厂镇山洪", "500238102", hazard="山洪"), actor="t")
    county_wide = await core.alerts.trigger(request(Level.ORANGE, "全县山洪", "500238", hazard="山洪"), actor="t")
    fenghuang = Principal(AccountRole.TOWNSHIP, "user:fh", "凤凰镇", "500238101", "/500238/500238101/")
    page = await list_alerts(db, fenghuang, ReviewFilter(hazard="山洪"))
    assert [a.id for a in page.items] == [county_wide.alert_id]
    everyone = await list_alerts(db, AUDITOR_ME, ReviewFilter(hazard="山洪"))
    counted = {a.id: a.recipients for a in everyone.items}
    assert page.items[0].recipients < counted[county_wide.alert_id]

    await _signed_in(core, api, AccountRole.TOWNSHIP, "500238101")
    assert (await api.get(f"/console/review/{elsewhere.alert_id}")).status_code == 404
    report = await api.get(f"/console/review/{county_wide.alert_id}")
    assert report.status_code == 200 and "宁厂值班员" not in report.text
    listing = await api.get("/console/review")
    assert "宁厂镇山洪" not in listing.text and "全县山洪" in listing.text
    summary = await yearly_summary(db, fenghuang, 2026)
    assert [t.name for t in summary.townships] == ["凤凰镇"]
