"""The dry run before issuing: its numbers are what issuing then creates, and it writes nothing."""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update
from sqlmodel import col

from alerting.issue.alerts import AlertRequest
from alerting.model.clock import ManualClock
from alerting.model.domain import Level, TargetKind
from alerting.store.db import Database
from alerting.store.tables import Alert, AuditEvent, Deadline, Delivery, Person, Target
from alerting.views.preview import preview
from alerting.web.core import Core
from tests.alerting.web.test_api import DUTY, assert_problem, make_core, serve
from tests.conftest import SmallCounty

pytestmark = pytest.mark.both_databases

TOWN = {"X-API-Key": "k-town-0004"}  # a township key bound to 东坪村 (500238101001)
AUDITOR = {"X-API-Key": "k-aud-0002"}


@pytest.fixture
async def core(db: Database, clock: ManualClock, county: SmallCounty) -> Core:
    c = make_core(db, clock)
    c.api_keys["k-town-0004"] = "township:500238101001"
    return c


@pytest.fixture
async def api(core: Core) -> Any:
    async with serve(core) as client:
        yield client


def request(level: Level, units: list[str], hazard: str = "暴雨") -> AlertRequest:
    return AlertRequest(level=level, hazard=hazard, title="测试预警", text="预计强降雨。", units=units)


async def _written(db: Database) -> dict[str, int]:
    async with db.session() as s:
        return {
            t.__name__: int(await s.scalar(select(func.count()).select_from(t)) or 0)
            for t in (Alert, Target, Delivery, Deadline, AuditEvent)
        }


async def _issued_counts(db: Database, alert_id: int) -> dict[str, Any]:
    async with db.session() as s:
        kinds = Counter(
            (await s.execute(select(col(Target.kind)).where(col(Target.alert_id) == alert_id))).scalars().all()
        )
        channels = Counter(
            (await s.execute(select(col(Delivery.channel)).where(col(Delivery.alert_id) == alert_id))).scalars().all()
        )
        tasks = await s.scalar(
            select(func.count())
            .select_from(Delivery)
            .where(col(Delivery.alert_id) == alert_id, col(Delivery.purpose) == "task")
        )
        unreachable = await s.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(col(AuditEvent.alert_id) == alert_id, col(AuditEvent.kind) == "target.unreachable")
        )
    return {
        "people": kinds[TargetKind.PERSON.value],
        "devices": kinds[TargetKind.DEVICE.value],
        "by_channel": dict(channels),
        "tasks": int(tasks or 0),
        "unreachable": int(unreachable or 0),
    }


@pytest.mark.parametrize(
    ("level", "units", "hazard"),
    [
        (Level.RED, ["500238101"], "暴雨"),
        (Level.ORANGE, ["500238101"], "山洪"),  # the hazard plan adds sirens at orange
        (Level.ORANGE, ["500238101"], "高温"),  # and without it there are none
        (Level.YELLOW, ["500238101001", "500238101002"], "暴雨"),
        (Level.BLUE, ["500238"], "大风"),  # WeCom, SMS for whoever has no WeCom
    ],
)
async def test_the_preview_counts_what_issuing_then_creates(
    core: Core, db: Database, level: Level, units: list[str], hazard: str
) -> None:
    async with db.session() as s:  # somebody nobody can reach, so the preview has one to name
        await s.execute(update(Person).where(col(Person.id) == "g3").values(phone=None, wecom_userid=None))
    req = request(level, units, hazard)
    before = await _written(db)
    seen = await preview(db, core.clock, core.alerts.planner, req)
    assert await _written(db) == before, "a preview must write nothing"

    issued = await core.alerts.trigger(req, actor="test")
    real = await _issued_counts(db, issued.alert_id)
    assert seen.people == real["people"]
    assert seen.devices == real["devices"]
    assert seen.tasks == real["tasks"]
    assert {c.channel: c.deliveries for c in seen.by_channel} == real["by_channel"] == issued.by_channel
    assert seen.deliveries == issued.deliveries
    assert seen.unreachable_total == real["unreachable"] == issued.unreachable
    assert sum(t.people for t in seen.townships) == seen.people
    assert sum(t.deliveries for t in seen.townships) == seen.deliveries


async def test_the_preview_names_the_unreachable_and_splits_by_township(core: Core, db: Database) -> None:
    async with db.session() as s:
        await s.execute(update(Person).where(col(Person.id) == "g3").values(phone=None, wecom_userid=None))
    seen = await preview(db, core.clock, core.alerts.planner, request(Level.RED, ["500238"]))
    assert [(u.name, u.unit_code, u.role_label) for u in seen.unreachable] == [("网格员丙", "50023810100201", "网格员")]
    rows = {t.name: (t.people, t.devices, t.unreachable) for t in seen.townships}
    # the county duty room answers for the county itself; everyone else is in 凤凰镇
    assert rows == {"县级": (1, 0, 0), "凤凰镇": (6, 4, 1)}
    assert seen.unit_names == ["巫溪县"]


async def test_the_preview_shows_the_first_steps_of_the_plan(core: Core, db: Database) -> None:
    seen = await preview(db, core.clock, core.alerts.planner, request(Level.RED, ["500238101"]))
    people = [s for s in seen.plan if s.applies_to == "人员"]
    assert [(s.step, s.who, s.starts_after_s) for s in people] == [
        (0, "本人", 0),
        (1, "本人", 300),
        (2, "备岗人员", 600),
        (3, "上级责任人", 900),
    ]
    assert people[0].channels == ["智能外呼", "短信", "企业微信"]
    assert seen.plan_steps_more == 2  # township duty and the county duty room come after
    devices = [s for s in seen.plan if s.applies_to == "设备"]
    assert devices[0].who == "设备本身"
    assert devices[-1].task == "鸣锣吹哨"
    assert seen.window_s == 300


async def test_the_api_preview_matches_and_is_not_taken_for_an_alert_id(api: httpx.AsyncClient, db: Database) -> None:
    body = {"level": "red", "hazard": "山洪", "title": "山洪", "text": "山洪", "units": ["500238101"]}
    r = await api.post("/api/v1/alerts/preview", json=body, headers=DUTY)
    assert r.status_code == 200, r.text
    seen = r.json()
    assert await _written(db) == {"Alert": 0, "Target": 0, "Delivery": 0, "Deadline": 0, "AuditEvent": 0}
    issued = (await api.post("/api/v1/alerts", json=body, headers=DUTY)).json()
    assert {c["channel"]: c["deliveries"] for c in seen["by_channel"]} == issued["by_channel"]
    assert seen["people"] + seen["devices"] == issued["targets"]


async def test_the_api_preview_names_unknown_units_and_refuses_outside_scope(api: httpx.AsyncClient) -> None:
    body = {"level": "blue", "hazard": "大风", "title": "t", "text": "x", "units": ["500238101", "999999"]}
    problem = assert_problem(await api.post("/api/v1/alerts/preview", json=body, headers=DUTY), 422)
    assert [e["field"] for e in problem["errors"]] == ["units.1"]
    assert problem["unknown_units"] == ["999999"]

    inside = body | {"units": ["50023810100101"]}
    assert (await api.post("/api/v1/alerts/preview", json=inside, headers=TOWN)).status_code == 200
    outside = body | {"units": ["500238101002"]}
    problem = assert_problem(await api.post("/api/v1/alerts/preview", json=outside, headers=TOWN), 403)
    assert problem["outside_units"] == ["500238101002"]
    assert_problem(await api.post("/api/v1/alerts/preview", json=inside, headers=AUDITOR), 403)


async def test_units_are_found_by_name_or_code_within_scope(api: httpx.AsyncClient) -> None:
    r = await api.get("/api/v1/units", params={"q": "坪村"}, headers=DUTY)
    assert r.status_code == 200
    page = r.json()
    assert [(u["name"], u["trail"]) for u in page["items"]] == [
        ("东坪村", "巫溪县 › 凤凰镇"),
        ("西坪村", "巫溪县 › 凤凰镇"),
    ]
    by_code = (await api.get("/api/v1/units", params={"q": "5002381010"}, headers=DUTY)).json()
    assert by_code["total"] == 5  # both villages and the three grids
    paged = (await api.get("/api/v1/units", params={"q": "5002381010", "limit": 2, "offset": 2}, headers=DUTY)).json()
    assert [u["code"] for u in paged["items"]] == [u["code"] for u in by_code["items"][2:4]]
    children = (await api.get("/api/v1/units", params={"parent": "500238101"}, headers=AUDITOR)).json()
    assert [u["code"] for u in children["items"]] == ["500238101001", "500238101002"]

    mine = (await api.get("/api/v1/units", params={"q": "坪村"}, headers=TOWN)).json()
    assert [u["code"] for u in mine["items"]] == ["500238101001"]  # 西坪村 lies outside the key's village
    assert (await api.get("/api/v1/units", params={"q": "凤凰"}, headers=TOWN)).json()["total"] == 0


async def test_warning_texts_are_offered_per_hazard_and_level(api: httpx.AsyncClient) -> None:
    everything = (await api.get("/api/v1/warning-texts", headers=AUDITOR)).json()
    assert {(t["hazard"], t["level"]) for t in everything} >= {("暴雨", "red"), ("山洪", "blue"), ("冰雪", "yellow")}
    one = (await api.get("/api/v1/warning-texts", params={"hazard": "山洪", "level": "red"}, headers=DUTY)).json()
    assert len(one) == 1
    assert one[0]["title"] == "{area}山洪红色预警"
    assert "{area}" in one[0]["text"]


async def test_the_api_documents_units_texts_and_preview(api: httpx.AsyncClient) -> None:
    paths = (await api.get("/openapi.json")).json()["paths"]
    assert "get" in paths["/api/v1/units"]
    assert "get" in paths["/api/v1/warning-texts"]
    assert "post" in paths["/api/v1/alerts/preview"]
